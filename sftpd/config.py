"""Settings: defaults < TOML file (``--config``) < environment ``SFTPD_*`` < command-line flags.

Every problem ends in one :class:`ConfigError` whose message names the setting.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftpd.sizes import parse_size
from sftpd.ssh.algorithms import SUPPORTED_CIPHERS

ENV_PREFIX = "SFTPD_"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A bad setting; the message is one line meant for the operator."""


@dataclass(frozen=True)
class Settings:
    listen: tuple[str, ...] = ("127.0.0.1",)
    port: int = 2222
    data_dir: Path = Path("data")
    keys_dir: Path = Path("keys")
    default_quota: int = 5 * 1024**3
    login_grace_time: float = 30.0
    max_auth_attempts: int = 6
    idle_timeout: float = 900.0
    max_sessions_per_user: int = 10
    max_connections_per_address: int = 20
    defender_max_failures: int = 10  # 0: never block
    defender_window: float = 300.0
    defender_ban_time: float = 900.0
    log_format: str = "text"
    log_level: str = "info"
    workers: int = 0  # 0: one per core
    db: str = ""  # "" = sqlite:///<data_dir>/sftpd.db; or postgresql://user@host/db
    node_timeout: float = 60.0  # a process without a heartbeat this long is dead
    ciphers: tuple[str, ...] = SUPPORTED_CIPHERS  # offered to clients; the client picks
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def homes_dir(self) -> Path:
        return self.data_dir / "homes"

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.data_dir / 'sftpd.db'}"


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "extra"}


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML value, env string or flag into the setting's type, or raise ConfigError."""
    try:
        if name == "listen":
            items = value.split(",") if isinstance(value, str) else list(value)
            addrs = tuple(str(a).strip() for a in items if str(a).strip())
            if not addrs:
                raise ValueError("needs at least one address")
            return addrs
        if name == "port":
            port = int(value)
            if not 0 <= port <= 65535:
                raise ValueError("must be 0..65535")
            return port
        if name in ("data_dir", "keys_dir"):
            return Path(str(value))
        if name == "default_quota":
            return value if isinstance(value, int) and value >= 0 else parse_size(str(value))
        if name == "ciphers":
            items = value.split(",") if isinstance(value, str) else list(value)
            names = tuple(str(c).strip() for c in items if str(c).strip())
            unknown = [c for c in names if c not in SUPPORTED_CIPHERS]
            if not names or unknown:
                raise ValueError(
                    f"unsupported cipher {', '.join(unknown) or '(none)'}; choose from "
                    + ", ".join(SUPPORTED_CIPHERS)
                )
            return names
        if name == "db":
            url = str(value)
            if url and not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
                raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST/DB")
            return url
        if name in (
            "login_grace_time",
            "idle_timeout",
            "defender_window",
            "defender_ban_time",
            "node_timeout",
        ):
            seconds = float(value)
            if seconds < 0:
                raise ValueError("must be >= 0")
            return seconds
        if name in (
            "max_auth_attempts",
            "max_sessions_per_user",
            "max_connections_per_address",
            "defender_max_failures",
            "workers",
        ):
            count = int(value)
            if count < 0 or (name == "max_auth_attempts" and count == 0):
                raise ValueError("must be a positive number")
            return count
        if name == "log_format":
            if str(value) not in LOG_FORMATS:
                raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")
            return str(value)
        if name == "log_level":
            if str(value).lower() not in LOG_LEVELS:
                raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
            return str(value).lower()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad setting {name}={value!r}: {exc}") from None
    raise ConfigError(f"unknown setting: {name}")


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("server", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [server] must be a table")
    out = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        out[name] = _coerce(name, value)
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name == "config":
            continue
        if name not in _FIELDS:
            raise ConfigError(f"unknown environment setting: {key}")
        out[name] = _coerce(name, value)
    return out


def load_settings(
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Merge every source in priority order and validate the result."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    path = config_file or (
        Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None
    )
    if path is not None:
        merged.update(_from_toml(path))
    merged.update(_from_env(env))
    for name, value in (flags or {}).items():
        if value is not None:
            merged[name] = _coerce(name, value)
    return Settings(**merged)
