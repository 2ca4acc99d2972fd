"""python -m bench.ab [--before REF] [--reps N] [--size MIB] [--only W,...] [--workers N]:
sftpd at REF against this tree, with OpenSSH's sshd beside them, in one run.

The A/B for one step of the transport work (docs/performance.md): the transfer rows of
``python -m bench`` (OpenSSH ``sftp`` up and down per cipher, xfer up and down, server CPU
per GiB) and the small-file row, each repetition rotating which server goes first. REF is
checked out in a temporary worktree and its C accelerators built there, so both sides run
as installed. Ratios are costs: below 1 means this tree is better.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

from bench.__main__ import CIPHERS
from bench.harness import Bench, MiB, Sizes, workdir
from bench.servers import start_openssh, start_sftpd

ROOT = Path(__file__).resolve().parents[1]


class AB(Bench):
    """``Bench`` with the servers ``before`` (sftpd at REF), ``sftpd`` and ``openssh``."""

    def __init__(self, before: Path, workers: int | None, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.before_code = before
        self.workers = workers

    def start(self) -> None:
        pub = Path(f"{self.key}.pub")
        before = start_sftpd(self.tmp, pub, self.workers, self.before_code, "before")
        self.servers = [before, start_sftpd(self.tmp, pub, self.workers, name="sftpd"),
                        start_openssh(self.tmp, pub)]  # fmt: skip
        super().start_clients()

    def table(self) -> str:
        lines = [
            "| workload | unit | sftpd before | sftpd now | OpenSSH | now/before | now/OpenSSH |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in sorted(self.rows.values(), key=lambda r: r.name):
            lines.append(
                f"| {row.name} | {row.unit} | {row.cell('before')} | {row.cell('sftpd')} | "
                f"{row.cell('openssh')} | {row.ratio('before')} | {row.ratio('openssh')} |"
            )
        lines += ["", "Cells: median (min-max). Ratios are costs: below 1, this tree is better."]
        return "\n".join(lines)


def checkout(ref: str, where: Path) -> None:
    """``ref`` in a worktree at ``where``, its C accelerators built in place."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(where), ref],
                   check=True)  # fmt: skip
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=where,
                   check=True, capture_output=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--before", default="HEAD~1", help="git ref of the A side")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024, help="MiB per transfer")
    parser.add_argument("--only", default="transfers,small_files")
    parser.add_argument("--ciphers", default=",".join(CIPHERS))
    parser.add_argument("--workers", type=int, help="sftpd workers (default: one per core)")
    args = parser.parse_args()
    sizes = dataclasses.replace(Sizes.full(), big=args.size * MiB, reps=args.reps)
    started = time.monotonic()
    with workdir(6 * sizes.big) as name:
        tmp = Path(name)
        before = tmp / "before-tree"
        checkout(args.before, before)
        bench = AB(before, args.workers, sizes, args.ciphers.split(","), tmp,
                   set(args.only.split(",")))  # fmt: skip
        try:
            bench.start()
            bench.run(lambda msg: print(f"bench.ab: {msg}", file=sys.stderr, flush=True))
        finally:
            bench.stop()
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(before)], check=True)  # fmt: skip
    ref = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before],
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    print(f"before = {args.before} ({ref}); {args.reps} rep(s) of {args.size} MiB, "
          f"{time.monotonic() - started:.0f} s\n")  # fmt: skip
    print(bench.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
