"""python -m bench [--quick] [--reps N] [--output FILE] [--only W,...] [--ciphers C,...]:
sftpd vs OpenSSH vs bare asyncssh."""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time

from bench.harness import Bench, Sizes, workdir
from bench.servers import Missing, check_prerequisites

CIPHERS = ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI-sized run (a minute or two)")
    parser.add_argument("--reps", type=int, help="repetitions of each workload")
    parser.add_argument("--output", help="also write the markdown table to this file")
    parser.add_argument(
        "--only", help=f"comma list of workloads to run (of {', '.join(Bench.WORKLOADS)})"
    )
    parser.add_argument(
        "--ciphers", default=",".join(CIPHERS), help="comma list for workloads 1 and 7"
    )
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else set(Bench.WORKLOADS)
    if only - set(Bench.WORKLOADS):
        parser.error(f"unknown workloads: {', '.join(sorted(only - set(Bench.WORKLOADS)))}")
    try:
        check_prerequisites()
    except Missing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    sizes = Sizes.quick() if args.quick else Sizes.full()
    if args.reps:
        sizes = dataclasses.replace(sizes, reps=args.reps)
    started = time.monotonic()
    # Source files, downloads and each server's copies: about eight big files at once.
    with workdir(8 * max(sizes.big, sizes.hash_size)) as tmp:
        from pathlib import Path

        bench = Bench(sizes, args.ciphers.split(","), Path(tmp), only)
        try:
            bench.start()
            bench.run(lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True))
        finally:
            bench.stop()
    header = (
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}; "
        f"{'quick' if args.quick else 'full'} run, {sizes.reps} rep(s), "
        f"{time.monotonic() - started:.0f} s\n\n"
    )
    table = header + bench.table()
    if "logins" in only:  # sftpd alone: OpenSSH here has no CA or TOTP set up to compare
        from bench.logins import measure

        users = 40 if args.quick else 200
        say = lambda m: print(f"bench: {m}", file=sys.stderr)  # noqa: E731
        table += "\n\n" + measure(users, sizes.reps, say)
    print(table)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
