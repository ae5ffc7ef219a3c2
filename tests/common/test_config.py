from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from common import config
from common.errors import ConfigError
from common.settings import Settings
from tests.support import REPO
from tests.support.rabbitmq import management

MINIMAL = {"source_domain": "http://127.0.0.1/", "local_base_path": "c", "originals_path": "o"}


# What an operator gives production from the environment (config/production.json holds no secret).
PRODUCTION_SECRETS = {"IMAGE_SERVER_S3_ACCESS_KEY": "key", "IMAGE_SERVER_S3_SECRET_KEY": "secret"}


def load_shipped(env: str) -> Settings:
    return config.load(env, environ=PRODUCTION_SECRETS if env == "production" else {})


@pytest.mark.parametrize("env", ["development", "test", "production"])
def test_shipped_configs_load(env: str) -> None:
    settings = load_shipped(env)
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
        ({**MINIMAL, "storage_backend": "ftp"}, "storage_backend"),
        ({**MINIMAL, "quality_target": 1.0}, "quality_target"),
        ({**MINIMAL, "upload_retry_delays_s": [1, 0]}, "upload_retry_delays_s[1]"),
        ({**MINIMAL, "allowed_source_formats": ["jpeg", "bmp"]}, "allowed_source_formats[1]"),
        ({**MINIMAL, "seaweedfs_ports": {"master": 1}}, "seaweedfs_ports"),
        ({**MINIMAL, "client_miss_rate_per_s": -1}, "client_miss_rate_per_s"),
        ({**MINIMAL, "source_pause_s": 0}, "source_pause_s"),
        # Settings that switch a defence off, or cannot hold (hardening, third pass).
        ({**MINIMAL, "signing_keys": [""]}, "signing_keys[0]"),
        ({**MINIMAL, "signing_keys": [" " * 40]}, "signing_keys[0]"),
        ({**MINIMAL, "signing_keys": ["a" * 31]}, "signing_keys[0]"),
        ({**MINIMAL, "purge_keys": ["short"]}, "purge_keys[0]"),
        ({**MINIMAL, "pregenerate_keys": ["short"]}, "pregenerate_keys[0]"),
        ({**MINIMAL, "status_token": " "}, "status_token"),
        ({**MINIMAL, "status_token": "short"}, "status_token"),
        ({**MINIMAL, "allowed_private_networks": ["0.0.0.0/0"]}, "allowed_private_networks[0]"),
        ({**MINIMAL, "allowed_private_networks": ["::/0"]}, "allowed_private_networks[0]"),
        ({**MINIMAL, "server_port": 99999}, "server_port"),
        ({**MINIMAL, "server_port": 0}, "server_port"),
        ({**MINIMAL, "graphite_port": -3}, "graphite_port"),
        ({**MINIMAL, "status_port": 7000}, "status_port"),  # server_port's
        ({**MINIMAL, "uploader_health_port": 7000}, "uploader_health_port"),
        ({**MINIMAL, "resize_deadline_s": 0.001}, "resize_deadline_s"),
        ({**MINIMAL, "resize_deadline_s": -1}, "resize_deadline_s"),
        ({**MINIMAL, "job_timeout_s": 1e9}, "job_timeout_s"),
        ({**MINIMAL, "source_pause_s": 1e9}, "source_pause_s"),
        ({**MINIMAL, "drain_timeout_s": -1}, "drain_timeout_s"),
        ({**MINIMAL, "status_interval_s": 0}, "status_interval_s"),
        ({**MINIMAL, "local_base_path": ""}, "local_base_path"),
        ({**MINIMAL, "local_base_path": " "}, "local_base_path"),
        ({**MINIMAL, "local_base_path": "/"}, "local_base_path"),
        ({**MINIMAL, "local_base_path": "."}, "local_base_path"),  # the checkout
        ({**MINIMAL, "local_base_path": ".."}, "local_base_path"),  # holds the checkout
        ({**MINIMAL, "originals_path": "/var"}, "originals_path"),
        ({**MINIMAL, "originals_path": str(Path.home())}, "originals_path"),
        ({**MINIMAL, "spill_path": "/home/someone"}, "spill_path"),
        ({**MINIMAL, "originals_path": "c/originals"}, "originals_path"),  # in the cache
        ({**MINIMAL, "spill_path": "o"}, "spill_path"),  # the originals'
        ({**MINIMAL, "storage_path": "c/store"}, "storage_path"),  # the janitor would evict
        ({**MINIMAL, "spill_max_bytes": 1_000_000}, "spill_max_bytes"),  # below max_output_bytes
        # Values of the right type that mean nothing (operator's guard rails).
        ({**MINIMAL, "amqp_url": "notaurl"}, "amqp_url"),
        ({**MINIMAL, "amqp_url": "http://127.0.0.1:5672/vhost"}, "amqp_url"),
        ({**MINIMAL, "amqp_url": "amqp://127.0.0.1:99999/vhost"}, "amqp_url"),
        ({**MINIMAL, "source_domain": "ftp://x"}, "source_domain"),
        ({**MINIMAL, "source_domain": "images.example.com"}, "source_domain"),
        ({**MINIMAL, "s3_endpoint": "https://s3.example.com"}, "s3_endpoint"),
        ({**MINIMAL, "s3_endpoint": "s3.example.com"}, "s3_endpoint"),
        ({**MINIMAL, "s3_endpoint": "s3.example.com:70000"}, "s3_endpoint"),
        ({**MINIMAL, "amqp_nodes": ["rabbit-1:5672", "rabbit 2:5672"]}, r"amqp_nodes[1]"),
        ({**MINIMAL, "bind_address": "notanip"}, "bind_address"),
        ({**MINIMAL, "status_bind_address": "localhost:7001"}, "status_bind_address"),
        ({**MINIMAL, "graphite_host": "graphite host"}, "graphite_host"),
        ({**MINIMAL, "allowed_sources": ["https://cdn.example.com/"]}, "allowed_sources[0]"),
        ({**MINIMAL, "allowed_outputs": ["w500.pdf"]}, "allowed_outputs[0]"),
        ({**MINIMAL, "allowed_outputs_by_type": {"a/b": ["x50.bmp"]}}, "allowed_outputs_by_type"),
    ],
)
def test_bad_keys_are_named(raw: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        config.from_mapping(raw)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("amqp_url", "amqps://user:p%40ss@rabbit.internal:5671/image%2Dserver"),
        ("amqp_url", "amqp://[::1]:5672/x"),
        ("source_domain", "https://images.example.com/base/"),
        ("s3_endpoint", "seaweedfs:8333"),  # a compose service's name
        ("s3_endpoint", "[::1]:9000"),
        ("bind_address", "::"),
        ("graphite_host", "10.0.0.7"),
        ("allowed_sources", ["cdn.example.com", "*.example.org"]),
        ("allowed_outputs", ["x50.*", "w*.webp", "w500.jpeg"]),
    ],
)
def test_values_of_each_kind_are_accepted(name: str, value: Any) -> None:
    assert getattr(config.from_mapping({**MINIMAL, name: value}), name) == value


