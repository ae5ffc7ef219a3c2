from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from common import config
from common.errors import ConfigError
from tests.harness import REPO, management

MINIMAL = {"source_domain": "http://127.0.0.1/", "local_base_path": "c", "originals_path": "o"}


@pytest.mark.parametrize("env", ["development", "test", "production"])
def test_shipped_configs_load(env: str) -> None:
    settings = config.load(env)
    assert settings.server_port > 0
    assert "jpg" in settings.whitelisted_extensions


def test_defaults_fill_optional_keys() -> None:
    settings = config.from_mapping(MINIMAL)
    assert settings.server_port == 7000
    assert settings.status_port == 7001
    assert settings.maximum_width == 1000
    assert settings.whitelisted_extensions == ["jpg", "png", "webp"]
    assert settings.default_quality["jpg"] == 78


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({**MINIMAL, "server_prot": 7000}, "server_prot"),
        ({"source_domain": "x", "local_base_path": "c"}, "originals_path"),
        ({**MINIMAL, "server_port": "7000"}, "server_port"),
        ({**MINIMAL, "server_port": True}, "server_port"),
        ({**MINIMAL, "whitelisted_extensions": "jpg"}, "whitelisted_extensions"),
        ({**MINIMAL, "whitelisted_extensions": ["jpg", 3]}, "whitelisted_extensions[1]"),
        ({**MINIMAL, "default_quality": {"jpg": "high"}}, "default_quality.jpg"),
        ({**MINIMAL, "default_quality": {"jpg": 0}}, "default_quality.jpg"),
        ({**MINIMAL, "maximum_width": 0}, "maximum_width"),
        ({**MINIMAL, "log_level": "LOUD"}, "log_level"),
        ({**MINIMAL, "auto_formats": ["avif"]}, "auto_formats"),  # avif not whitelisted
        ({**MINIMAL, "auto_formats": ["png"]}, "auto_formats"),
        ({**MINIMAL, "encoder_effort": {"webp": 7}}, "encoder_effort.webp"),
        ({**MINIMAL, "encoder_effort": {"jpg": 1}}, "encoder_effort.jpg"),
    ],
)
def test_bad_keys_are_named(raw: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        config.from_mapping(raw)


def test_ints_are_accepted_for_floats() -> None:
    assert config.from_mapping({**MINIMAL, "resize_deadline_s": 3}).resize_deadline_s == 3.0


def test_every_key_has_a_meaning() -> None:
    for name, _type, _default, meaning in config.describe():
        assert meaning, name


@pytest.mark.parametrize("program", ["frontend", "processor"])
def test_a_program_with_a_bad_key_stops_at_start_naming_it(tmp_path: Path, program: str) -> None:
    (tmp_path / "broken.json").write_text(json.dumps({**MINIMAL, "maximum_widht": 10}))
    done = subprocess.run(
        [sys.executable, "-m", program, "--config-dir", str(tmp_path), "-e", "broken"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "maximum_widht" in done.stderr
    assert "Traceback" not in done.stderr


def vhost_of(env: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(config.load(env).amqp_url).path[1:])


def test_each_environment_has_a_vhost_of_its_own() -> None:
    vhosts = [vhost_of(env) for env in ("development", "production", "test")]
    assert len(set(vhosts)) == 3
    assert "" not in vhosts and "/" not in vhosts


def test_the_set_up_creates_the_environments_vhost() -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "ensure-vhost.sh"), "development"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    quoted = urllib.parse.quote(vhost_of("development"), safe="")
    permissions = management("GET", f"/vhosts/{quoted}/permissions")
    assert [p["user"] for p in permissions] == ["guest"]


def autostarts(tmp_path: Path, dev_services: str) -> dict[str, bool]:
    """Each program's autostart, as supervisord itself reads supervisord.conf."""
    from supervisor.options import ServerOptions

    (tmp_path / "var" / "log").mkdir(parents=True, exist_ok=True)
    (tmp_path / "var" / "run").mkdir(parents=True, exist_ok=True)
    conf = tmp_path / "supervisord.conf"  # %(here)s is the file's directory
    conf.write_text((REPO / "supervisord.conf").read_text())
    environment = {
        "IMAGE_SERVER_ENV": "x",
        "IMAGE_SERVER_CONFIG_DIR": "config",
        "IMAGE_SERVER_FRONTENDS": "1",
        "IMAGE_SERVER_PROCESSORS": "1",
        "IMAGE_SERVER_DEV_SERVICES": dev_services,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        options = ServerOptions()
        options.configfile = str(conf)
        options.process_config(do_usage=False)
    return {
        process.name: bool(process.autostart)
        for group in options.process_group_configs
        for process in group.process_configs
    }


def test_the_sample_origin_and_seaweedfs_start_only_in_development(tmp_path: Path) -> None:
    for env, expected in (("development", "true"), ("production", "false")):
        dry_run = subprocess.run(
            ["make", "-n", "run", f"ENV={env}"], cwd=REPO, capture_output=True, text=True
        ).stdout
        assert f"IMAGE_SERVER_DEV_SERVICES={expected}" in dry_run
    for program in ("sample-origin", "seaweedfs"):
        assert autostarts(tmp_path, "false")[program] is False
        assert autostarts(tmp_path, "true")[program] is True
    assert autostarts(tmp_path, "false")["uploader"] is True
