"""SCP's own protocol (``scp -t`` / ``scp -f``) as clients other than OpenSSH's scp see it:
a size that cannot fit is refused in the answer to its header, before any data (libssh2
reads only that answer), nothing partial is left, and the exit status says what happened
as OpenSSH's scp says it (issue 29). Side by side with a real OpenSSH sshd where the
answer is OpenSSH's to give."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import asyncssh

from sftpd.reconcile import scan_user
from tests.support.live import LiveServer, OpenSSHServer, User, assert_exact

MiB = 1024 * 1024


async def sink(
    conn: asyncssh.SSHClientConnection, command: str, *files: tuple[str, bytes]
) -> tuple[list[bytes], int | None]:
    """Play a libssh2-like source: send each file's C line and its data only if the line
    was answered with 0. The answers received, and the exit status."""
    async with conn.create_process(command, encoding=None) as proc:
        answers = [await proc.stdout.read(1)]
        for name, data in files if answers[0] == b"\0" else ():
            proc.stdin.write(f"C0644 {len(data)} {name}\n".encode())
            answer = await proc.stdout.read(1)
            if answer != b"\0":
                answer += await proc.stdout.readline()
                answers.append(answer)
                continue
            proc.stdin.write(data + b"\0")
            answer = await proc.stdout.read(1)
            if answer != b"\0":
                answer += await proc.stdout.readline()
            answers.append(answer)
        proc.stdin.write_eof()
        await proc.wait()
        return answers, proc.exit_status


async def test_a_size_that_cannot_fit_is_refused_before_its_data(live_server: LiveServer) -> None:
    user = live_server.add_user(quota=4 * MiB)
    async with live_server.connect(user) as conn:
        answers, status = await sink(conn, "scp -t big.bin", ("big.bin", os.urandom(5 * MiB)))
        assert answers[0] == b"\0"
        assert answers[1].startswith(b"\x01scp: big.bin: quota exceeded: 0 B used of 4.0 MiB")
        assert status == 1
        assert os.listdir(user.home) == []
        assert_exact(live_server, user)
        # One that fits, after one that does not: the first is refused, the second lands.
        small = os.urandom(1000)
        answers, status = await sink(
            conn, "scp -t .", ("a.bin", os.urandom(4 * MiB + 1)), ("b.bin", small)
        )
        assert [a[:1] for a in answers] == [b"\0", b"\x01", b"\0"]
        assert status == 1
        assert sorted(os.listdir(user.home)) == ["b.bin"]
        assert (user.home / "b.bin").read_bytes() == small
        answers, status = await sink(conn, "scp -t c.bin", ("c.bin", small))
        assert answers == [b"\0", b"\0"] and status == 0
    assert_exact(live_server, user)


async def test_the_reservation_holds_the_room_while_the_data_comes(
    live_server: LiveServer,
) -> None:
    """Two sinks whose files fit only one at a time: the second is refused at its header,
    not after the first one's data took the room."""
    user = live_server.add_user(quota=3 * MiB)
    async with live_server.connect(user) as conn:
        first = await conn.create_process("scp -t one.bin", encoding=None)
        assert await first.stdout.read(1) == b"\0"
        first.stdin.write(f"C0644 {2 * MiB} one.bin\n".encode())
        assert await first.stdout.read(1) == b"\0"  # 2 MiB reserved, no data sent yet
        answers, status = await sink(conn, "scp -t two.bin", ("two.bin", os.urandom(2 * MiB)))
        assert answers[1].startswith(b"\x01scp: two.bin: quota exceeded") and status == 1
        data = os.urandom(2 * MiB)
        first.stdin.write(data + b"\0")
        assert await first.stdout.read(1) == b"\0"
        first.stdin.write_eof()
        await first.wait()
        assert first.exit_status == 0
    assert (user.home / "one.bin").read_bytes() == data
    assert os.listdir(user.home) == ["one.bin"]
    assert_exact(live_server, user)


def test_openssh_scp_over_quota_leaves_nothing_and_keeps_the_old_file(
    live_server: LiveServer, tmp_path: Path
) -> None:
    user = live_server.add_user(quota=3 * MiB)
    old = os.urandom(MiB)
    (user.home / "f.bin").write_bytes(old)
    live_server.call(scan_user(live_server.service.store, live_server.settings, user.name))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5 * MiB))
    for name in ("new.bin", "f.bin"):
        result = live_server.scp("-O", str(big), live_server.remote(user, name))
        assert result.returncode == 1, result
        assert result.stderr.count("quota exceeded") == 1, result.stderr  # one line, not two
    assert os.listdir(user.home) == ["f.bin"]
    assert (user.home / "f.bin").read_bytes() == old
    assert_exact(live_server, user)