def test_a_bad_secret_is_named_but_not_shown() -> None:
    with pytest.raises(ConfigError, match="amqp_url") as refused:
        config.from_mapping({**MINIMAL, "amqp_url": "amqp//guest:hunter2@rabbit"})
    assert "hunter2" not in str(refused.value)
    with pytest.raises(ConfigError, match=r"signing_keys\[0\]") as refused:
        config.from_mapping({**MINIMAL, "signing_keys": ["hunter2-is-too-short"]})
    assert "hunter2" not in str(refused.value)


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
    return urllib.parse.unquote(urllib.parse.urlsplit(load_shipped(env).amqp_url).path[1:])


def test_each_environment_has_a_vhost_of_its_own() -> None:
    vhosts = [vhost_of(env) for env in ("development", "production", "test")]
    assert len(set(vhosts)) == 3
    assert "" not in vhosts and "/" not in vhosts


@pytest.mark.stack  # RabbitMQ
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
    for env, dev_services in (("development", True), ("production", False)):
        dry_run = subprocess.run(
            ["make", "-n", "run", f"ENV={env}"], cwd=REPO, capture_output=True, text=True
        ).stdout
        # `image-server host --dev-services` sets IMAGE_SERVER_DEV_SERVICES=true (ops/host.py).
        assert f"image-server host -e {env}" in dry_run
        assert ("--dev-services" in dry_run) is dev_services
    for program in ("sample-origin", "seaweedfs"):
        assert autostarts(tmp_path, "false")[program] is False
        assert autostarts(tmp_path, "true")[program] is True
    assert autostarts(tmp_path, "false")["uploader"] is True


