"""SSH user certificates (``user_ca``) and revoked keys (``revoked_keys``) against the live
server, with certificates made by ``ssh-keygen -s`` and used by OpenSSH's client: every
refusal changes nothing, says why in the audit line and names no secret."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from sftpd.config import ConfigError, Settings
from sftpd.ssh.trust import Trust
from tests.server.test_logins import _Answers, code, enrol, login, outcomes
from tests.support import Xfer
from tests.support.live import LiveServer, User, start_live_server, stop_live_server

_n = itertools.count()


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class Pki:
    """A trusted CA, an untrusted one, and a revoked-keys file the server watches."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca = keygen(tmp / "ca")
        self.rogue = keygen(tmp / "rogue")
        self.revoked = tmp / "revoked"
        self.revoked.write_text("")

    def issue(
        self,
        principals: str | None,
        *options: str,
        validity: str = "-1m:+10m",
        ca: Path | None = None,
        serial: int = 1,
        key_id: str = "laptop",
    ) -> Path:
        """A fresh key and its certificate (``KEY-cert.pub``, found by OpenSSH next to it);
        returns the private key's path."""
        key = keygen(self.tmp / f"user{next(_n)}")
        argv = ["ssh-keygen", "-q", "-s", str(ca or self.ca), "-I", key_id, "-z", str(serial),
                "-V", validity]  # fmt: skip
        argv += ["-n", principals] if principals is not None else []
        for option in options:
            argv += ["-O", option]
        subprocess.run([*argv, f"{key}.pub"], check=True)
        return key

    def revoke(self, spec: str) -> None:
        """Replace the revoked-keys file by a KRL of ``spec`` (ssh-keygen's format)."""
        (self.tmp / "spec").write_text(spec)
        krl = self.tmp / "krl.new"
        subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(krl), "-s", f"{self.ca}.pub",
                        str(self.tmp / "spec")], check=True, capture_output=True)  # fmt: skip
        os.replace(krl, self.revoked)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def ca_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[LiveServer]:
    server = start_live_server(tmp_path_factory.mktemp("ca-sftpd"),
                               user_ca=(Path(f"{pki.ca}.pub"),),
                               revoked_keys=str(pki.revoked))  # fmt: skip
    yield server
    stop_live_server(server)


@pytest.fixture
def person(ca_server: LiveServer, pki: Pki) -> Iterator[User]:
    """A user with no registered key; the revoked-keys file empty again afterwards."""
    yield ca_server.add_user(with_key=False)
    pki.revoked.write_text("")


def ssh(server: LiveServer, user: User, key: Path, *command: str,
        stdin: str = "") -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        ["ssh", "-p", str(server.port), *server.ssh_options(key), "-o", "PubkeyAuthentication=yes",
         "-o", "PreferredAuthentications=publickey", f"{user.name}@127.0.0.1", *command],
        capture_output=True, text=True, timeout=30, input=stdin,
    )  # fmt: skip


def refusals(server: LiveServer, user: User) -> list[str]:
    return [r for o, m, r in outcomes(server, user) if o == "failed" and m == "certificate"]


