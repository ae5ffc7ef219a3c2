"""Loading the settings (common/settings.py declares them).

A program loads `<config_dir>/<env>.json` once at start into a frozen
`Settings`, each key overridden by IMAGE_SERVER_<KEY> (or IMAGE_SERVER_<KEY>_FILE).
An unknown key, a missing required key, a value of the wrong type or one its
rule refuses (declared with the key: `check=POSITIVE`...) raises `ConfigError`
naming the key, and the program stops. Only the rules across keys live here
(`_check_values`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.formats import NEGOTIABLE_FORMATS
from common.settings import DEFAULT_CONFIG_DIR, REPO_ROOT, Settings


def describe() -> list[tuple[str, str, Any, str]]:
    """(name, type, default, meaning) of every key, for documentation."""
    rows = []
    for field in dataclasses.fields(Settings):
        if field.default is not dataclasses.MISSING:
            default: Any = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = "(required)"
        rows.append((field.name, str(field.type), default, field.metadata["meaning"]))
    return rows


def _check_type(name: str, value: Any, expected: Any) -> Any:
    origin = typing.get_origin(expected)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is None:
        if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise ConfigError(f"config key {name!r} must be {expected.__name__}, got {value!r}")
        return value
    args = typing.get_args(expected)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {name!r} must be a list, got {value!r}")
        return [_check_type(f"{name}[{i}]", item, args[0]) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {name!r} must be an object, got {value!r}")
        return {k: _check_type(f"{name}.{k}", v, args[1]) for k, v in value.items()}
    raise ConfigError(f"config key {name!r} has an unsupported declared type")


def from_mapping(raw: dict[str, Any]) -> Settings:
    hints = typing.get_type_hints(Settings)
    fields = {field.name: field for field in dataclasses.fields(Settings)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
    values = {}
    for name, field in fields.items():
        if name in raw:
            values[name] = _check_type(name, raw[name], hints[name])
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {name!r}")
    settings = Settings(**values)
    _check_values(settings)
    return settings


def _check_values(settings: Settings) -> None:
    """Each key's own rule (declared with it), then the rules across keys."""
    for field in dataclasses.fields(Settings):
        rule = field.metadata.get("check")
        value = getattr(settings, field.name)
        complaint = rule.broken(field.name, value, field.name in SECRETS) if rule else None
        if complaint:
            raise ConfigError(complaint)
    for fmt in settings.auto_formats:
        if fmt not in NEGOTIABLE_FORMATS or fmt not in settings.whitelisted_extensions:
            raise ConfigError(
                f"config key 'auto_formats': {fmt!r} must be webp or avif and whitelisted"
            )
    _check_ports_apart(settings)
    _check_cache_paths(settings)
    largest = max(settings.max_output_bytes, settings.max_source_bytes)
    if settings.spill_max_bytes < largest:  # such an upload could never be kept on disk
        raise ConfigError(
            f"config key 'spill_max_bytes' must hold the largest upload: at least "
            f"max_output_bytes and max_source_bytes ({largest})"
        )
    if settings.storage_backend == "s3" and not (settings.s3_access_key and settings.s3_secret_key):
        raise ConfigError(
            "config keys 's3_access_key' and 's3_secret_key' must be set for the s3 backend "
            "(IMAGE_SERVER_S3_SECRET_KEY_FILE...): without them every request is anonymous"
        )


def _check_ports_apart(settings: Settings) -> None:
    ports = {"server_port": settings.server_port, "status_port": settings.status_port,
             "uploader_health_port": settings.uploader_health_port}  # fmt: skip
    for name, port in ports.items():
        others = [other for other, taken in ports.items() if taken == port and other != name]
        if others:
            raise ConfigError(f"config key {name!r} must differ from {others[0]!r} ({port})")


def _check_cache_paths(settings: Settings) -> None:
    """The directories the janitor evicts from, or the uploader empties, must be
    directories of their own: not empty, `/`, a top-level directory, the
    checkout or a directory holding it, a home directory, nor inside another."""
    paths = {"local_base_path": settings.cache_dir, "originals_path": settings.originals_dir,
             "spill_path": settings.spill_dir}  # fmt: skip
    if settings.storage_backend == "filesystem":
        paths["storage_path"] = REPO_ROOT / settings.storage_path
    resolved = {}
    for name, path in paths.items():
        if not str(getattr(settings, name)).strip():
            raise ConfigError(f"config key {name!r} must name a directory, got ''")
        where = path.resolve()
        home = where == Path.home() or where.parent == Path("/home")
        if len(where.parts) < 3 or where == REPO_ROOT or where in REPO_ROOT.parents or home:
            raise ConfigError(
                f"config key {name!r} must be a directory of its own (files are evicted from "
                f"it), not {where}"
            )
        resolved[name] = where
    for name, where in resolved.items():
        for other, around in resolved.items():
            if other != name and (where == around or around in where.parents):
                raise ConfigError(f"config key {name!r} ({where}) must not be inside {other!r}")


