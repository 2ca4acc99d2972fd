"""One suite for both stores: SQLite (embedded) and PostgreSQL (a real server, tests/pg.py).

Two store objects on the same database stand for two processes or nodes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sftpd.events import Event
from sftpd.store import (
    AccessRecord,
    FolderRecord,
    KeyRecord,
    Mount,
    Store,
    StoreError,
    UserRecord,
    folder_account,
    open_store,
)
from sftpd.store.migrations import POSTGRES_STEPS
from sftpd.store.outbox import EventQuery, NewEvent, packed, unpacked

KEY = KeyRecord("SHA256:abc", "ssh-ed25519", "ssh-ed25519 AAAA", "me@host")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def two(url: str) -> AsyncIterator[tuple[Store, Store]]:
    a = await open_store(url)
    b = await open_store(url)
    yield a, b
    await a.close()
    await b.close()


async def test_users_and_keys_roundtrip(two: tuple[Store, Store]) -> None:
    store, other = two
    await store.add_user(UserRecord("alice", "hash", 1000, keys=(KEY,)))
    user = await other.get_user("alice")  # a change on one node is seen by the other
    assert user is not None and user.keys == (KEY,) and user.quota_bytes == 1000
    with pytest.raises(StoreError, match="already exists"):
        await store.add_user(UserRecord("alice"))
    with pytest.raises(StoreError, match="already has key"):
        await store.add_key("alice", KEY)
    with pytest.raises(StoreError, match="no such user"):
        await store.add_key("bob", KEY)
    assert await store.set_disabled("alice", True)
    assert (await other.get_user("alice")).disabled  # type: ignore[union-attr]
    assert not await store.set_disabled("bob", True)
    assert await store.set_quota("alice", None) and await store.set_max_files("alice", 5)
    assert await store.set_password("alice", "other")
    assert await store.delete_key("alice", KEY.fingerprint)
    assert (await store.get_user("alice")).keys == ()  # type: ignore[union-attr]
    await store.add_key("alice", KEY)
    assert [u.name for u in await other.list_users()] == ["alice"]
    assert await store.delete_user("alice")
    assert await store.get_user("alice") is None
    assert await store.count_users() == 0


async def test_login_policy_totp_and_recovery_codes(two: tuple[Store, Store]) -> None:
    """Two nodes: a time step and a recovery code are each accepted once, whichever node
    asks; enrolling again resets both; the secret never shows in the record's repr."""
    store, other = two
    await store.add_user(UserRecord("erin"))
    assert await store.set_login_policy("erin", "publickey+totp,password+totp")
    assert not await store.set_login_policy("nobody", "password")
    assert await store.set_totp("erin", "JBSWY3DPEHPK3PXP", ["h1", "h2"])
    user = await other.get_user("erin")
    assert user is not None and user.login_policy == "publickey+totp,password+totp"
    assert user.totp_secret == "JBSWY3DPEHPK3PXP" and user.recovery_codes == 2
    assert "JBSWY3DPEHPK3PXP" not in repr(user)
    assert await store.use_totp_step("erin", 100)
    assert not await other.use_totp_step("erin", 100)  # replayed on the other node
    assert not await other.use_totp_step("erin", 99)  # an older code after a newer one
    assert await other.use_totp_step("erin", 101)
    assert await store.use_recovery_code("erin", "h1")
    assert not await other.use_recovery_code("erin", "h1")
    assert not await other.use_recovery_code("erin", "h3")
    assert (await store.get_user("erin")).recovery_codes == 1  # type: ignore[union-attr]
    assert await store.set_totp("erin", "KRSXG5CTMVRXEZLU", ["h9"])  # enrol again
    assert await other.use_totp_step("erin", 50)
    assert not await store.use_recovery_code("erin", "h2")
    assert await store.set_totp("erin", None, [])
    assert await store.set_login_policy("erin", None)
    user = await other.get_user("erin")
    assert user is not None and user.totp_secret is None and user.recovery_codes == 0
    assert user.login_policy is None
    assert not await store.set_totp("nobody", "X", [])
    assert await store.delete_user("erin")  # the codes go with the user