def test_a_certificate_admits_its_user_without_a_registered_key(
    ca_server: LiveServer, pki: Pki, person: User
) -> None:
    key = pki.issue(f"{person.name},someone-else", serial=42, key_id="alice@laptop")
    done = ssh(ca_server, person, key, "sp")
    assert done.returncode == 0 and "used" in done.stdout, done.stderr
    (ca_server.tmp / "up.bin").write_bytes(os.urandom(100_000))
    put = subprocess.run(
        ["sftp", "-b", "-", "-P", str(ca_server.port), *ca_server.ssh_options(key),
         f"{person.name}@127.0.0.1"],
        input=f"put {ca_server.tmp / 'up.bin'} up.bin\n", capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert put.returncode == 0, put.stderr
    assert (person.home / "up.bin").read_bytes() == (ca_server.tmp / "up.bin").read_bytes()
    ok = [e for e in ca_server.logs.events("login")
          if e.get("user") == person.name and e.get("outcome") == "ok"]  # fmt: skip
    assert ok and ok[0]["method"] == "certificate" and ok[0]["cert_id"] == "alice@laptop"
    assert ok[0]["serial"] == "42" and ok[0]["ca"].startswith("SHA256:")


#: case -> (ssh-keygen's principals and -O options, other arguments, the audit reason)
REFUSED: dict[str, tuple[str | None, tuple[str, ...], dict[str, str], str]] = {
    "expired": ("{user}", (), {"validity": "-20m:-10m"}, "certificate expired"),
    "not yet valid": ("{user}", (), {"validity": "+10m:+20m"}, "certificate not yet valid"),
    "wrong principal": ("somebody", (), {}, "certificate not issued for this user"),
    "no principals": (None, (), {}, "certificate names no principals"),
    "untrusted CA": ("{user}", (), {"ca": "rogue"}, "certificate authority not trusted"),
    "forbidden address": (
        "{user}", ("source-address=10.0.0.0/8,192.0.2.1",), {},
        "certificate source-address does not allow this address",
    ),
    "shell command": (
        "{user}", ("force-command=/bin/sh -c id",), {},
        "certificate forces a command sftpd cannot run",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_certificates_that_must_not_admit(
    ca_server: LiveServer, pki: Pki, person: User, case: str
) -> None:
    principals, options, other, reason = REFUSED[case]
    key = pki.issue(
        principals.format(user=person.name) if principals is not None else None,
        *options,
        validity=other.get("validity", "-1m:+10m"),
        ca=pki.rogue if other.get("ca") else None,
    )
    done = ssh(ca_server, person, key, "sp")
    assert done.returncode == 255 and "Permission denied" in done.stderr
    assert refusals(ca_server, person) == [reason]
    assert list(person.home.iterdir()) == []
    assert key.read_text().splitlines()[1] not in ca_server.logs.text()


async def test_a_host_certificate_is_not_a_user_certificate(
    ca_server: LiveServer, pki: Pki, person: User
) -> None:
    """OpenSSH's client does not offer a host certificate for a login; asyncssh's does."""
    key = pki.issue(person.name)
    host = keygen(pki.tmp / f"host{next(_n)}")
    subprocess.run(["ssh-keygen", "-q", "-s", str(pki.ca), "-I", "h", "-h", "-n", person.name,
                    "-V", "-1m:+10m", f"{host}.pub"], check=True)  # fmt: skip
    with pytest.raises(asyncssh.PermissionDenied):
        async with ca_server.connect(person, client_keys=[(str(host), f"{host}-cert.pub")]):
            pass
    assert ssh(ca_server, person, key, "sp").returncode == 0
    assert "not a user certificate" in refusals(ca_server, person)


def test_force_command_internal_sftp_serves_sftp_only(
    ca_server: LiveServer, pki: Pki, person: User
) -> None:
    """OpenSSH's 'this certificate may only do SFTP': sftp works, and a command asked
    for gets the SFTP server too (as sshd's ForceCommand does), not the command."""
    key = pki.issue(person.name, "force-command=internal-sftp")
    put = subprocess.run(
        ["sftp", "-b", "-", "-P", str(ca_server.port), *ca_server.ssh_options(key),
         f"{person.name}@127.0.0.1"],
        input="mkdir made\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert put.returncode == 0, put.stderr
    assert (person.home / "made").is_dir()
    asked = ssh(ca_server, person, key, "sp")
    assert "used" not in asked.stdout


def test_force_command_sp_runs_sp_whatever_is_asked(
    ca_server: LiveServer, pki: Pki, person: User
) -> None:
    key = pki.issue(person.name, "force-command=sp")
    done = ssh(ca_server, person, key, "sha256sum", "nothing")
    assert done.returncode == 0 and "used" in done.stdout


def test_revocation_by_serial_key_id_and_key_takes_effect_at_the_next_login(
    ca_server: LiveServer, pki: Pki, person: User
) -> None:
    by_serial = pki.issue(person.name, serial=7)
    by_id = pki.issue(person.name, serial=8, key_id="stolen-laptop")
    by_key = pki.issue(person.name, serial=9)
    kept = pki.issue(person.name, serial=10)
    for key in (by_serial, by_id, by_key, kept):
        assert ssh(ca_server, person, key, "sp").returncode == 0
    pki.revoke(f"serial: 7\nid: stolen-laptop\nkey: {Path(f'{by_key}.pub').read_text()}")
    for key in (by_serial, by_id, by_key):
        assert ssh(ca_server, person, key, "sp").returncode == 255
    assert ssh(ca_server, person, kept, "sp").returncode == 0
    assert refusals(ca_server, person) == [
        "certificate serial revoked", "certificate key id revoked", "key revoked",
    ]  # fmt: skip
    pki.revoked.write_text("")
    assert ssh(ca_server, person, by_serial, "sp").returncode == 0


def test_an_unreadable_revocation_list_refuses_every_key(
    ca_server: LiveServer, pki: Pki, person: User
) -> None:
    """As sshd does: a list that cannot be read must not mean 'nothing is revoked'. A
    registered key is refused too, and a password still works (nothing to revoke)."""
    cert = pki.issue(person.name)
    registered = ca_server.add_user()
    pki.revoked.write_bytes(b"\xff\xfe this is not a KRL")
    assert ssh(ca_server, person, cert, "sp").returncode == 255
    assert ca_server.ssh(registered, "sp").returncode == 255
    assert ("failed", "publickey", "key revoked") in outcomes(ca_server, registered)
    pki.revoked.write_text("")
    assert ssh(ca_server, person, cert, "sp").returncode == 0
    assert ca_server.ssh(registered, "sp").returncode == 0


def test_a_revoked_registered_key_is_refused(ca_server: LiveServer, pki: Pki) -> None:
    user = ca_server.add_user()
    pki.revoked.write_text(Path(f"{user.key_path}.pub").read_text())
    try:
        assert ca_server.ssh(user, "sp").returncode == 255
    finally:
        pki.revoked.write_text("")
    assert ca_server.ssh(user, "sp").returncode == 0


async def test_the_login_policy_decides_whether_a_certificate_is_enough(
    ca_server: LiveServer, pki: Pki, person: User
) -> None:
    """'publickey' alone refuses certificates; 'certificate+totp' asks a code after one."""
    key = pki.issue(person.name)
    keypair = [(str(key), f"{key}-cert.pub")]
    store = ca_server.service.store
    assert ca_server.call(store.set_login_policy(person.name, "publickey"))
    assert ssh(ca_server, person, key, "sp").returncode == 255
    assert refusals(ca_server, person) == ["not allowed by login policy"]
    enrol(ca_server, person, "certificate+totp")
    with pytest.raises(asyncssh.PermissionDenied):  # the certificate alone
        async with ca_server.connect(person, client_keys=keypair):
            pass
    client = await login(ca_server, person, [code()], client_keys=keypair)
    assert client.prompts == ["Verification code: "]
    assert ("ok", "certificate+totp", "") in outcomes(ca_server, person)


def test_bad_ca_and_revocation_files_stop_the_server_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("not a key\n")
    empty = tmp_path / "empty"
    empty.write_text("")
    for settings, message in [
        (Settings(user_ca=(tmp_path / "missing",)), "cannot read user CA keys"),
        (Settings(user_ca=(bad,)), "cannot read user CA keys"),
        (Settings(user_ca=(empty,)), "holds no public key"),
        (Settings(revoked_keys=str(bad)), "cannot read revoked keys"),
        (Settings(revoked_keys=str(tmp_path / "missing")), "cannot read revoked keys"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Trust(settings)


def test_xfer_uses_the_certificate_next_to_its_key(
    ca_server: LiveServer, pki: Pki, person: User, tmp_path: Path
) -> None:
    """As OpenSSH does: ``KEY-cert.pub`` beside ``-i KEY``, and beside ~/.ssh/id_ed25519."""
    key = pki.issue(person.name, key_id="xfer")
    target = f"{person.name}@127.0.0.1:{ca_server.port}"
    x = Xfer(tmp_path, target, key, ca_server.known_hosts)
    done = x("sp")
    assert done.returncode == 0 and "used" in done.stdout, done.stderr
    home_ssh = tmp_path / "home" / ".ssh"
    home_ssh.mkdir(mode=0o700)
    for suffix in ("", ".pub", "-cert.pub"):
        (home_ssh / f"id_ed25519{suffix}").write_bytes(Path(f"{key}{suffix}").read_bytes())
    (home_ssh / "id_ed25519").chmod(0o600)
    done = Xfer(tmp_path, target, None, ca_server.known_hosts)("sp")
    assert done.returncode == 0 and "used" in done.stdout, done.stderr
    methods = [m for o, m, _ in outcomes(ca_server, person) if o == "ok"]
    assert methods == ["certificate", "certificate"]


async def test_a_forced_command_holds_when_a_code_follows_the_certificate(
    ca_server: LiveServer, pki: Pki, person: User
) -> None:
    """Under certificate+totp the certificate's force-command still decides every session
    (asyncssh forgets a certificate's options at the next login request, here the code)."""
    enrol(ca_server, person, "certificate+totp")
    key = pki.issue(person.name, "force-command=sp")
    client = _Answers([code()])
    async with ca_server.connect(person, client_keys=[(str(key), f"{key}-cert.pub")],
                                 client_factory=lambda: client) as conn:  # fmt: skip
        done = await conn.run("help")
        assert "used" in str(done.stdout) and "sha256sum" not in str(done.stdout)
        with pytest.raises((asyncssh.SFTPError, asyncssh.ChannelOpenError, OSError, EOFError)):
            async with conn.start_sftp_client() as sftp:
                await sftp.listdir(".")
    assert client.prompts == ["Verification code: "]
    assert list(person.home.iterdir()) == []