OPEN_ENVIRONMENTS = ("development", "test")  # may start with every output open to anyone


def check_exposure(settings: Settings, env: str) -> None:
    """Refuse to run a public environment where any anonymous client may make any output."""
    if (
        env in OPEN_ENVIRONMENTS
        or settings.signing_keys
        or settings.allowed_outputs
        or settings.allow_any_output
    ):
        return
    raise ConfigError(
        f"environment {env!r} would make any output for anyone: set 'signing_keys' or "
        "'allowed_outputs' (or 'allow_any_output': true if that is meant)"
    )


ENV_PREFIX = "IMAGE_SERVER_"
# IMAGE_SERVER_ variables that are not config keys: read by `make run`, supervisord.conf
# and the programs' arguments (ENV and CONFIG_DIR).
PROGRAM_VARIABLES = frozenset({"ENV", "CONFIG_DIR", "FRONTENDS", "PROCESSORS", "DEV_SERVICES"})
# Keys whose values are never printed (common.config prints them masked).
SECRETS = frozenset(
    {
        "amqp_url",
        "s3_access_key",
        "s3_secret_key",
        "signing_keys",
        "purge_keys",
        "pregenerate_keys",
        "status_token",
    }
)


def load(
    env: str, config_dir: Path = DEFAULT_CONFIG_DIR, environ: Mapping[str, str] | None = None
) -> Settings:
    """The settings of `env`: each key from the environment (IMAGE_SERVER_<KEY> or
    IMAGE_SERVER_<KEY>_FILE), else `<config_dir>/<env>.json`, else its default."""
    return load_with_sources(env, config_dir, environ)[0]


def load_with_sources(
    env: str, config_dir: Path = DEFAULT_CONFIG_DIR, environ: Mapping[str, str] | None = None
) -> tuple[Settings, dict[str, str]]:
    """Like load, and where each key's value came from: default, file or a variable."""
    path = Path(config_dir) / f"{env}.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"no config file for environment {env!r}: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    sources = {name: f"file {path}" for name in raw}
    for name, (value, variable) in from_environment(os.environ if environ is None else environ):
        raw[name] = value
        sources[name] = f"environment {variable}"
    settings = from_mapping(raw)
    check_exposure(settings, env)
    for field in dataclasses.fields(Settings):
        sources.setdefault(field.name, "default")
    return settings, sources


def from_environment(environ: Mapping[str, str]) -> list[tuple[str, tuple[Any, str]]]:
    """(key, (value, variable)) of every IMAGE_SERVER_<KEY>[_FILE] in `environ`; a
    variable that names no key (a typo in a secret's name) is an error."""
    hints = typing.get_type_hints(Settings)
    found: dict[str, tuple[Any, str]] = {}
    for variable, text in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or variable[len(ENV_PREFIX) :] in PROGRAM_VARIABLES:
            continue
        name = variable[len(ENV_PREFIX) :].lower()
        if name not in hints and name.endswith("_file") and name[: -len("_file")] in hints:
            name = name[: -len("_file")]
            text = _read_secret_file(variable, text)
        elif name not in hints:
            raise ConfigError(f"environment variable {variable} names no config key")
        if name in found:
            raise ConfigError(f"config key {name!r} is set twice: {found[name][1]} and {variable}")
        found[name] = (_parse_variable(variable, text, hints[name], name in SECRETS), variable)
    return sorted(found.items())


def _read_secret_file(variable: str, path: str) -> str:
    try:
        return Path(path).read_text().rstrip("\n")
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from exc


def _parse_variable(variable: str, text: str, expected: Any, secret: bool) -> Any:
    """A string key takes the text as it is; any other is the text read as JSON."""
    if expected is str:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        shown = "(a secret, not shown)" if secret else repr(text)
        raise ConfigError(f"{variable} must be JSON for its key's type, got {shown}") from exc


def masked(name: str, value: Any) -> Any:
    """`value` as it may be printed: a secret shows only whether it is set."""
    if name not in SECRETS or not value:
        return value
    if name == "amqp_url":  # the address is useful, the password is not
        parts = urllib.parse.urlsplit(value)
        if parts.password:
            host = parts.netloc.rsplit("@", 1)[1]
            return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
        return value
    return ["***"] * len(value) if isinstance(value, list) else "***"
