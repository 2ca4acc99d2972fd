"""Human sizes: parse ``5GiB``, ``500MB``, ``1.5T`` or plain bytes; format for people."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "p": 1024**5,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "pib": 1024**5,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "pb": 1000**5,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
UNLIMITED_WORDS = ("unlimited", "none")


def parse_size(text: str) -> int:
    """Bytes in ``text``. Single letters and ``KiB``... are binary, ``KB``... decimal.

    ``unlimited`` (or ``none``) parses as 0, which quotas read as "no limit".
    """
    if text.strip().lower() in UNLIMITED_WORDS:
        return 0
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (try 5GiB, 500MB, 1.5T or plain bytes)")
    number, unit = match.groups()
    return (
        int(float(number) * _UNITS[unit.lower()])
        if "." in number
        else (int(number) * _UNITS[unit.lower()])
    )


def format_size(n: int) -> str:
    """``1.2 GiB`` style, one decimal, binary units."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def count(n: int, noun: str) -> str:
    """``1 file``, ``2 files``, ``1,234 files``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