async def test_access_roundtrip(two: tuple[Store, Store]) -> None:
    store, other = two
    first = AccessRecord("list,upload", (("/drop", "upload"),), ("10.0.0.0/8",), None, 5, 0)
    await store.add_user(UserRecord("carol", access=first))
    await store.add_user(UserRecord("dave"))
    assert (await other.get_user("carol")).access == first  # type: ignore[union-attr]
    assert (await other.get_user("dave")).access == AccessRecord()  # type: ignore[union-attr]
    second = AccessRecord(
        "list,download",
        (("/a", "all"), ("/b/c", "none")),
        ("127.0.0.1/32", "::1/128"),
        1_900_000_000.5,
        2 << 20,
        4 << 20,
    )
    assert await store.set_access("carol", second)
    assert not await store.set_access("nobody", second)
    assert await other.get_access(["carol", "dave", "nobody"]) == {
        "carol": second,
        "dave": AccessRecord(),
    }
    assert await other.get_access([]) == {}
    assert [u.access for u in await other.list_users()] == [second, AccessRecord()]
    assert await store.delete_user("carol")  # its path overrides go with it
    assert await store.get_access(["carol"]) == {}
    await store.add_user(UserRecord("carol"))
    assert (await other.get_user("carol")).access == AccessRecord()  # type: ignore[union-attr]


async def test_reservations_from_two_nodes_never_overshoot(two: tuple[Store, Store]) -> None:
    a, b = two
    await a.add_user(UserRecord("q", quota_bytes=10_000))
    grants = await asyncio.gather(
        *(s.reserve("q", f"h{i}", 700, 1, 0) for i, s in enumerate([a, b] * 15))
    )
    assert sum(grants) <= 10_000 and sum(grants) >= 10_000 - 700
    usage = await b.usage("q", 0)
    assert usage is not None and usage.reserved == sum(grants)
    assert await a.reserve("q", "h0", 700, 700, 0) == 0  # not even ``need`` fits
    await a.apply("q", "h0", used=500, files=1, reserved=-grants[0])
    usage = await b.usage("q", 0)
    assert usage is not None and (usage.used, usage.files) == (500, 1)
    assert usage.reserved == sum(grants) - grants[0]


async def test_room_wanted_is_seen_by_every_node(two: tuple[Store, Store]) -> None:
    """A claim waiting for room says so; every node's holders see ``wanted`` change. Room
    other holders reserved never refuses a new file: only ``used`` does."""
    a, b = two
    await a.add_user(UserRecord("w", quota_bytes=1000, max_files=5))
    assert await a.reserve("w", "h1", 1000, 1000, 0) == 1000
    before = await b.usage("w", 0)
    assert before is not None and before.wanted == 0
    await b.want_room("w")
    after = await a.usage("w", 0)
    assert after is not None and after.wanted > before.wanted
    assert await b.create_file("w", 0) is None  # 0 used, 1000 reserved by h1
    await a.apply("w", "h1", used=1000, reserved=-1000)
    assert await b.create_file("w", 0) == "quota"


async def test_file_count_limit_and_scan_guard(two: tuple[Store, Store]) -> None:
    a, b = two
    await a.add_user(UserRecord("f", quota_bytes=0, max_files=3))
    results = await asyncio.gather(*(s.create_file("f", 0) for s in [a, b] * 3))
    assert results.count(None) == 3 and results.count("files") == 3
    before = await a.usage("f", 0)
    assert before is not None
    await b.reserve("f", "busy", 10, 1, 0)
    assert not await a.set_usage("f", 1, 1, before.activity)  # a reservation is outstanding
    await b.drop_holder("busy")
    assert await a.dirty_users() == ["f"]
    after = await a.usage("f", 0)
    assert after is not None
    assert not await a.set_usage("f", 1, 1, before.activity)  # something moved since
    assert await a.set_usage("f", 1, 1, after.activity)
    assert await a.dirty_users() == []


