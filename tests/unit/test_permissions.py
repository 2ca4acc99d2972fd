"""Permission rules and limits as plain functions: parsing, longest match, addresses, pacing."""

from __future__ import annotations

import asyncio

import pytest

from sftpd.core.limits import BURST_SECONDS, Pacer, address_allowed, expired, parse_networks
from sftpd.core.permissions import (
    ALL,
    NotPermitted,
    Permissions,
    format_permissions,
    parse_permissions,
)


def test_parse_and_format() -> None:
    assert parse_permissions("all") == ALL == parse_permissions("*")
    assert parse_permissions("none") == frozenset()
    assert parse_permissions(" Download, list ,") == {"list", "download"}
    assert format_permissions(frozenset({"download", "list"})) == "list,download"
    assert format_permissions(ALL) == "all"
    assert format_permissions(frozenset()) == "none"
    for bad in ("read", "list,wrte", "", ","):
        with pytest.raises(ValueError, match="permission"):
            parse_permissions(bad)


def test_longest_path_wins_component_wise() -> None:
    rules = Permissions.parse(
        "list,download",
        [("/reports", "list"), ("/reports/2026/", "all"), ("/drop", "upload")],
    )
    assert rules.at(()) == {"list", "download"}
    assert rules.at(("reports",)) == {"list"}
    assert rules.at(("reports", "2025", "q1")) == {"list"}
    assert rules.at(("reports", "2026", "q1")) == ALL
    assert rules.at(("rep",)) == rules.at(("reportsx",)) == {"list", "download"}
    with pytest.raises(NotPermitted, match="upload not allowed in /reports/2025"):
        rules.require("upload", ("reports", "2025"))
    rules.require("upload", ("drop",))
    assert Permissions().unrestricted and not rules.unrestricted


@pytest.mark.parametrize("path", ["reports", "/a/../b", "/x/.."])
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="must"):
        Permissions.parse(None, [(path, "all")])


def test_addresses() -> None:
    nets = parse_networks(["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"])
    assert address_allowed("10.1.2.3", nets)
    assert address_allowed("::ffff:10.1.2.3", nets)  # IPv4-mapped, as a dual-stack socket sees it
    assert address_allowed("192.168.1.7", nets) and not address_allowed("192.168.1.8", nets)
    assert address_allowed("2001:db8::1", nets) and not address_allowed("2001:db9::1", nets)
    assert not address_allowed("not-an-address", nets)
    assert address_allowed("203.0.113.9", ())  # no list: anywhere
    with pytest.raises(ValueError, match="not an address"):
        parse_networks(["10.0.0.0/33"])
    assert expired(100.0, now=100.0) and not expired(None) and not expired(200.0, now=100.0)


async def test_pacer_keeps_the_rate_across_callers() -> None:
    pacer = Pacer(rate=1 << 20)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(pacer.take(64 << 10) for _ in range(8)))  # 512 KiB from 8 callers
    assert loop.time() - start >= 0.5 - BURST_SECONDS - 0.01
    unlimited = Pacer()
    start = loop.time()
    await unlimited.take(1 << 30)
    assert loop.time() - start < 0.05
