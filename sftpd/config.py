"""Settings: defaults < TOML file (``--config``) < environment ``SFTPD_*`` < command-line flags.

Every problem ends in one :class:`ConfigError` whose message names the setting.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftpd.core.logins import parse_policy
from sftpd.core.uploads import UPLOAD_MODES
from sftpd.events.hooks import Hook, parse_hooks
from sftpd.metrics import parse_listen
from sftpd.sizes import parse_size
from sftpd.ssh.algorithms import SUPPORTED_CIPHERS

ENV_PREFIX = "SFTPD_"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A bad setting; the message is one line meant for the operator."""


# -- parsers: each turns a TOML value, an env string or a flag into the setting's type --


def _items(value: Any) -> tuple[str, ...]:
    raw = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(v).strip() for v in raw if str(v).strip())


def _addresses(value: Any) -> tuple[str, ...]:
    addrs = _items(value)
    if not addrs:
        raise ValueError("needs at least one address")
    return addrs


def _port(value: Any) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("must be 0..65535")
    return port


def _path(value: Any) -> Path:
    return Path(str(value))


def _paths(value: Any) -> tuple[Path, ...]:
    return tuple(Path(item) for item in _items(value))


def _size(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else parse_size(str(value))


def _listen(value: Any) -> str:
    text = str(value).strip()
    if text:
        parse_listen(text)
    return text


def _ciphers(value: Any) -> tuple[str, ...]:
    names = _items(value)
    unknown = [c for c in names if c not in SUPPORTED_CIPHERS]
    if not names or unknown:
        raise ValueError(
            f"unsupported cipher {', '.join(unknown) or '(none)'}; choose from "
            + ", ".join(SUPPORTED_CIPHERS)
        )
    return names


def _db_url(value: Any) -> str:
    url = str(value)
    if url and not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST/DB")
    return url


def _seconds(value: Any) -> float:
    seconds = float(value)
    if seconds < 0:
        raise ValueError("must be >= 0")
    return seconds


def _count(value: Any) -> int:
    n = int(value)
    if n < 0:
        raise ValueError("must be a positive number")
    return n


def _positive(value: Any) -> int:
    n = int(value)
    if n <= 0:
        raise ValueError("must be a positive number")
    return n


def _policy(value: Any) -> str:
    text = str(value).strip()
    if text:
        parse_policy(text)
    return text


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text

    return parse


def setting(
    default: Any, parse: Callable[[Any], Any], help: str, *, shown: str = "", where: str = "serve"
) -> Any:
    """Declare a setting once: its default, parser and help (``shown`` is the default as
    people read it). The TOML key, ``SFTPD_*`` name and ``--flag`` derive from the field
    name; ``where`` says whether the flag belongs to ``serve`` or comes before the verb."""
    meta = {"parse": parse, "help": help, "shown": shown or str(default), "where": where}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Every server setting, each declared once (see :func:`setting`)."""

    listen: tuple[str, ...] = setting(
        ("127.0.0.1",), _addresses, "Address to listen on, repeatable.", shown="127.0.0.1"
    )
    port: int = setting(2222, _port, "TCP port, 0 = any free port.")
    data_dir: Path = setting(Path("data"), _path, "State directory.", shown="./data",
                             where="global")  # fmt: skip
    keys_dir: Path = setting(Path("keys"), _path, "Host key directory.", shown="./keys",
                             where="global")  # fmt: skip
    default_quota: int = setting(5 * 1024**3, _size, "Quota for users without one.",
                                 shown="5GiB")  # fmt: skip
    login_grace_time: float = setting(30.0, _seconds, "Seconds to log in.", shown="30")
    max_auth_attempts: int = setting(6, _positive, "Failures per connection.")
    idle_timeout: float = setting(900.0, _seconds, "Idle seconds, 0 = never.", shown="900")
    max_sessions_per_user: int = setting(10, _count, "Sessions per user, 0 = unlimited.")
    max_connections_per_address: int = setting(
        20, _count, "Connections per client address, 0 = unlimited."
    )
    defender_max_failures: int = setting(
        10, _count, "Login failures that block an address, 0 = never."
    )
    defender_window: float = setting(300.0, _seconds, "Seconds failures are counted over.",
                                     shown="300")  # fmt: skip
    defender_ban_time: float = setting(900.0, _seconds, "Seconds an address stays blocked.",
                                       shown="900")  # fmt: skip
    log_format: str = setting("text", _choice(LOG_FORMATS), "text | json.")
    log_level: str = setting("info", _choice(LOG_LEVELS), "debug | info | warning | error.")
    workers: int = setting(0, _count, "Processes on the port, 0 = one per core.",
                           shown="one per core")  # fmt: skip
    db: str = setting("", _db_url, "sqlite:///PATH or postgresql://USER@HOST/DB.",
                      shown="sqlite in the data dir", where="global")  # fmt: skip
    node_timeout: float = setting(
        60.0, _seconds, "Seconds without a heartbeat before a process counts as dead.", shown="60"
    )
    event_buffer: int = setting(
        100000, _positive, "Events held in memory while the store cannot record them."
    )
    hook_concurrency: int = setting(4, _positive, "Deliveries at once, per hook and process.")
    history_days: float = setting(
        90.0, _seconds, "Days events are kept (history), 0 = forever.", shown="90"
    )
    metrics_listen: str = setting(
        "", _listen, "ADDR:PORT serving /metrics and /healthz; empty = off.", shown="off"
    )
    login_policy: str = setting(
        "", _policy, "Methods that admit users without a policy of their own (docs/security.md).",
        shown="publickey,certificate,password (+totp for users with a second factor)",
    )  # fmt: skip
    user_ca: tuple[Path, ...] = setting(
        (), _paths, "File of trusted user CA public keys, repeatable (docs/security.md).",
        shown="none",
    )  # fmt: skip
    revoked_keys: str = setting(
        "", str, "KRL or list of public keys refused for login (reread when it changes).",
        shown="none",
    )  # fmt: skip
    upload_mode: str = setting(
        "standard", _choice(UPLOAD_MODES), "standard | atomic | atomic-resume (docs/automation.md)."
    )
    ciphers: tuple[str, ...] = setting(
        SUPPORTED_CIPHERS, _ciphers, "Ciphers to offer, comma-separated; the client picks.",
        shown="all but CBC; see README",
    )  # fmt: skip

    # Not a setting with a flag: the [[hooks]] tables of the TOML file (sftpd/events/hooks.py).
    hooks: tuple[Hook, ...] = ()

    @property
    def homes_dir(self) -> Path:
        return self.data_dir / "homes"

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.data_dir / 'sftpd.db'}"


FIELDS = {f.name: f for f in dataclasses.fields(Settings) if "parse" in f.metadata}


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    return ENV_PREFIX + name.upper()


def help_of(name: str) -> str:
    """The option help for ``name``: its text and its default, from the declaration."""
    meta = FIELDS[name].metadata
    return f"{meta['help']} [{meta['shown']}]"


def _coerce(name: str, value: Any) -> Any:
    """Parse ``value`` for setting ``name``, or raise a ConfigError naming it."""
    if name not in FIELDS:
        raise ConfigError(f"unknown setting: {name}")
    try:
        return FIELDS[name].metadata["parse"](value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad setting {name}={value!r}: {exc}") from None


def _from_toml(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
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
    out: dict[str, Any] = {}
    if "hooks" in data:
        try:
            out["hooks"] = parse_hooks(data["hooks"], env)
        except ValueError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    for key, value in section.items():
        if key == "hooks" and section is data:
            continue
        name = key.replace("-", "_")
        if name not in FIELDS:
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
        if name not in FIELDS:
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
        merged.update(_from_toml(path, env))
    merged.update(_from_env(env))
    for name, value in (flags or {}).items():
        if value is not None:
            merged[name] = _coerce(name, value)
    return Settings(**merged)
