"""Revoked keys (sftpd/core/revocation.py) against OpenSSH's own reader: every KRL here is
written by ``ssh-keygen -k`` and every verdict compared with ``ssh-keygen -Q``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import asyncssh
import pytest

from sftpd.core.revocation import (
    KRL_MAGIC,
    RevocationError,
    RevokedKeysFile,
    parse_krl,
    parse_revoked,
)
from sftpd.ssh.compat import certificate_info


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def issue(ca: Path, key: Path, serial: int, key_id: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", key_id, "-n", "alice",
                    "-z", str(serial), "-V", "+1h", f"{key}.pub"], check=True)  # fmt: skip
    return Path(f"{key}-cert.pub")


def openssh_says_revoked(krl: Path, public: Path) -> bool:
    out = subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(public)], capture_output=True)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode == 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two CAs, and certificates of fresh keys with assorted serials and ids."""
    tmp = tmp_path_factory.mktemp("pki")
    out = {"ca": keygen(tmp / "ca"), "other_ca": keygen(tmp / "other_ca")}
    serials = [0, 1, 5, 9, 10, 15, 20, 21, 100, 102, 104, 131, 160, 2**40, 2**64 - 1]
    for serial in serials:
        key = keygen(tmp / f"k{serial}")
        out[f"cert{serial}"] = issue(out["ca"], key, serial, f"id{serial % 7}")
        out[f"key{serial}"] = Path(f"{key}.pub")
    key = keygen(tmp / "byother")
    out["other5"] = issue(out["other_ca"], key, 5, "id5")
    out["tmp"] = tmp
    return out


def our_verdict(revoked_file: Path, public: Path) -> bool:
    revoked = parse_revoked(revoked_file.read_bytes())
    data = asyncssh.read_public_key(str(public)) if "cert" not in public.name else None
    if data is not None:
        return revoked.key_revoked(data.public_data)
    cert = certificate_info(asyncssh.read_certificate(str(public)))
    return bool(revoked.cert_revoked(cert.blob, cert.key, cert.ca, cert.serial, cert.key_id))


SPECS = {
    "serials": "serial: 5\nserial: 2199023255552\n",
    "ranges": "serial: 9-20\nserial: 18446744073709551615\n",
    # dense serials: ssh-keygen packs these into a bitmap section
    "bitmap": "".join(f"serial: {n}\n" for n in range(100, 161, 2)),
    "key ids": "id: id3\nid: id5\n",
}


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_certificate_revocations_agree_with_openssh(pki: dict[str, Path], spec: str) -> None:
    tmp = pki["tmp"]
    (tmp / "spec").write_text(SPECS[spec])
    krl = tmp / f"krl-{spec.replace(' ', '-')}"
    subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(krl), "-s", f"{pki['ca']}.pub",
                    str(tmp / "spec")], check=True, capture_output=True)  # fmt: skip
    names = [n for n in pki if n.startswith(("cert", "key", "other"))]
    verdicts = {n: our_verdict(krl, pki[n]) for n in names}
    assert verdicts == {n: openssh_says_revoked(krl, pki[n]) for n in names}
    assert any(verdicts.values())  # the spec revokes something
    assert not verdicts["cert0"] or spec == "key ids"  # serial 0 is never revoked by serial


def test_key_and_fingerprint_revocations_agree_with_openssh(pki: dict[str, Path]) -> None:
    tmp = pki["tmp"]

    def line(name: str) -> list[str]:
        return pki[name].read_text().split()

    fp = subprocess.run(["ssh-keygen", "-l", "-f", str(pki["key10"])], capture_output=True,
                        text=True, check=True).stdout.split()[1]  # fmt: skip
    (tmp / "spec").write_text(
        f"key: {' '.join(line('key1')[:2])}\n"
        f"sha1: {' '.join(line('key5')[:2])}\n"
        f"sha256: {' '.join(line('key9')[:2])}\n"
        f"hash: {fp}\n"
        f"key: {(pki['other_ca'].with_suffix('.pub')).read_text().strip()}\n"
    )
    krl = tmp / "krl-keys"
    subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(krl), str(tmp / "spec")], check=True,
                   capture_output=True)  # fmt: skip
    names = [n for n in pki if n.startswith(("cert", "key", "other"))]
    verdicts = {n: our_verdict(krl, pki[n]) for n in names}
    assert verdicts == {n: openssh_says_revoked(krl, pki[n]) for n in names}
    # a revoked key revokes its certificates; a revoked CA key, every certificate it signed
    assert verdicts["key1"] and verdicts["cert1"] and verdicts["cert10"] and verdicts["other5"]
    assert not verdicts["key20"] and not verdicts["cert20"]


