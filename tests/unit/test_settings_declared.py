"""Each setting is declared once (sftpd/config.py); everything else must follow from it.

Fails when a field lacks its ``serve`` (or global) flag, its ``SFTPD_*`` variable, its
TOML key or its README row, or when a flag's help drifts from the declaration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer

from sftpd.admin import app
from sftpd.config import FIELDS, Settings, env_of, flag_of, help_of, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = Settings()


def _options(command: Any) -> dict[str, Any]:
    return {opt: p for p in command.params for opt in p.opts}


ROOT_COMMAND = typer.main.get_command(app)
SERVE = ROOT_COMMAND.commands["serve"]  # type: ignore[attr-defined]


def _text(value: Any) -> str:
    """A default as a person would type it into an environment variable."""
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def _toml(value: Any) -> str:
    if isinstance(value, tuple):
        return json.dumps(list(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_each_setting_has_a_flag_with_its_declared_help(name: str) -> None:
    meta = FIELDS[name].metadata
    assert {"parse", "help", "shown", "where"} <= meta.keys()
    command = SERVE if meta["where"] == "serve" else ROOT_COMMAND
    option = _options(command).get(flag_of(name))
    assert option is not None, f"{flag_of(name)} missing from {command.name}"
    assert option.help == help_of(name)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_each_setting_reads_from_its_env_name_and_toml_key(name: str, tmp_path: Path) -> None:
    want = getattr(DEFAULTS, name)
    assert getattr(load_settings(env={env_of(name): _text(want)}), name) == want
    conf = tmp_path / "c.toml"
    conf.write_text(f"[server]\n{name.replace('_', '-')} = {_toml(want)}\n")
    assert getattr(load_settings(conf, env={}), name) == want


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_each_setting_has_a_readme_row(name: str) -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert any(f"`{flag_of(name)}" in r and f"`{env_of(name)}`" in r for r in rows), name


def test_no_serve_option_without_a_declaration() -> None:
    undeclared = [
        p.name for p in SERVE.params if p.name not in FIELDS and p.name not in ("demo", "help")
    ]
    assert undeclared == []