# --- keys from the environment ------------------------------------------------------


def test_production_in_git_holds_no_secret_and_no_default() -> None:
    shipped = json.loads((REPO / "config" / "production.json").read_text())
    defaults = {name: default for name, _type, default, _meaning in config.describe()}
    assert [key for key in shipped if shipped[key] == defaults[key]] == []
    assert [key for key in shipped if key in config.SECRETS and key != "amqp_url"] == []
    assert urllib.parse.urlsplit(shipped["amqp_url"]).password is None


def test_production_without_storage_keys_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="s3_secret_key"):
        config.load("production", environ={})


def test_every_key_can_come_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "e.json").write_text(json.dumps({**MINIMAL, "maximum_width": 800}))
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    environ = {
        "IMAGE_SERVER_SIGNING_KEYS": json.dumps(["k1" * 16, "k2" * 16]),  # JSON for a list
        "IMAGE_SERVER_MAXIMUM_WIDTH": "1200",  # the environment before the file
        "IMAGE_SERVER_S3_SECRET_KEY_FILE": str(secret),  # Docker/Kubernetes secrets
        "IMAGE_SERVER_S3_ACCESS_KEY": "[not json]",  # a string key takes the text as it is
        "IMAGE_SERVER_FRONTENDS": "4",  # read by make run, not a key
        "OTHER_VARIABLE": "x",
    }
    settings, sources = config.load_with_sources("e", tmp_path, environ)
    assert settings.signing_keys == ["k1" * 16, "k2" * 16]
    assert settings.maximum_width == 1200
    assert settings.s3_secret_key == "from-a-file"
    assert settings.s3_access_key == "[not json]"
    assert settings.local_base_path == "c"
    assert sources["maximum_width"] == "environment IMAGE_SERVER_MAXIMUM_WIDTH"
    assert sources["s3_secret_key"] == "environment IMAGE_SERVER_S3_SECRET_KEY_FILE"
    assert sources["local_base_path"] == f"file {tmp_path / 'e.json'}"
    assert sources["server_port"] == "default"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"IMAGE_SERVER_SIGNING_KEY": '["k"]'}, "IMAGE_SERVER_SIGNING_KEY names no config key"),
        ({"IMAGE_SERVER_MAXIMUM_WIDTH": "wide"}, "IMAGE_SERVER_MAXIMUM_WIDTH must be JSON"),
        ({"IMAGE_SERVER_MAXIMUM_WIDTH": '"800"'}, "maximum_width"),  # JSON, but a string
        ({"IMAGE_SERVER_PURGE_KEYS_FILE": "/nonexistent/file"}, "IMAGE_SERVER_PURGE_KEYS_FILE"),
        (
            {"IMAGE_SERVER_STATUS_TOKEN": "a", "IMAGE_SERVER_STATUS_TOKEN_FILE": "/etc/hostname"},
            "set twice",
        ),
    ],
)
def test_bad_variables_are_named(tmp_path: Path, environ: dict[str, str], named: str) -> None:
    (tmp_path / "e.json").write_text(json.dumps(MINIMAL))
    with pytest.raises(ConfigError, match=named):
        config.load("e", tmp_path, environ)


def run_config_tool(tmp_path: Path, env: str, **variables: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IMAGE_SERVER_")}
    return subprocess.run(
        [sys.executable, "-m", "ops.show_config", "-e", env],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **variables},
    )


