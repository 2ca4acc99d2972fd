"""The real OpenSSH clients (sftp -b, scp in SFTP and legacy mode, ssh) against sftpd."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.live import LiveServer, User, require_binary

pytestmark = pytest.mark.interop


@pytest.fixture(autouse=True)
def _clients() -> None:
    for name in ("sftp", "scp", "ssh"):
        require_binary(name)


@pytest.fixture
def local(tmp_path: Path) -> Path:
    d = tmp_path / "local"
    d.mkdir()
    (d / "small.txt").write_text("hello sftpd\n")
    (d / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 123))
    tree = d / "tree" / "sub"
    tree.mkdir(parents=True)
    (d / "tree" / "a.txt").write_text("a")
    (tree / "b.bin").write_bytes(os.urandom(70000))
    return d


def ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return str(result.stdout)


def test_sftp_put_get_ls_and_friends(live_server: LiveServer, user: User, local: Path) -> None:
    out = ok(
        live_server.sftp(
            user,
            f"""
            pwd
            mkdir docs
            cd docs
            put {local}/small.txt
            put {local}/big.bin
            ls -l
            get big.bin {local}/big.back
            rename small.txt renamed.txt
            chmod 600 renamed.txt
            ln -s renamed.txt soft
            ln renamed.txt hard
            ls -l
            rm hard
            mkdir empty
            rmdir empty
            cd ..
            df
            df -h
            pwd
            """,
        )
    )
    assert "Remote working directory: /" in out
    assert (local / "big.back").read_bytes() == (local / "big.bin").read_bytes()
    docs = user.home / "docs"
    assert (docs / "renamed.txt").read_text() == "hello sftpd\n"
    assert stat.S_IMODE((docs / "renamed.txt").stat().st_mode) == 0o600
    assert os.readlink(docs / "soft") == "renamed.txt"
    assert not (docs / "hard").exists() and not (docs / "empty").exists()
    assert "big.bin" in out and "Size" in out
    assert str(live_server.settings.data_dir) not in out


def test_sftp_reput_and_reget_resume(live_server: LiveServer, user: User, local: Path) -> None:
    data = (local / "big.bin").read_bytes()
    (user.home / "big.bin").write_bytes(data[:1_000_000])
    (local / "partial.bin").write_bytes(data[:2_500_000])
    ok(
        live_server.sftp(
            user,
            f"""
            reput {local}/big.bin big.bin
            reget big.bin {local}/partial.bin
            """,
        )
    )
    assert (user.home / "big.bin").read_bytes() == data
    assert (local / "partial.bin").read_bytes() == data


def test_sftp_recursive_put_and_get(live_server: LiveServer, user: User, local: Path) -> None:
    ok(live_server.sftp(user, f"put -r {local}/tree up\nget -r up {local}/down\n"))
    for rel in ("a.txt", "sub/b.bin"):
        assert (user.home / "up" / rel).read_bytes() == (local / "tree" / rel).read_bytes()
        assert (local / "down" / rel).read_bytes() == (local / "tree" / rel).read_bytes()


def test_sftp_large_request_size_downloads(
    live_server: LiveServer, user: User, local: Path
) -> None:
    """`sftp -B 262144` failed against bare asyncssh ("Received message too long")."""
    (user.home / "big.bin").write_bytes((local / "big.bin").read_bytes())
    ok(live_server.sftp(user, f"get big.bin {local}/b2\n", "-B", "262144"))
    assert (local / "b2").read_bytes() == (local / "big.bin").read_bytes()


def test_scp_tilde_paths_use_expand_path(live_server: LiveServer, user: User, local: Path) -> None:
    """OpenSSH 9 scp resolves ``~`` with expand-path@openssh.com."""
    ok(live_server.scp(str(local / "small.txt"), live_server.remote(user, "~/t.txt")))
    ok(live_server.scp(live_server.remote(user, "~/t.txt"), str(local / "t.back")))
    assert (user.home / "t.txt").read_text() == (local / "t.back").read_text() == "hello sftpd\n"


def test_sftp_cannot_leave_the_home(
    live_server: LiveServer, user: User, outside: Path, local: Path
) -> None:
    os.symlink(outside, user.home / "escape")
    result = live_server.sftp(user, "cd ../../..\npwd\nls -l\n")
    assert "Remote working directory: /" in ok(result)
    listing = live_server.sftp(user, "ls -l escape/\nls -l ../../\n")
    assert "secret.txt" not in listing.stdout
    for cmd in (
        "get escape/secret.txt",
        f"put {local}/small.txt escape/planted.txt",
        "get ../outside/secret.txt",
        "ln -s ../outside outlink",
        "rename escape/secret.txt stolen",
    ):
        result = live_server.sftp(user, cmd + "\n")
        assert result.returncode != 0, cmd
        assert "TOP SECRET" not in result.stdout
        assert str(outside) not in result.stdout + result.stderr
    assert not (outside / "planted.txt").exists()
    assert (outside / "secret.txt").read_text() == "TOP SECRET\n"


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-O"])
def test_scp_upload_download_recursive(
    live_server: LiveServer, user: User, local: Path, legacy: bool
) -> None:
    mode = ["-O"] if legacy else []
    ok(live_server.scp(*mode, str(local / "big.bin"), live_server.remote(user, "big.bin")))
    ok(live_server.scp(*mode, "-r", str(local / "tree"), live_server.remote(user, "tree")))
    ok(live_server.scp(*mode, live_server.remote(user, "big.bin"), str(local / "back.bin")))
    ok(live_server.scp(*mode, "-r", live_server.remote(user, "tree"), str(local / "tree2")))
    assert (user.home / "big.bin").read_bytes() == (local / "big.bin").read_bytes()
    assert (local / "back.bin").read_bytes() == (local / "big.bin").read_bytes()
    assert (local / "tree2" / "sub" / "b.bin").read_bytes() == (
        local / "tree" / "sub" / "b.bin"
    ).read_bytes()


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-O"])
def test_scp_cannot_leave_the_home(
    live_server: LiveServer, user: User, outside: Path, local: Path, legacy: bool
) -> None:
    mode = ["-O"] if legacy else []
    os.symlink(outside, user.home / "escape")
    for src in ("escape/secret.txt", "../outside/secret.txt", "/../../outside/secret.txt"):
        result = live_server.scp(*mode, live_server.remote(user, src), str(local / "got"))
        assert result.returncode != 0, src
        assert not (local / "got").exists()
    result = live_server.scp(*mode, str(local / "small.txt"), live_server.remote(user, "escape/x"))
    assert result.returncode != 0
    assert not (outside / "x").exists()


def test_ssh_exec_unknown_command_and_no_shell(live_server: LiveServer, user: User) -> None:
    result = live_server.ssh(user, "cat", "/etc/passwd")
    assert result.returncode == 127
    assert "cat: command not found" in result.stderr
    result = live_server.ssh(user)  # asks for a shell
    assert result.returncode == 1
    assert "root:" not in result.stdout
    assert f"you are logged in as {user.name}" in result.stderr
    assert "shell request failed" not in result.stderr
    result = subprocess.run(
        ["ssh", "-tt", "-p", str(live_server.port), *live_server.ssh_options(),
         f"{user.name}@127.0.0.1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip  # -tt: a pty even without a local terminal
    assert result.returncode == 1
    assert "PTY allocation request failed" not in result.stderr
    assert "SFTP and SCP only" in result.stdout + result.stderr  # a pty merges the streams
    result = live_server.ssh(user, "help")
    assert result.returncode == 0
    assert "sp [--json]" in result.stdout
    result = subprocess.run(
        ["ssh", "-p", str(live_server.port), *live_server.ssh_options(), "-N",
         "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9", f"{user.name}@127.0.0.1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert "forwarding failed" in result.stderr.lower()


def test_offered_ciphers_steer_default_openssh_clients(tmp_path: Path) -> None:
    """Without chacha20 on offer, OpenSSH's default order lands on AES-CTR."""
    from tests.support.live import start_live_server, stop_live_server

    server = start_live_server(tmp_path, ciphers=("aes128-gcm@openssh.com", "aes128-ctr"))
    try:
        user = server.add_user()
        r = subprocess.run(
            ["ssh", "-v", "-p", str(server.port), *server.ssh_options(), f"{user.name}@127.0.0.1",
             "sp"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-500:]
        assert "cipher: aes128-ctr" in r.stderr
        r = subprocess.run(
            ["ssh", "-c", "chacha20-poly1305@openssh.com", "-p", str(server.port),
             *server.ssh_options(), f"{user.name}@127.0.0.1", "sp"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 255  # no cipher in common: refused at key exchange
    finally:
        stop_live_server(server)
