"""Path patterns that read like paths: ``*`` and ``?`` match within one name, ``**`` across
``/`` (``/in/**`` is everything below ``/in``; ``/a/**/b`` is ``/a/b`` too), ``[...]`` one
character of a name (``[!...]`` none of them), as in a shell or .gitignore.

Matching runs on the event loop against names users chose, so it is linear in the path's
length whatever the pattern: a bit-parallel simulation of the pattern's automaton (one bit
per token), never a backtracking regular expression (``/**a**a**a**b`` against a path of
4,000 ``a`` would take a regex minutes).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

_STAR, _DSTAR = "*", "**"


@dataclass(frozen=True)
class _Class:
    """``[...]``: one character of a name in (or, negated, not in) ``chars``/``ranges``."""

    chars: frozenset[str]
    ranges: tuple[tuple[str, str], ...]
    negate: bool

    def matches(self, c: str) -> bool:
        if c == "/":
            return False
        inside = c in self.chars or any(lo <= c <= hi for lo, hi in self.ranges)
        return inside != self.negate


Token = str | _Class  # a literal character, "?", "*", "**", or a class


def _tokens(pattern: str) -> list[Token]:
    out: list[Token] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith(_DSTAR, i):
            while pattern.startswith(_STAR, i):  # "***" is "**"
                i += 1
            out.append(_DSTAR)
            continue
        c = pattern[i]
        if c == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            chars, ranges, j = set(), [], 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    ranges.append((body[j], body[j + 2]))
                    j += 3
                else:
                    chars.add(body[j])
                    j += 1
            out.append(_Class(frozenset(chars), tuple(ranges), negate))
            i = end + 1
            continue
        out.append(_STAR if c == "*" else "?" if c == "?" else "\\" + c)  # "\\x": literal x
        i += 1
    return out


@dataclass(frozen=True)
class PathPattern:
    """A compiled pattern; :meth:`fullmatch` says whether a whole path matches."""

    text: str
    tokens: tuple[Token, ...]
    stars: int  # bits of "*" and "**" tokens (each may be skipped)
    optional: int  # bits of a "/" before "**/": "/**/" may be one "/" ("/a/**/b" is "/a/b")
    accept: int
    start: int
    _masks: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False)

    def _masks_of(self, c: str) -> tuple[int, int]:
        """(tokens that consume ``c`` and move on, star tokens that consume it and stay)."""
        found = self._masks.get(c)
        if found is None:
            step = stay = 0
            for i, t in enumerate(self.tokens):
                if t == _DSTAR or (t == _STAR and c != "/"):
                    stay |= 1 << i
                elif self._consumes(t, c):
                    step |= 1 << i
            found = (step, stay)
            if len(self._masks) < 4096:
                self._masks[c] = found
        return found

    @staticmethod
    def _consumes(t: Token, c: str) -> bool:
        if isinstance(t, _Class):
            return t.matches(c)
        return t == "\\" + c or (t == "?" and c != "/")

    def _closure(self, states: int) -> int:
        while True:
            grown = states | ((states & self.stars) << 1) | ((states & self.optional) << 2)
            if grown == states:
                return states
            states = grown

    def fullmatch(self, path: str) -> bool:
        states = self._closure(self.start)
        for c in path:
            step, stay = self._masks_of(c)
            states = self._closure(((states & step) << 1) | (states & stay))
            if not states:
                return False
        return bool(states & self.accept)


@functools.lru_cache(maxsize=256)
def path_pattern(pattern: str) -> PathPattern:
    """The compiled form of ``pattern`` (see the module's docstring)."""
    tokens = _tokens(pattern)
    stars = optional = 0
    start = 1
    for i, t in enumerate(tokens):
        if t in (_STAR, _DSTAR):
            stars |= 1 << i
        if t != _DSTAR or i + 1 >= len(tokens) or tokens[i + 1] != "\\/":
            continue
        # "/**/" may be one "/": from before the first "/" to before the second (never
        # after ** consumed anything); "**/" at the start may be nothing.
        if i == 0:
            start |= 1 << 2
        elif tokens[i - 1] == "\\/":
            optional |= 1 << (i - 1)
    return PathPattern(pattern, tuple(tokens), stars, optional, 1 << len(tokens), start)
