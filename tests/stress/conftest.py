"""The stress suite: bounded fault, load and hostile-input runs (``pytest -m stress``).

Sizes come from ``STRESS_SCALE``: ``ci`` (default, what CI runs: about two minutes) or
``full`` (what docs/reliability.md quotes). Every test records what it tried and what it
measured with ``report``; the figures are printed at the end of the run and, when
``STRESS_REPORT`` names a file, appended to it as JSON lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FULL = os.environ.get("STRESS_SCALE", "ci") == "full"
_RECORDS: list[dict[str, Any]] = []


def scale(ci: int, full: int) -> int:
    """A count or size: the CI-sized one unless STRESS_SCALE=full."""
    return full if FULL else ci


def report(test: str, **figures: Any) -> None:
    """Record what a stress test tried and what held, for the summary and the report file."""
    record = {"test": test, "scale": "full" if FULL else "ci", **figures}
    _RECORDS.append(record)
    path = os.environ.get("STRESS_REPORT")
    if path:
        with Path(path).open("a") as fh:
            fh.write(json.dumps(record) + "\n")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.stress)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _RECORDS:
        return
    terminalreporter.section("stress figures")
    for r in _RECORDS:
        rest = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("test", "scale"))
        terminalreporter.write_line(f"{r['test']} [{r['scale']}]: {rest}")


def open_fds(pid: int | None = None) -> int:
    return len(os.listdir(f"/proc/{pid or os.getpid()}/fd"))


@pytest.fixture
def outside_tree(tmp_path: Path) -> Iterator[Path]:
    """A directory beside the homes with a secret; its snapshot must never change."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("TOP SECRET\n")
    (path / "sub").mkdir()
    (path / "sub" / "deeper.txt").write_text("TOP SECRET TOO\n")
    yield path


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under ``root``: (mode, mtime_ns, content or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                body = os.readlink(p).encode()
            elif p.is_file():
                body = p.read_bytes()
            else:
                body = b""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns, body)
    return out
