"""Checksum exec commands against coreutils, rclone's sftp backend and paramiko's check-file."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from pathlib import Path

import paramiko
import pytest

from tests.support.live import LiveServer, User, require_binary

pytestmark = pytest.mark.interop
COMMANDS = ["md5sum", "sha1sum", "sha256sum", "sha512sum"]
NAMES = ["plain.bin", "with space.txt", "back\\slash.txt", "new\nline.txt", "ünïcode.txt"]


@pytest.fixture
def files(user: User) -> User:
    for i, name in enumerate(NAMES):
        (user.home / name).write_bytes(os.urandom(1000 * i + 1))
    (user.home / "empty").write_bytes(b"")
    (user.home / "sub").mkdir()
    (user.home / "sub" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    return user


@pytest.mark.parametrize("command", COMMANDS)
def test_output_matches_coreutils_byte_for_byte(
    live_server: LiveServer, files: User, command: str
) -> None:
    names = [*NAMES, "empty", "sub/big.bin", "./sub/../plain.bin"]
    ours = live_server.ssh(files, command, *map(shlex.quote, names))
    theirs = subprocess.run([command, *names], cwd=files.home, capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_stdin_is_hashed_like_coreutils(live_server: LiveServer, user: User, command: str) -> None:
    for data in ("", "some data\n"):
        for args in ((), ("-",)):
            ours = live_server.ssh(user, command, *args, input=data)
            theirs = subprocess.run([command, *args], input=data, capture_output=True, text=True)
            assert (ours.returncode, ours.stdout) == (0, theirs.stdout)
    assert live_server.ssh(user, "md5sum").stdout == "d41d8cd98f00b204e9800998ecf8427e  -\n"


def test_errors_are_coreutils_like_and_confined(
    live_server: LiveServer, files: User, outside: Path
) -> None:
    os.symlink(outside / "secret.txt", files.home / "evil")
    result = live_server.ssh(files, "md5sum", "nope", "plain.bin", "sub", "evil",
                             "../../outside/secret.txt")  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "md5sum: nope: No such file or directory",
        "md5sum: sub: Is a directory",
        "md5sum: evil: Permission denied",
        "md5sum: ../../outside/secret.txt: No such file or directory",
    ]
    secret = hashlib.md5((outside / "secret.txt").read_bytes()).hexdigest()
    assert secret not in result.stdout
    assert result.stdout.endswith("  plain.bin\n")
    assert live_server.ssh(files, "md5sum", "--bogus").returncode == 1


def test_absolute_paths_and_backslash_escapes_as_rclone_sends_them(
    live_server: LiveServer, files: User
) -> None:
    result = live_server.ssh(files, "md5sum /with\\ space.txt")
    expected = hashlib.md5((files.home / "with space.txt").read_bytes()).hexdigest()
    assert result.stdout == f"{expected}  /with space.txt\n"


@pytest.fixture
def rclone_conf(live_server: LiveServer, tmp_path: Path, files: User) -> Path:
    require_binary("rclone")
    conf = tmp_path / "rclone.conf"
    conf.write_text(
        "[s]\ntype = sftp\nhost = 127.0.0.1\n"
        f"user = {files.name}\nport = {live_server.port}\nkey_file = {live_server.client_key}\n"
        f"known_hosts_file = {live_server.known_hosts}\n"
    )
    return conf


def rclone(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rclone", "--config", str(conf), "--low-level-retries", "1", "--retries", "1", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_rclone_md5sum_and_check(
    live_server: LiveServer, files: User, rclone_conf: Path, tmp_path: Path
) -> None:
    out = rclone(rclone_conf, "md5sum", "s:sub")
    assert out.returncode == 0, out.stderr
    big = hashlib.md5((files.home / "sub" / "big.bin").read_bytes()).hexdigest()
    assert out.stdout == f"{big}  big.bin\n"
    local = tmp_path / "local"
    local.mkdir()
    for name in ("a.txt", "odd size.bin", "b.bin"):
        (local / name).write_bytes(os.urandom(40_000 + len(name)))  # not a multiple of 32 KiB
    up = rclone(rclone_conf, "copy", str(local), "s:synced")
    assert up.returncode == 0, up.stderr
    check = rclone(rclone_conf, "check", str(local), "s:synced")
    assert check.returncode == 0, check.stderr
    assert "0 differences found" in check.stderr
    assert "hash" not in check.stderr.lower() or "unsupported" not in check.stderr.lower()
    (files.home / "synced" / "b.bin").write_bytes(os.urandom(40_005))  # same size, new bytes
    check = rclone(rclone_conf, "check", str(local), "s:synced")
    assert check.returncode != 0 and "1 differences found" in check.stderr


def test_paramiko_check_file(live_server: LiveServer, files: User) -> None:
    transport = paramiko.Transport(("127.0.0.1", live_server.port))
    try:
        key = paramiko.Ed25519Key.from_private_key_file(str(live_server.client_key))
        transport.connect(username=files.name, pkey=key)
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        data = (files.home / "sub" / "big.bin").read_bytes()
        with sftp.open("sub/big.bin", "rb") as f:
            for alg in ("md5", "sha1", "sha256", "sha512"):
                assert f.check(alg) == hashlib.new(alg, data).digest()
            assert f.check("sha256", 1000, 5000) == hashlib.sha256(data[1000:6000]).digest()
            blocks = f.check("md5", 0, 0, 1024 * 1024)
            expected = b"".join(
                hashlib.md5(data[i : i + 1024 * 1024]).digest()
                for i in range(0, len(data), 1024 * 1024)
            )
            assert blocks == expected
        sftp.close()
    finally:
        transport.close()
