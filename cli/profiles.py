"""Saved targets (``xfer login``) and the one-shot working directory, in the user's config dir."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cli.errors import USAGE, XferError

VERSION = 2


def config_dir() -> Path:
    if env := os.environ.get("XFER_CONFIG_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "xfer"


@dataclass
class Profile:
    name: str
    target: str
    keys: list[str] = field(default_factory=list)
    cwd: str | None = None  # None: wherever the server starts a session (realpath ".")
    known_hosts: str | None = None


@dataclass
class Profiles:
    default: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return config_dir() / "profiles.json"

    @classmethod
    def load(cls) -> Profiles:
        path = config_dir() / "profiles.json"
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise XferError(USAGE, f"cannot read profiles {path}: {exc}") from None
        profiles = {name: Profile(**p) for name, p in doc.get("profiles", {}).items()}
        if doc.get("version", 1) < VERSION:  # version 1 saved "/" for "never changed"
            for p in profiles.values():
                p.cwd = None if p.cwd == "/" else p.cwd
        return cls(doc.get("default"), profiles)

    def save(self) -> None:
        path = self.path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        doc = {
            "version": VERSION,
            "default": self.default,
            "profiles": {n: asdict(p) for n, p in self.profiles.items()},
        }
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)
        os.replace(tmp, path)

    def current(self, name: str | None = None) -> Profile | None:
        key = name or self.default
        return self.profiles.get(key) if key else None