async def test_exit_statuses_are_openssh_s(
    live_server: LiveServer, openssh_server: OpenSSHServer, tmp_path: Path
) -> None:
    """``scp -t`` and ``scp -f`` run by hand on both servers: the same exit status."""
    user = live_server.add_user(quota=2 * MiB)
    theirs = openssh_server.root / tmp_path.name
    theirs.mkdir()
    cases = [
        ("scp -t nodir/x.bin", [("x.bin", b"abc")]),  # a missing directory
        ("scp -t x.bin", [("x.bin", b"abc")]),  # fine
        ("scp -d -t x.bin", [("x.bin", b"abc")]),  # -d: the target must be a directory
        ("scp -f nothing.bin", []),  # a missing file
        ("scp -f x.bin", []),  # fine (it is x.bin, made above)
    ]
    ours_conn = await live_server.connect(user)
    theirs_conn = await asyncssh.connect(
        "127.0.0.1", openssh_server.port, username=openssh_server.user,
        client_keys=[str(openssh_server.key)], known_hosts=str(openssh_server.known_hosts),
        agent_path=None,
    )  # fmt: skip
    try:
        for command, files in cases:
            statuses = []
            for conn, cwd in ((ours_conn, ""), (theirs_conn, f"cd {theirs} && ")):
                if " -f " in command:
                    statuses.append(await source_status(conn, cwd + command))
                else:
                    statuses.append((await sink(conn, cwd + command, *files))[1])
            assert statuses[0] == statuses[1], (command, statuses)
            assert statuses[0] == (0 if command in ("scp -t x.bin", "scp -f x.bin") else 1)
    finally:
        ours_conn.close()
        theirs_conn.close()
    assert_exact(live_server, user)


async def source_status(conn: asyncssh.SSHClientConnection, command: str) -> int | None:
    """Play a sink that accepts everything; the exit status of ``scp -f``."""
    async with conn.create_process(command, encoding=None) as proc:

        def ack() -> None:  # the source may have ended (a missing file): the status tells
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(b"\0")

        ack()
        while line := await proc.stdout.readline():
            if line[:1] == b"C":
                size = int(line.split()[1])
                ack()
                await proc.stdout.readexactly(size + 1)
            ack()
        await proc.wait()
        return proc.exit_status


