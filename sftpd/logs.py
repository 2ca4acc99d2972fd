r"""Logging setup (text or JSON lines on stderr) and the audit-event helper.

Audit events carry structured fields through ``extra``: ``event`` names the kind
(``login``, ``confinement``...), the rest (``user``, ``addr``, ``method``,
``outcome``, ``reason``) describe it. No secret ever goes in a field.

Field values carry what users chose (paths, names), so neither format lets one forge a
record: a JSON line is ``json.dumps``; a text line escapes every control character
(C0, DEL, C1, U+2028/2029) as ``\n``, ``\x1b``..., and quotes a value that is empty or
holds a space, ``=``, ``"`` or ``\`` (``reason="user disabled"``). One record is one line;
a traceback follows it indented.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
audit_log = logging.getLogger("sftpd.audit")
#: Characters no text line may hold raw: C0, DEL, C1, U+2028/2029, and the bidirectional
#: controls that reorder what a terminal shows (a class body for ``re``).
_CONTROL = r"\x00-\x1f\x7f-\x9f\u061c\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE_IN_MESSAGE = re.compile(rf"[\\{_CONTROL}]")
_UNSAFE_IN_VALUE = re.compile(rf'[\\"{_CONTROL}]')
_PLAIN = re.compile(rf'[^\s="\\{_CONTROL}]+')


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return "\\" + char if char in '\\"' else repr(char)[1:-1]


def one_line(text: str) -> str:
    """``text`` safe to print as (part of) one line: control characters escaped."""
    return _UNSAFE_IN_MESSAGE.sub(_escape_char, text)


def _value(value: Any) -> str:
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return '"' + _UNSAFE_IN_VALUE.sub(_escape_char, text) + '"'


class TextFormatter(logging.Formatter):
    """``TIME level logger: message key=value ...``, one line per record whatever the
    message and values hold."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        line = f"{ts} {record.levelname.lower()} {record.name}: {one_line(record.getMessage())}"
        for key, value in _fields(record).items():
            line += f" {one_line(key)}={_value(value)}"
        if record.exc_info:
            trace = self.formatException(record.exc_info).split("\n")
            line += "".join(f"\n  {one_line(x)}" for x in trace)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # asyncssh logs every channel at INFO; keep it for debugging only.
    logging.getLogger("asyncssh").setLevel("DEBUG" if level == "debug" else "WARNING")


def audit(message: str, *, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One structured line for a security-relevant event."""
    audit_log.log(level, message, extra={"event": event, **fields})
