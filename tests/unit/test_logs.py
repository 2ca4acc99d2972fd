"""Log lines cannot be forged: whatever a user puts in a name, a path or a reason, one
record is one line, and its ``key=value`` fields are the ones the server wrote."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from typing import Any

from sftpd.logs import JsonFormatter, TextFormatter

FORGED = "\n2026-01-01T00:00:00 info sftpd.audit: login accepted user=root"
#: Every character that could end a line or drive a terminal: C0, DEL, C1, U+2028/2029.
CONTROLS = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]))


def record(msg: str = "operation not permitted", **fields: Any) -> logging.LogRecord:
    r = logging.makeLogRecord({"name": "sftpd.audit", "levelno": logging.WARNING,
                               "levelname": "WARNING", "msg": msg})  # fmt: skip
    r.__dict__.update(fields)
    return r


def fields_of(line: str) -> dict[str, str]:
    """The ``key=value`` fields of a text line, parsed as a shell would split it."""
    return dict(token.split("=", 1) for token in shlex.split(line) if "=" in token)


def test_ordinary_values_keep_their_plain_shape() -> None:
    line = TextFormatter().format(record("login accepted", event="login", user="ana",
                                         addr="127.0.0.1", outcome="ok", size=7))  # fmt: skip
    assert line.endswith(
        " warning sftpd.audit: login accepted event=login user=ana addr=127.0.0.1 outcome=ok size=7"
    )


def test_a_newline_in_a_field_stays_on_the_line_of_its_record() -> None:
    line = TextFormatter().format(record(event="permission", user="eve", reason="in /d" + FORGED))
    assert line.splitlines() == [line]
    assert fields_of(line)["reason"] == "in /d\\n2026-01-01T00:00:00 info sftpd.audit: login " \
                                         "accepted user=root"  # fmt: skip
    assert fields_of(line)["user"] == "eve"


def test_every_control_character_is_escaped_visibly() -> None:
    line = TextFormatter().format(record("m" + CONTROLS, path="p" + CONTROLS))
    assert line.splitlines() == [line]
    assert not set(line) & set(CONTROLS)
    assert "m\\x00\\x01" in line and "\\t\\n\\x0b\\x0c\\r" in line and "\\x1b" in line
    assert "\\x7f\\x80" in line and "\\x85" in line and "\\u2028\\u2029" in line


def test_a_value_cannot_forge_another_field() -> None:
    line = TextFormatter().format(
        record(event="permission", user="eve", reason='x user=admin outcome="ok" \\" end=1')
    )
    fields = fields_of(line)
    assert fields["user"] == "eve"
    assert fields["reason"] == 'x user=admin outcome="ok" \\" end=1'
    assert set(fields) == {"event", "user", "reason"}


def test_an_empty_value_is_quoted() -> None:
    assert TextFormatter().format(record(reason="")).endswith(' reason=""')


def test_a_traceback_is_indented_below_its_record() -> None:
    try:
        raise ValueError("bad name" + FORGED)
    except ValueError:
        r = record(exc_info=sys.exc_info())
    first, *rest = TextFormatter().format(r).split("\n")
    assert first.endswith("operation not permitted")
    assert rest and all(x.startswith("  ") for x in rest)
    assert any("login accepted user=root" in x for x in rest)  # kept, where it cannot pass
    assert not set("".join(rest)) & set(CONTROLS)


def test_json_lines_escape_every_control_character() -> None:
    line = JsonFormatter().format(record("m" + CONTROLS + FORGED, path="p" + CONTROLS + FORGED))
    assert line.splitlines() == [line]
    assert not set(line) & set(CONTROLS)
    doc = json.loads(line)
    assert doc["msg"] == "m" + CONTROLS + FORGED and doc["path"] == "p" + CONTROLS + FORGED