async def test_defender_counts_blocks_and_forgets(two: tuple[Store, Store]) -> None:
    a, b = two
    now = 1_000_000.0
    strikes = [await s.record_failure("10.0.0.1", now, 60, 3, 300) for s in (a, b, a)]
    assert [s.failures for s in strikes] == [1, 2, 3]
    assert [s.newly_banned for s in strikes] == [False, False, True]
    assert strikes[-1].banned_until == now + 300
    again = await b.record_failure("10.0.0.1", now + 1, 60, 3, 300)
    assert not again.newly_banned and again.banned_until == now + 300  # logged once
    bans = await a.bans(now + 2)
    assert [(x.addr, x.banned_until) for x in bans] == [("10.0.0.1", now + 300)]
    fresh = await a.record_failure("10.0.0.2", now, 60, 3, 300)
    later = await a.record_failure("10.0.0.2", now + 120, 60, 3, 300)  # window passed
    assert (fresh.failures, later.failures) == (1, 1)
    assert await b.unban("10.0.0.1") and not await b.unban("10.9.9.9")
    assert await a.admit("z", "h", "10.0.0.1", 0, now + 2) == "ok"  # no longer blocked


async def test_connection_limits_hold_across_nodes(two: tuple[Store, Store]) -> None:
    a, b = two
    opened = await asyncio.gather(
        *(s.admit(f"c{i}", f"h{i % 2}", "1.2.3.4", 5, 1.0) for i, s in enumerate([a, b] * 6))
    )
    assert opened.count("ok") == 5 and opened.count("full") == 7
    ids = [f"c{i}" for i, ok in enumerate(opened) if ok == "ok"]
    sessions = await asyncio.gather(
        *(s.start_session(cid, "u", 3) for cid, s in zip(ids, [a, b] * 3, strict=False))
    )
    assert sessions.count(True) == 3
    for cid in ids:
        await a.close_connection(cid)
    assert await b.admit("again", "h0", "1.2.3.4", 5, 1.0) == "ok"
    await a.heartbeat("h0", 5.0)
    assert (await b.holders_seen())["h0"] == 5.0
    assert set(await b.holders()) >= {"h0"}
    await b.drop_holder("h0")
    assert "h0" not in await a.holders_seen()
    assert await a.admit("x", "h1", "1.2.3.4", 1, 1.0) == "ok"  # h0's row went with it
    await a.record_failure("6.6.6.6", 10.0, 60, 1, 300)
    assert await b.admit("y", "h1", "6.6.6.6", 0, 20.0) == "blocked"
    assert await b.admit("y", "h1", "6.6.6.6", 0, 400.0) == "ok"  # the block ran out


async def test_reopening_keeps_data_and_schema(url: str) -> None:
    store = await open_store(url)
    await store.add_user(UserRecord("bob"))
    await store.close()
    store = await open_store(url)
    assert [u.name for u in await store.list_users()] == ["bob"]
    await store.close()


async def test_nodes_starting_at_once_migrate_once(pg_url: str) -> None:
    stores = await asyncio.gather(*(open_store(pg_url) for _ in range(4)))
    import asyncpg

    conn = await asyncpg.connect(pg_url)
    try:
        versions = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in versions] == list(range(1, len(POSTGRES_STEPS) + 1))
    for s in stores:
        await s.close()


async def test_unreachable_postgres_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(StoreError, match="cannot open database") as exc:
        await open_store("postgresql://sftpd:hunter2@127.0.0.1:1/nowhere")
    assert "hunter2" not in str(exc.value)


async def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        await open_store(str(path))