def test_a_list_of_public_keys_revokes_those_keys(pki: dict[str, Path]) -> None:
    listing = pki["tmp"] / "revoked.txt"
    listing.write_text(f"# revoked\n\n{pki['key15'].read_text()}{pki['cert20'].read_text()}")
    verdicts = {n: our_verdict(listing, pki[n]) for n in ("key15", "cert15", "cert20", "key20")}
    assert verdicts == {"key15": True, "cert15": True, "cert20": True, "key20": False}


def test_malformed_krls_are_refused_with_a_reason() -> None:
    good = bytearray(KRL_MAGIC + (1).to_bytes(4, "big") + bytes(24) + bytes(8))
    assert parse_krl(bytes(good)).keys == set()
    for data, reason in [
        (KRL_MAGIC + (2).to_bytes(4, "big"), "version"),
        (bytes(good[:-3]), "truncated"),
        (bytes(good) + b"\x04" + bytes(8), "signed"),
        (bytes(good) + b"\x07" + bytes(4), "unknown section"),
        (bytes(good) + b"\x02" + (9).to_bytes(4, "big") + (100).to_bytes(4, "big"), "truncated"),
        (bytes(good) + b"\xff" + _ext(critical=True), "critical"),
    ]:
        with pytest.raises(RevocationError, match=reason):
            parse_krl(data)
    assert parse_krl(bytes(good) + b"\xff" + _ext(critical=False)).keys == set()
    with pytest.raises(RevocationError, match="neither"):
        parse_revoked(b"\xff\xfe junk")
    with pytest.raises(RevocationError, match="line 1"):
        parse_revoked(b"ssh-ed25519 not-base64!\n")
    with pytest.raises(RevocationError, match="line 2"):  # an ed25519 blob on an ssh-rsa line
        parse_revoked(b"# list\nssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGx8\n")


def test_a_key_line_cut_short_makes_the_list_unreadable(pki: dict[str, Path]) -> None:
    """A key whose base64 is cut at a multiple of 4 characters still decodes and names its
    type; the server's check (sftpd/ssh/trust.py) decodes the whole key and refuses it."""
    from sftpd.ssh.trust import _is_key

    words = pki["key21"].read_text().split()
    short = f"{words[0]} {words[1][:40]}\n"
    assert parse_revoked(short.encode()).keys  # the type check alone cannot tell
    with pytest.raises(RevocationError, match="line 1"):
        parse_revoked(short.encode(), _is_key)
    assert parse_revoked(pki["cert21"].read_bytes() + pki["key21"].read_bytes(), _is_key).keys


def _ext(critical: bool) -> bytes:
    body = b"".join(len(p).to_bytes(4, "big") + p for p in (b"x@example.com",))
    body += bytes([critical]) + (0).to_bytes(4, "big")
    return len(body).to_bytes(4, "big") + body


def test_the_file_is_reread_when_it_changes_and_refuses_all_while_unreadable(
    pki: dict[str, Path],
) -> None:
    path = pki["tmp"] / "watched.txt"
    path.write_text("")
    key = asyncssh.read_public_key(str(pki["key21"])).public_data
    watched = RevokedKeysFile(path)
    assert not watched.current().key_revoked(key)
    path.write_text(pki["key21"].read_text())
    assert watched.current().key_revoked(key)
    path.write_bytes(b"\xff\xfe not keys")  # an operator's mistake: fail closed
    other = asyncssh.read_public_key(str(pki["key20"])).public_data
    assert watched.current().key_revoked(other)
    os.unlink(path)
    assert watched.current().key_revoked(other)
    path.write_text("")
    assert not watched.current().key_revoked(key)
    path.write_bytes(b"junk\xff")
    with pytest.raises(RevocationError, match="cannot read revoked keys"):
        RevokedKeysFile(path)  # at start: the server refuses to start instead


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def test_any_ca_sections_and_serial_zero_by_hand(pki: dict[str, Path]) -> None:
    """What ssh-keygen cannot write but PROTOCOL.krl allows: a certificate section for
    every CA (empty CA key) revoking key ids, and a serial list naming 0, which OpenSSH
    ignores (0 is what a CA that numbers nothing writes)."""
    header = KRL_MAGIC + (1).to_bytes(4, "big") + bytes(24) + _string(b"") + _string(b"")
    ids = b"\x23" + _string(_string(b"id1"))
    serials = b"\x20" + _string((0).to_bytes(8, "big") + (15).to_bytes(8, "big"))
    section = _string(b"") + _string(b"") + ids + serials
    path = pki["tmp"] / "krl-any-ca"
    path.write_bytes(header + b"\x01" + _string(section))
    assert our_verdict(path, pki["cert1"]) and our_verdict(path, pki["cert15"])  # id1, 15
    assert not our_verdict(path, pki["cert0"])  # id0, serial 0
    assert not our_verdict(path, pki["cert100"])  # id2, serial 100
