"""The alert rules and the Grafana dashboard shipped in deploy/: Prometheus' own
checker accepts the rules, and every metric either names exists on /metrics of a
running host (programs, status server, janitor)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.support import REPO
from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.stack import Stack

RULES = REPO / "deploy" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"
METRIC = re.compile(r"\bimage_server_[a-z_]+")


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make test` installs Debian's prometheus")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout


def test_every_alert_says_what_to_do() -> None:
    rules = RULES.read_text().split("- alert: ")[1:]
    assert len(rules) == 11
    for rule in rules:
        assert "\n          runbook: " in rule, rule.splitlines()[0]


def test_every_dashboard_panel_can_be_narrowed_to_a_host() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert "instance" in [variable["name"] for variable in dashboard["templating"]["list"]]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            uses = re.findall(r"\bimage_server_[a-z_]+(\{[^}]*\})?", target["expr"])
            assert uses and all('instance=~"$instance"' in braces for braces in uses), target


def named_metrics() -> set[str]:
    """Every metric the rules' and the dashboard's expressions name."""
    expressions = [RULES.read_text()]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        expressions += [target["expr"] for target in panel["targets"]]
    return {name for text in expressions for name in METRIC.findall(text)}


def test_every_metric_the_rules_and_the_dashboard_name_is_exported(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack().start(processors=1, uploader=True, status=True)
    stack.spawn("janitor", "ops.janitor")
    origin.add("alerts/img/1/original.jpg", photo())
    assert stack.get("/alerts/img/1/w100.jpg").status == 200  # a miss, a download, an upload
    assert stack.get("/alerts/img/1/w100.jpg").status == 200  # a hit
    assert stack.get("/alerts/img/404/w100.jpg").status == 404  # a failed download
    names = named_metrics()
    assert len(names) >= 20

    def missing() -> set[str]:
        exported = {name for name, _labels in stack.metrics()}
        return names - exported

    deadline = time.monotonic() + 30  # the janitor's first sweep, the first samples
    while missing() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert missing() == set()
