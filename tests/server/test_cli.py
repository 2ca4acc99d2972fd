"""The ``sftpd`` command as a person runs it: serve, keys, user ..., settings errors."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import SFTPD, Serve, known_hosts, run


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def server(workdir: Path) -> Iterator[Serve]:
    s = Serve(workdir)
    yield s
    if s.proc.poll() is None:
        s.stop()


def sftp_with_password(workdir: Path, port: int, user: str, password: str, batch: str):  # type: ignore[no-untyped-def]
    """OpenSSH sftp logging in with a password, fed through SSH_ASKPASS like a person would.

    Not ``-b``: batch mode forbids password prompts; commands come on stdin instead.
    """
    askpass = workdir / "askpass.sh"
    askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
    askpass.chmod(0o700)
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force",
           "DISPLAY": ":0"}  # fmt: skip
    return subprocess.run(
        ["sftp", "-P", str(port), "-F", "/dev/null",
         "-o", f"UserKnownHostsFile={known_hosts(workdir, port)}",
         "-o", "StrictHostKeyChecking=yes", "-o", "PreferredAuthentications=password",
         "-o", "PubkeyAuthentication=no", f"{user}@127.0.0.1"],
        input=batch, capture_output=True, text=True, timeout=60, env=env,
        stdin=None, start_new_session=True,
    )  # fmt: skip


def test_first_start_creates_demo_user_and_a_person_can_log_in(
    workdir: Path, server: Serve
) -> None:
    demo = next(line for line in server.lines if line.startswith("created user 'demo'"))
    password = demo.split("with password ")[1]
    result = sftp_with_password(workdir, server.port, "demo", password, "pwd\nls\n")
    assert result.returncode == 0, result.stderr
    assert "Remote working directory: /" in result.stdout
    assert stat.S_IMODE((workdir / "data" / "homes" / "demo").stat().st_mode) == 0o700


def test_host_keys_are_private_printed_and_reused(workdir: Path) -> None:
    first = Serve(workdir)
    first.stop()
    printed = [line for line in first.lines if line.startswith("host key")]
    assert {line.split()[2] for line in printed} == {
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"
    }  # fmt: skip
    for key in (workdir / "keys").glob("ssh_host_*_key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    rsa = (workdir / "keys" / "ssh_host_rsa_key.pub").read_text()
    assert len(rsa.split()[1]) > 500  # 3072 bits
    second = Serve(workdir)
    second.stop()
    assert [line for line in second.lines if line.startswith("host key")] == printed
    assert not any("created user" in line for line in second.lines)
    keys_out = run(workdir, "keys").stdout
    for line in printed:
        assert line.split()[3] in keys_out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly_with_a_session_open(workdir: Path, sig: int) -> None:
    server = Serve(workdir)
    password = next(x for x in server.lines if "created user" in x).split("with password ")[1]
    askpass = workdir / "ap.sh"
    askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
    askpass.chmod(0o700)
    client = subprocess.Popen(
        ["sftp", "-P", str(server.port), "-F", "/dev/null",
         "-o", f"UserKnownHostsFile={known_hosts(workdir, server.port)}",
         "-o", "PubkeyAuthentication=no", "demo@127.0.0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force",
             "DISPLAY": ":0"},
        start_new_session=True,
    )  # fmt: skip
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write("pwd\n")
    client.stdin.flush()
    ready, _, _ = select.select([client.stdout], [], [], 30)
    assert ready, "sftp did not log in"
    # sftp reads commands only once logged in, and echoes each: at the prompt, idle
    assert client.stdout.readline().startswith("sftp> pwd")
    start = time.monotonic()
    code, err = server.stop(sig)
    assert code == 0, err
    assert time.monotonic() - start < 15
    client.communicate(timeout=30)
    assert "login ok" in err and "stopped" in err


def test_bad_settings_exit_2_with_one_line(workdir: Path) -> None:
    (workdir / "bad.toml").write_text("[server]\nport = 2222\nbogus = 1\n")
    (workdir / "notoml.toml").write_text("port = = 1\n")
    (workdir / "afile").write_text("not a dir")
    cases = [
        (["serve", "--port", "70000"], {}, "port"),
        (["--config", "bad.toml", "serve"], {}, "bogus"),
        (["--config", "notoml.toml", "serve"], {}, "not valid TOML"),
        (["--config", "missing.toml", "serve"], {}, "missing.toml"),
        (["--data-dir", "afile/x", "serve"], {}, "data dir"),
        (["serve", "--log-format", "xml"], {}, "log_format"),
        (["serve"], {"SFTPD_PORTT": "1"}, "SFTPD_PORTT"),
        (["serve"], {"SFTPD_MAX_AUTH_ATTEMPTS": "many"}, "max_auth_attempts"),
        (["serve", "--default-quota", "lots"], {}, "default_quota"),
    ]
    for args, env, needle in cases:
        result = run(workdir, *args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_unreadable_data_dir_exits_2(workdir: Path) -> None:
    if os.geteuid() == 0:
        data = workdir / "locked"
        data.mkdir()
        (data / "homes").write_text("a file where the homes dir should be")
        result = run(workdir, "--data-dir", str(data), "serve")
    else:
        data = workdir / "locked"
        data.mkdir(mode=0)
        result = run(workdir, "--data-dir", str(data), "serve")
    assert result.returncode == 2
    assert "data dir" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_port_in_use_exits_2(workdir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run(workdir, "serve", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip() == f"sftpd: port {port} on 127.0.0.1 is already in use"


def test_settings_precedence_flags_env_file(workdir: Path) -> None:
    (workdir / "s.toml").write_text('[server]\nport = 0\nlisten = ["127.0.0.1"]\n')
    server = Serve(workdir, "--log-format", "json")
    server.stop()
    env_file = {"SFTPD_CONFIG": str(workdir / "s.toml"), "SFTPD_LOG_FORMAT": "json"}
    proc = subprocess.Popen(
        [*SFTPD, "serve", "--log-format", "text"], cwd=workdir, env={**os.environ, **env_file},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    while "listening" not in proc.stdout.readline():
        pass
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "info sftpd.server: started" in err  # the flag beat the environment
    assert not err.lstrip().startswith("{")


def test_user_commands_end_to_end(workdir: Path, server: Serve) -> None:
    key = workdir / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    fp = subprocess.run(
        ["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]

    assert run(workdir, "user", "add", "Bad!Name").returncode == 1
    assert "invalid user name" in run(workdir, "user", "add", "Bad!Name").stderr
    r = run(workdir, "user", "add", "bob", "--password-stdin", "--quota", "1.5GiB",
            input="s3cret-pw\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert run(workdir, "user", "add", "bob", "--password-stdin", input="x\n").returncode == 1
    assert run(workdir, "user", "key", "add", "bob", f"{key}.pub").returncode == 0
    listed = json.loads(run(workdir, "user", "list", "--json").stdout)
    bob = next(u for u in listed if u["name"] == "bob")
    assert bob["quota"] == int(1.5 * 1024**3) and bob["keys"][0]["fingerprint"] == fp
    assert "1.5 GiB" in run(workdir, "user", "show", "bob").stdout
    other = workdir / "id_auto"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    r = run(workdir, "user", "key", "add", "bob", f"{other}.pub", "--exempt")
    assert r.returncode == 1 and "--from" in r.stderr
    r = run(workdir, "user", "key", "add", "bob", f"{other}.pub", "--from", "10.0.0.300")
    assert r.returncode == 1 and "10.0.0.300" in r.stderr
    r = run(workdir, "user", "key", "add", "bob", f"{other}.pub", "--from", "192.0.2.7,10.1.0.0/16",
            "--exempt")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "from=192.0.2.7/32,10.1.0.0/16 exempt" in run(workdir, "user", "show", "bob").stdout

    hosts = known_hosts(workdir, server.port)
    ssh = ["sftp", "-b", "-", "-P", str(server.port), "-F", "/dev/null", "-i", str(key),
           "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
           "-o", f"UserKnownHostsFile={hosts}", "bob@127.0.0.1"]  # fmt: skip
    assert subprocess.run(ssh, input=b"pwd\n", capture_output=True, timeout=30).returncode == 0
    assert sftp_with_password(workdir, server.port, "bob", "s3cret-pw", "pwd\n").returncode == 0

    assert (
        run(workdir, "user", "passwd", "bob", "--password-stdin", input="new-pw\n").returncode == 0
    )
    assert sftp_with_password(workdir, server.port, "bob", "s3cret-pw", "pwd\n").returncode != 0
    assert sftp_with_password(workdir, server.port, "bob", "new-pw", "pwd\n").returncode == 0

    assert run(workdir, "user", "disable", "bob").returncode == 0
    assert subprocess.run(ssh, input=b"pwd\n", capture_output=True, timeout=30).returncode != 0
    assert run(workdir, "user", "enable", "bob").returncode == 0
    assert run(workdir, "user", "key", "del", "bob", fp).returncode == 0
    assert subprocess.run(ssh, input=b"pwd\n", capture_output=True, timeout=30).returncode != 0

    home = workdir / "data" / "homes" / "bob"
    (home / "file").write_text("x")
    assert run(workdir, "user", "del", "bob").returncode == 0
    assert home.exists()
    run(workdir, "user", "add", "bob", "--password-stdin", input="pw\n")
    assert run(workdir, "user", "del", "bob", "--purge").returncode == 0
    assert not home.exists()
    assert run(workdir, "user", "show", "bob").returncode == 1
