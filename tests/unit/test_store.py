"""The SQLite store, directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftpd.store import KeyRecord, StoreError, UserRecord, open_store

KEY = KeyRecord("SHA256:abc", "ssh-ed25519", "ssh-ed25519 AAAA", "me@host")


async def test_users_and_keys_roundtrip(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/s.db")
    try:
        await store.add_user(UserRecord("alice", "hash", 1000, keys=(KEY,)))
        user = await store.get_user("alice")
        assert user is not None and user.keys == (KEY,) and user.quota_bytes == 1000
        with pytest.raises(StoreError, match="already exists"):
            await store.add_user(UserRecord("alice"))
        with pytest.raises(StoreError, match="already has key"):
            await store.add_key("alice", KEY)
        with pytest.raises(StoreError, match="no such user"):
            await store.add_key("bob", KEY)
        assert await store.set_disabled("alice", True)
        assert not await store.set_disabled("bob", True)
        assert await store.delete_key("alice", KEY.fingerprint)
        assert (await store.get_user("alice")).keys == ()  # type: ignore[union-attr]
        await store.add_key("alice", KEY)
        assert await store.delete_user("alice")
        assert await store.get_user("alice") is None
        assert await store.count_users() == 0
    finally:
        await store.close()


async def test_reopening_keeps_data_and_schema(tmp_path: Path) -> None:
    url = str(tmp_path / "s.db")
    store = await open_store(url)
    await store.add_user(UserRecord("bob"))
    await store.close()
    store = await open_store(url)
    assert [u.name for u in await store.list_users()] == ["bob"]
    await store.close()


async def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        await open_store(str(path))


async def test_unknown_url_scheme(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unsupported"):
        await open_store("mysql://x")
