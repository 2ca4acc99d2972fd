"""python -m bench.logins [--users N] [--reps R]: logins per second with a registered key,
with an SSH certificate (``--user-ca``, no key registered) and with a key and a TOTP code
(policy ``publickey+totp``), same server, same run; ``python -m bench`` runs it too.

A code is accepted once per user and time step, so every login is a different user: N
users of each kind, all with the same client key, each logging in once per repetition (8
at a time, login + one SFTP stat, like workload 5 of ``python -m bench``), the kinds
taking turns to go first. Prints medians (min-max) and each kind's login time over the
key's (docs/security.md; goal <= 1.20).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncssh
import pyotp

from bench.harness import workdir
from bench.servers import keygen, start_sftpd
from sftpd.store import KeyRecord, UserRecord, open_store

SECRET = pyotp.random_base32()
KINDS = ("key", "certificate", "totp")
LABELS = {"key": "key", "certificate": "certificate", "totp": "key + TOTP code"}


class _Code(asyncssh.SSHClient):
    def __init__(self, step: int) -> None:
        self.step = step

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str]:
        return [pyotp.TOTP(SECRET).generate_otp(self.step) for _ in prompts]


async def _add_users(data: Path, pub: Path, n: int, rep: int) -> None:
    store = await open_store(f"sqlite:///{data}/sftpd.db")
    key = asyncssh.read_public_key(str(pub))
    record = KeyRecord(
        key.get_fingerprint("sha256"), key.get_algorithm(), key.export_public_key().decode()
    )
    try:
        for kind in KINDS:
            for i in range(n):
                name = f"{kind}{rep}x{i}"
                keys = () if kind == "certificate" else (record,)
                await store.add_user(UserRecord(name, keys=keys))
                if kind == "totp":
                    await store.set_totp(name, SECRET, [])
                    await store.set_login_policy(name, "publickey+totp")
    finally:
        await store.close()


async def _run(port: int, key: Path, ca: asyncssh.SSHKey, names: list[str], kind: str) -> float:
    sem = asyncio.Semaphore(8)
    step = pyotp.TOTP(SECRET).timecode(int(time.time()))
    private = asyncssh.read_private_key(str(key))
    # made before the clock starts: a CA's work, not the login's
    certs = {n: ca.generate_user_certificate(private, n, principals=[n]) for n in names}

    async def one(name: str) -> None:
        keys: Any = [(private, certs[name])] if kind == "certificate" else [private]
        async with sem:
            conn = await asyncssh.connect(
                "127.0.0.1", port, username=name, client_keys=keys, known_hosts=None,
                agent_path=None, config=None, server_host_key_algs=["ssh-ed25519"],
                client_factory=(lambda: _Code(step)) if kind == "totp" else None,
            )  # fmt: skip
            async with conn, conn.start_sftp_client() as sftp:
                await sftp.stat(".")

    start = time.perf_counter()
    await asyncio.gather(*(one(n) for n in names))
    return len(names) / (time.perf_counter() - start)


def measure(users: int, reps: int, progress: Callable[[str], None]) -> str:
    """Run the logins against a fresh sftpd; the markdown table and ratios."""
    rates: dict[str, list[float]] = {k: [] for k in KINDS}
    with workdir(0) as name:
        tmp = Path(name)
        keygen(tmp / "k")
        ca = asyncssh.generate_private_key("ssh-ed25519")
        ca.write_public_key(str(tmp / "ca.pub"))
        server = start_sftpd(tmp, tmp / "k.pub", extra=["--user-ca", str(tmp / "ca.pub")])
        try:
            for rep in range(reps):
                asyncio.run(_add_users(tmp / "sftpd-data", tmp / "k.pub", users, rep))
                order = KINDS[rep % 3 :] + KINDS[: rep % 3]
                for kind in order:
                    names = [f"{kind}{rep}x{i}" for i in range(users)]
                    rates[kind].append(asyncio.run(_run(server.port, tmp / "k", ca, names, kind)))
                    progress(f"logins rep {rep + 1}/{reps}: {kind} {rates[kind][-1]:.1f}/s")
        finally:
            server.proc.terminate()
            server.proc.wait()
    lines = ["| sftpd login | logins/s (8 at a time, + one stat) | login time / key's |",
             "|---|---|---|"]  # fmt: skip
    key = statistics.median(rates["key"])
    for kind in KINDS:
        v = rates[kind]
        ratio = key / statistics.median(v)
        lines.append(f"| {LABELS[kind]} | {statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"
                     f" | {ratio:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n\nGoal: certificate and key + TOTP login time <= 1.20 x key's."


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.logins", description=__doc__)
    parser.add_argument("--users", type=int, default=200, help="logins of each kind per rep")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(measure(args.users, args.reps, lambda m: print(f"bench.logins: {m}", file=sys.stderr)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
