"""xfer against a server that lies: listings with names that climb (``../x``) or nest
(``a/b``). A real asyncssh SFTP server, changed only in what its listings say."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.support import Xfer, keypair

BAD_NAMES = (b"../escaped", b"nested/../../escaped", b"..")


class HostileSFTP(asyncssh.SFTPServer):
    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        async for name in super().scandir(path):
            yield name
        attrs = asyncssh.SFTPAttrs(permissions=0o100644, size=7)  # a regular file, in SFTP v3
        for bad in BAD_NAMES:
            yield asyncssh.SFTPName(bad, attrs=attrs)


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Xfer]:
    root = tmp_path / "srv"
    (root / "d").mkdir(parents=True)
    (root / "d" / "ok.txt").write_text("fine\n")
    (root / "escaped").write_text("stolen\n")
    host = asyncssh.generate_private_key("ssh-ed25519")
    client = keypair(tmp_path)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def listen() -> asyncssh.SSHAcceptor:
        return await asyncssh.create_server(
            asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[host],
            authorized_client_keys=str(client.with_suffix(".pub")),
            sftp_factory=lambda chan: HostileSFTP(chan, chroot=bytes(root)),
        )  # fmt: skip

    server = asyncio.run_coroutine_threadsafe(listen(), loop).result(timeout=30)
    port = server.sockets[0].getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host.export_public_key().decode()}")
    try:
        yield Xfer(tmp_path, f"me@127.0.0.1:{port}", client, known)
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)


def test_get_recursive_ignores_names_that_climb(hostile: Xfer, tmp_path: Path) -> None:
    (tmp_path / "back").mkdir()
    r = hostile("get", "-r", "/d", "back", "--no-verify")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back" / "d" / "ok.txt").read_text() == "fine\n"
    landed = [p for p in tmp_path.rglob("*escaped*") if p.relative_to(tmp_path).parts[0] != "srv"]
    assert landed == [], landed
    assert "not a plain name" in r.stderr
