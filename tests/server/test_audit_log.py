"""The audit log of a live server, fed hostile names: one record is one line."""

from __future__ import annotations

import asyncssh
import pytest

from sftpd.logs import JsonFormatter, TextFormatter
from tests.support.live import LiveServer

FORGED = "2026-01-01T00:00:00 info sftpd.audit: login accepted user=root"


async def test_a_directory_name_cannot_forge_an_audit_line(live_server: LiveServer) -> None:
    user = live_server.add_user()
    live_server.set_access(user, permissions="list,download,upload,mkdir")
    directory = "/d\n" + FORGED
    async with live_server.connect(user) as conn, conn.start_sftp_client() as sftp:
        await sftp.mkdir(directory)
        async with sftp.open(f"{directory}/f.txt", "wb") as f:
            await f.write(b"x")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.remove(f"{directory}/f.txt")
    [refused] = await live_server.logs.wait_events("permission", 1, user=user.name)
    assert FORGED in refused["reason"]  # the name reached the log, escaped
    records = list(live_server.logs.records)
    for fmt in (TextFormatter(), JsonFormatter()):
        rendered = [fmt.format(r) for r in records if not r.exc_info]
        assert [line for line in rendered if len(line.splitlines()) != 1] == []
    assert not [x for x in live_server.logs.text().splitlines() if x.startswith(FORGED)]