async def test_unknown_url_scheme(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unsupported"):
        await open_store("mysql://x")


async def test_folders_mounts_and_their_ledger_accounts(two: tuple[Store, Store]) -> None:
    store, other = two
    await store.add_user(UserRecord("erin"))
    await store.add_folder(FolderRecord("team", "/srv/team", 1000, 10))
    for dup in (FolderRecord("team", "/srv/x"), FolderRecord("x", "/srv/team")):
        with pytest.raises(StoreError, match="already exists"):
            await store.add_folder(dup)
    assert await other.get_folder("team") == FolderRecord("team", "/srv/team", 1000, 10)
    # The folder's usage is an ordinary ledger account, invisible among the users.
    account = folder_account("team")
    assert await other.reserve(account, "h1", 800, 800, 0) == 800
    assert await store.reserve(account, "h2", 300, 300, 0) == 0  # over the folder's quota
    await store.apply(account, "h1", used=700, reserved=-800)
    assert (await other.get_folder("team")).used_bytes == 700  # type: ignore[union-attr]
    assert [u.name for u in await other.list_users()] == ["erin"]
    assert await other.count_users() == 1 and await other.get_user(account) is None
    await store.mount("erin", "/team", "team")
    await store.mount("erin", "/shared/again", "team")
    with pytest.raises(StoreError, match="already has a folder at /team"):
        await store.mount("erin", "/team", "team")
    with pytest.raises(StoreError, match="no such folder"):
        await store.mount("erin", "/x", "nope")
    with pytest.raises(StoreError, match="no such user"):
        await store.mount("nobody", "/x", "team")
    assert (await other.get_user("erin")).mounts == (  # type: ignore[union-attr]
        Mount("/shared/again", "team", "/srv/team"),
        Mount("/team", "team", "/srv/team"),
    )
    assert await store.unmount("erin", "/shared/again")
    assert not await store.unmount("erin", "/shared/again")
    assert [f.name for f in await other.list_folders()] == ["team"]
    assert await store.delete_folder("team") and not await store.delete_folder("team")
    assert (await other.get_user("erin")).mounts == ()  # type: ignore[union-attr]
    assert await other.usage(account, 0) is None


# -- the outbox and history ------------------------------------------------------------


def _event(user: str, name: str = "upload", path: str = "/a", at: float | None = None) -> NewEvent:
    e = Event(name, user, path=path, time=at if at is not None else time.time())
    return NewEvent(e.to_dict(), (("h1", "hook one"), ("h2", "hook two")))


@pytest.mark.parametrize(
    ("root", "path", "target", "local_path", "local_target", "derived"),
    [
        ("/srv/homes/ana", "/a/b.txt", "", "/srv/homes/ana/a/b.txt", "", True),
        ("/srv/team", "/team/x", "/team/y/z", "/srv/team/x", "/srv/team/y/z", True),  # folder
        ("/srv/homes/ana", "/", "", "/srv/homes/ana", "", True),
        ("/srv/homes/ana", "/a", "", "/elsewhere/a", "", False),  # kept as it is
        ("/srv/homes/ana", "/a", "/b", "/srv/homes/ana/a", "/other/b", False),
    ],
)
def test_a_stored_event_keeps_its_server_paths_without_storing_them_twice(
    root: str, path: str, target: str, local_path: str, local_target: str, derived: bool
) -> None:
    e = Event("rename", "ana", path=path, target=target, local_path=local_path,
              local_target=local_target, local_root=root)  # fmt: skip
    row = packed(NewEvent(e.to_dict()))
    assert unpacked(row) == e.to_dict()
    assert ("local_path" not in row[5]) is derived


async def test_events_are_claimed_by_one_node_at_a_time(two: tuple[Store, Store]) -> None:
    a, b = two
    await a.record_events([_event("ana", path=f"/f{i}") for i in range(10)])
    now = time.time()
    got_a, got_b = await asyncio.gather(
        a.claim_deliveries("h1", "node-a", now, 3600, 6),
        b.claim_deliveries("h1", "node-b", now, 3600, 6),
    )
    seqs = [c.seq for c in got_a] + [c.seq for c in got_b]
    assert len(seqs) == 10 and len(set(seqs)) == 10  # all taken, none twice
    assert await a.claim_deliveries("h1", "node-a", now, 30, 10) == []  # leased
    assert len(await a.claim_deliveries("h2", "node-a", now, 30, 10)) == 10  # per hook
    first = got_a[0]
    assert first.attempts == 1 and first.data["user"] == "ana" and first.data["id"]
    await a.finish_delivery(first.seq, "h1", "pending", now + 60, "HTTP 503", now)
    await a.finish_delivery(got_a[1].seq, "h1", "delivered", now, "", now)
    await a.finish_delivery(got_a[2].seq, "h1", "dead", now, "HTTP 400", now)
    assert await b.hurry_deliveries("h1", now + 1) == 1  # the receiver is back
    assert [c.seq for c in await b.claim_deliveries("h1", "node-b", now + 1, 30, 10)] == [first.seq]
    await a.finish_delivery(first.seq, "h1", "pending", now + 60, "HTTP 503", now)
    later = await b.claim_deliveries("h1", "node-b", now + 61, 30, 10)
    assert [c.seq for c in later] == [first.seq] and later[0].attempts == 3  # due again
    stats = await b.outbox_stats()
    assert (stats.delivered, stats.dead) == (1, 1) and stats.pending == 18
    assert stats.by_hook["hook one"] == (8, 1, 1) and stats.oldest_pending is not None


async def test_a_dead_holders_claims_are_released(two: tuple[Store, Store]) -> None:
    a, b = two
    await a.record_events([_event("ana")])
    now = time.time()
    [claimed] = await a.claim_deliveries("h1", "dead-node", now, 3600, 5)
    assert await b.claim_deliveries("h1", "node-b", now, 30, 5) == []
    await b.drop_holder("dead-node")
    [again] = await b.claim_deliveries("h1", "node-b", now, 30, 5)
    assert again.seq == claimed.seq and again.attempts == 1  # the cut-short one did not count


async def test_history_queries_retry_and_prune(two: tuple[Store, Store]) -> None:
    a, b = two
    old = time.time() - 100 * 86400
    await a.record_events(
        [_event("ana", "login", "", at=old), _event("ana", "upload", "/in/x", at=old)]
    )
    await a.record_events([_event("ben", "delete", "/in/y"), _event("ana", "rename", "/out/z")])
    everything = await b.query_events(EventQuery())
    assert [e.data["name"] for e in everything] == ["login", "upload", "delete", "rename"]
    assert [e.data["name"] for e in await b.query_events(EventQuery(user="ana", limit=2))] == [
        "upload",
        "rename",
    ]  # fmt: skip  (the newest two, oldest first)
    assert [e.data["path"] for e in await b.query_events(EventQuery(path_prefix="/in/"))] == [
        "/in/x", "/in/y"]  # fmt: skip
    recent = await b.query_events(EventQuery(since=time.time() - 3600, names=("delete",)))
    assert [e.data["user"] for e in recent] == ["ben"]
    shown = await b.get_event(everything[0].id)
    assert shown is not None and [d.label for d in shown.deliveries] == ["hook one", "hook two"]
    # Every delivery of the old login gone dead or delivered; the old upload still pending.
    now = time.time()
    for hook in ("h1", "h2"):
        for c in await a.claim_deliveries(hook, "n", now, 30, 100):
            if c.seq == everything[0].seq:
                await a.finish_delivery(c.seq, hook, "dead" if hook == "h1" else "delivered", now,
                                        "gone", now)  # fmt: skip
    assert [e.id for e in await b.query_events(EventQuery(state="dead"))] == [everything[0].id]
    assert await b.retry_deliveries(everything[0].id, now) == 1
    assert await b.query_events(EventQuery(state="dead")) == []
    await a.finish_delivery(everything[0].seq, "h1", "dead", now, "gone again", now)
    assert await b.prune_events(time.time() - 90 * 86400) == 1  # the login, not the pending upload
    assert [e.data["name"] for e in await b.query_events(EventQuery())] == ["upload", "delete",
                                                                          "rename"]  # fmt: skip
