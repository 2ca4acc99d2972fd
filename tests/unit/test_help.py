"""Every help page of both commands shows what its source says: no default swallowed as markup."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import cli.app
import sftpd.admin

BRACKETED = re.compile(r"\[[^\]]*\]")


Command = Any  # typer's (vendored, private) click Command


def _walk(cmd: Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Command]]:
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _walk(sub, (*path, name))


def _options(cmd: Command) -> list[Any]:
    return [p for p in cmd.params if p.param_type_name == "option" and p.name != "help"]


def _flat(text: str) -> str:
    """The rendered page without box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _pages() -> Iterator[tuple[typer.Typer, tuple[str, ...], Command]]:
    for app in (sftpd.admin.app, cli.app.app):
        for path, cmd in _walk(typer.main.get_command(app)):
            yield app, path, cmd


PAGES = list(_pages())


@pytest.mark.parametrize(
    ("app", "path", "cmd"), PAGES, ids=[" ".join((a.info.name or "main", *p)) for a, p, _ in PAGES]
)
def test_help_page_keeps_every_bracket_and_says_something(
    app: typer.Typer, path: tuple[str, ...], cmd: Command
) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    page = _flat(result.output)
    texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
    for text in texts:
        for token in BRACKETED.findall(text):
            assert _flat(token) in page, f"{token!r} lost from {' '.join(path) or 'main'} --help"
    assert not re.search(r"\s[.,;]($|\s)", page), "something before a stop was swallowed"
    assert "[]" not in page
    for p in _options(cmd):
        if not p.hidden:
            assert p.opts[0] in page


def test_every_serve_setting_names_its_default() -> None:
    serve = typer.main.get_command(sftpd.admin.app).commands["serve"]  # type: ignore[attr-defined]
    for p in _options(serve):
        if not p.is_flag:
            assert BRACKETED.search(p.help or ""), f"--{p.name} does not say its default"