def test_the_config_tool_prints_each_value_and_its_source_with_secrets_masked(
    tmp_path: Path,
) -> None:
    done = run_config_tool(
        tmp_path,
        "production",
        IMAGE_SERVER_S3_ACCESS_KEY="prod-access",
        IMAGE_SERVER_S3_SECRET_KEY="prod-secret-value",
        IMAGE_SERVER_AMQP_URL="amqp://app:amqp-password@rabbit:5672/image-server-production",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert 's3_secret_key = "***"  # environment IMAGE_SERVER_S3_SECRET_KEY' in lines
    assert "server_port = 7000  # default" in lines
    assert any(line.startswith('storage_backend = "s3"  # file ') for line in lines)
    assert "amqp://app:***@rabbit:5672/image-server-production" in done.stdout
    assert "prod-secret-value" not in done.stdout and "amqp-password" not in done.stdout


def test_the_config_tool_names_the_bad_key_and_fails(tmp_path: Path) -> None:
    done = run_config_tool(
        tmp_path, "production", **PRODUCTION_SECRETS, IMAGE_SERVER_DEFAULT_QUALITY='{"jxl": 70}'
    )
    assert done.returncode != 0
    assert "default_quality.jxl" in done.stderr and "Traceback" not in done.stderr


def test_the_environment_and_config_dir_come_from_variables(tmp_path: Path) -> None:
    (tmp_path / "staging.json").write_text(json.dumps({**MINIMAL, "allow_any_output": True}))
    done = run_config_tool(
        tmp_path, "staging", IMAGE_SERVER_CONFIG_DIR=str(tmp_path), IMAGE_SERVER_ENV="staging"
    )
    assert done.returncode == 0, done.stderr
    assert f"# environment 'staging', config directory {tmp_path}" in done.stdout


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({**MINIMAL, "whitelisted_extensions": ["jpg", "jxl"]}, "whitelisted_extensions"),
        ({**MINIMAL, "default_quality": {"jxl": 70}}, "default_quality.jxl"),
        ({**MINIMAL, "storage_backend": "s3"}, "s3_access_key"),
        ({**MINIMAL, "allowed_outputs": ["w500.jpg", "../x"]}, "allowed_outputs"),
        ({**MINIMAL, "allowed_outputs_by_type": {"avatar": ["x50.*"]}}, "allowed_outputs_by_type"),
        ({**MINIMAL, "trusted_proxies": ["10.0.0.0/33"]}, "trusted_proxies"),
        ({**MINIMAL, "max_output_pixels": {"avif": 0}}, "max_output_pixels.avif"),
    ],
)
def test_what_the_service_cannot_make_is_refused_at_start(raw: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config.from_mapping(raw)


@pytest.mark.stack  # RabbitMQ
def test_the_set_up_creates_a_vhost_through_the_management_api(tmp_path: Path) -> None:
    """As against a remote broker: RABBITMQ_MANAGEMENT_URL, no rabbitmqctl."""
    vhost = f"api-made-{os.getpid()}"
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    raw = {**MINIMAL, "amqp_url": f"amqp://guest:guest@rabbit.example:5672/{vhost}"}
    (config_dir / "remote.json").write_text(json.dumps(raw))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IMAGE_SERVER_")}
    done = subprocess.run(
        [str(REPO / "scripts" / "ensure-vhost.sh"), "remote"],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **environ,
            "IMAGE_SERVER_CONFIG_DIR": str(config_dir),
            "IMAGE_SERVER_ALLOW_ANY_OUTPUT": "true",
            "RABBITMQ_MANAGEMENT_URL": "http://guest:guest@127.0.0.1:15672",
        },
    )
    try:
        assert done.returncode == 0, done.stderr
        assert "(management API)" in done.stdout
        permissions = management("GET", f"/vhosts/{vhost}/permissions")
        assert [p["user"] for p in permissions] == ["guest"]
    finally:
        management("DELETE", f"/vhosts/{vhost}")


def test_a_malformed_secret_is_named_not_shown(tmp_path: Path) -> None:
    (tmp_path / "e.json").write_text(json.dumps(MINIMAL))
    with pytest.raises(ConfigError, match="IMAGE_SERVER_SIGNING_KEYS") as raised:
        config.load("e", tmp_path, {"IMAGE_SERVER_SIGNING_KEYS": "the-real-key"})
    assert "the-real-key" not in raised.value.message