def test_patterns_and_trees_come_down(live_server: LiveServer, user: User, tmp_path: Path) -> None:
    """``scp -f`` expands patterns itself (there is no shell) and sends trees with -r -p."""
    d = user.home / "d"
    (d / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "c.bin", ".h.txt", "sub/e.txt"):
        (d / name).write_bytes(name.encode() * 100)
    os.utime(d / "a.txt", (1_600_000_000, 1_600_000_000))
    got = tmp_path / "got"
    got.mkdir()
    result = live_server.scp("-O", "-p", live_server.remote(user, "d/*.txt"), str(got))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(got)) == ["a.txt", "b.txt"]  # not .h.txt, as a shell would
    assert os.stat(got / "a.txt").st_mtime == 1_600_000_000
    result = live_server.scp("-O", "-r", live_server.remote(user, "d"), str(tmp_path / "tree"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tree" / "sub" / "e.txt").read_bytes() == b"sub/e.txt" * 100
    result = live_server.scp("-O", live_server.remote(user, "d/*.none"), str(got))
    assert result.returncode == 1 and "no such file" in result.stderr.lower()


async def test_absurd_sizes_and_names_are_refused(live_server: LiveServer, user: User) -> None:
    """A size past what the store counts is refused like one over the quota; a name that is
    not one path component ends the exchange; nothing is left behind either way."""
    async with live_server.connect(user) as conn:
        for header, answer in (
            (f"C0644 {1 << 63} huge.bin\n", b"\x01scp: ./huge.bin: file too large\n"),
            ("C0644 3 ../up.bin\n", b"\x02scp: protocol error: bad name or size: '../up.bin'\n"),
            ("C0644 -3 neg.bin\n", b"\x02scp: protocol error: bad name or size: 'neg.bin'\n"),
            ("Cxyz 3 bad.bin\n", b"\x02scp: protocol error: bad file line\n"),
        ):
            async with conn.create_process("scp -t .", encoding=None) as proc:
                assert await proc.stdout.read(1) == b"\0"
                proc.stdin.write(header.encode())
                assert await proc.stdout.readline() == answer
                proc.stdin.write_eof()
                await proc.wait()
                assert proc.exit_status == 1
    assert os.listdir(user.home) == []
    assert_exact(live_server, user)


def test_patterns_do_not_look_inside_what_the_rules_hide(
    live_server: LiveServer, tmp_path: Path
) -> None:
    user = live_server.add_user()
    (user.home / "secret").mkdir()
    (user.home / "secret" / "hidden-name.txt").write_text("s")
    live_server.set_access(user, paths=(("/secret", "none"),))
    got = tmp_path / "got"
    got.mkdir()
    for pattern in ("secret/*", "secret/hidden-*"):
        result = live_server.scp("-O", live_server.remote(user, pattern), str(got))
        assert result.returncode == 1, result
        assert "hidden-name" not in result.stderr
    # A name the user typed: the same answer whether it exists or not.
    answers = [
        live_server.scp("-O", live_server.remote(user, f"*/{name}"), str(got)).stderr
        for name in ("hidden-name.txt", "other-name.txt")
    ]
    assert answers[0].replace("hidden", "other") == answers[1]
    assert "nothing is allowed in /secret" in answers[0]
    assert os.listdir(got) == []


async def test_libssh2_s_missing_status_byte_keeps_the_whole_file(
    live_server: LiveServer, user: User
) -> None:
    """libssh2 (curl's scp://) sends no status byte after the data, only EOF: every byte
    announced arrived, so the file is kept and the exit status is 0."""
    async with live_server.connect(user) as conn:
        async with conn.create_process("scp -t whole.bin", encoding=None) as proc:
            assert await proc.stdout.read(1) == b"\0"
            proc.stdin.write(b"C0644 5 whole.bin\n")
            assert await proc.stdout.read(1) == b"\0"
            proc.stdin.write(b"hello")
            proc.stdin.write_eof()
            await proc.wait()
            assert proc.exit_status == 0
        async with conn.create_process("scp -t short.bin", encoding=None) as proc:
            assert await proc.stdout.read(1) == b"\0"
            proc.stdin.write(b"C0644 5 short.bin\nhel")  # less than announced, then EOF
            proc.stdin.write_eof()
            await proc.wait()
            assert proc.exit_status == 1
    assert (user.home / "whole.bin").read_bytes() == b"hello"
    assert sorted(os.listdir(user.home)) == ["whole.bin"]
    assert_exact(live_server, user)


async def test_hostile_times_depths_and_rights_end_cleanly(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """Found by the hostile review: a negative T time broke every listing of the directory,
    a huge one and a tree 480 levels deep left the channel hanging, and -p without
    ``chtimes`` failed without a word."""
    user = live_server.add_user()
    async with live_server.connect(user) as conn:
        for t in (b"T-5 0 -5 0\n", b"T99999999999999999999 0 1 0\n"):
            async with conn.create_process("scp -p -t .", encoding=None) as proc:
                assert await proc.stdout.read(1) == b"\0"
                proc.stdin.write(t + b"C0644 5 t.txt\nhello\0")
                line = await asyncio.wait_for(proc.stdout.readline(), 10)
                assert line == b"\x02scp: protocol error: time out of range\n"
                await asyncio.wait_for(proc.wait(), 10)
                assert proc.exit_status == 1
        async with conn.create_process("scp -r -t .", encoding=None) as proc:
            assert await proc.stdout.read(1) == b"\0"
            proc.stdin.write(b"D0755 0 d\n" * 200)
            out = await asyncio.wait_for(proc.stdout.read(), 20)
            assert b"nested deeper than 128" in out
            await asyncio.wait_for(proc.wait(), 10)
            assert proc.exit_status == 1
        os.utime(user.home / "d", (-5, -5))  # as if put there by other means
        async with conn.start_sftp_client() as sftp:
            assert "d" in await sftp.listdir(".")
            assert (await sftp.stat("d")).mtime == 0
    live_server.set_access(user, permissions="list,download,upload,overwrite,mkdir")
    src = tmp_path / "s.txt"
    src.write_text("s")
    result = live_server.scp("-O", "-p", str(src), live_server.remote(user, "p.txt"))
    assert result.returncode == 1 and "p.txt: permission denied" in result.stderr, result
    assert (user.home / "p.txt").read_text() == "s"
