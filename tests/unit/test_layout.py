"""README's "Where things are" matches the tree: every module is named, every name exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layout_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Where things are", 1)[1]
    return section.split("```", 2)[1]


def test_every_module_is_named_and_every_name_exists() -> None:
    named = set(re.findall(r"([a-z_]+\.py)", _layout_block()))
    modules = {
        p.name
        for pkg in ("sftpd", "cli")
        for p in (ROOT / pkg).rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert modules - named == set(), "modules missing from README's layout"
    existing = modules | {p.name for p in (ROOT / "bench").glob("*.py")}
    assert named - existing == set(), "README's layout names files that do not exist"


def test_no_module_left_at_an_old_address() -> None:
    """The names a newcomer would be misled by are gone for good."""
    for old in ("auth.py", "commands.py", "sshtweaks.py", "units.py", "channels.py", "sftp.py"):
        assert not (ROOT / "sftpd" / old).exists(), old
