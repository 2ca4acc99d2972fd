"""The ``xfer`` command: verbs parse arguments and print; the work is in transfer/remote."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import asyncssh
import typer

from cli import transfer
from cli.connect import ConnectOptions, Target, connect, default_known_hosts
from cli.errors import EXIT_CODES_HELP, INTERRUPTED, USAGE, XferError, from_exception
from cli.profiles import Profile, Profiles
from cli.remote import Entry, Remote

T = TypeVar("T")

app = typer.Typer(
    rich_markup_mode=None,
    help="xfer: move files to and from an SFTP server (sftpd or any other).\n\n" + EXIT_CODES_HELP,
    add_completion=False,
    pretty_exceptions_enable=False,
    invoke_without_command=True,
    no_args_is_help=False,
)


@dataclass
class State:
    target: str | None = None
    profile: str | None = None
    keys: list[str] = field(default_factory=list)
    known_hosts: Path | None = None
    accept_new: bool = False
    batch: bool = False
    password_stdin: bool = False
    quiet: bool = False
    json: bool = False
    debug: bool = False
    password: str | None = None

    @property
    def show_progress(self) -> bool:
        return not (self.quiet or self.json) and sys.stderr.isatty()


state = State()


def fail(err: XferError) -> NoReturn:
    print(f"xfer: {err}", file=sys.stderr)
    raise typer.Exit(err.code)


def resolve_profile() -> tuple[Target, Profile | None]:
    profiles = Profiles.load()
    text = state.target or os.environ.get("XFER_TARGET")
    if text:
        match = next((p for p in profiles.profiles.values() if p.target == text), None)
        return Target.parse(text), match
    profile = profiles.current(state.profile)
    if profile is None:
        raise XferError(USAGE, "no target: use -t user@host[:port], XFER_TARGET or `xfer login`")
    return Target.parse(profile.target), profile


async def open_remote() -> Remote:
    target, profile = resolve_profile()
    if state.password is None and state.password_stdin:
        state.password = sys.stdin.readline().rstrip("\r\n")
    password = state.password if state.password is not None else os.environ.get("XFER_PASSWORD")
    opts = ConnectOptions(
        target=target,
        keys=state.keys or (profile.keys if profile else []),
        known_hosts=state.known_hosts
        or (Path(profile.known_hosts) if profile and profile.known_hosts else None),
        accept_new=state.accept_new,
        batch=state.batch,
        password=password,
    )
    conn = await connect(opts)
    try:
        sftp = await conn.start_sftp_client()
    except (asyncssh.Error, OSError) as exc:
        conn.close()
        raise from_exception(exc, str(target)) from None
    try:
        cwd = profile.cwd if profile and profile.cwd else await sftp.realpath(".")
    except (asyncssh.Error, OSError) as exc:
        conn.close()
        raise from_exception(exc, str(target)) from None
    return Remote(conn, sftp, cwd)


def run(work: Callable[[Remote], Awaitable[T]]) -> T:
    """Connect, run ``work``, close; every failure becomes one line and an exit code."""

    async def main() -> T:
        remote = await open_remote()
        try:
            return await work(remote)
        finally:
            remote.sftp.exit()
            remote.conn.close()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        print("xfer: interrupted", file=sys.stderr)
        raise typer.Exit(INTERRUPTED) from None
    except (XferError, asyncssh.Error, OSError) as exc:
        if state.debug:
            raise
        fail(from_exception(exc))


IdentityOpt = Annotated[
    list[str] | None, typer.Option("--identity", "-i", help="Private key (repeatable).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No summary line.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
_SHARED = (
    inspect.Parameter("identity", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=IdentityOpt),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=QuietOpt),
    inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=JsonOpt),
)  # fmt: skip


def _take_shared(identity: list[str] | None, quiet: bool, json_out: bool) -> None:
    """Options given before or after the verb mean the same."""
    state.keys = [*state.keys, *(identity or [])]
    state.quiet = state.quiet or quiet
    state.json = state.json or json_out


def verb(name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """``app.command`` that also accepts ``-i``, ``-q`` and ``--json`` after the verb."""

    def register(fn: Callable[..., T]) -> Callable[..., T]:
        sig = inspect.signature(fn, eval_str=True)

        @functools.wraps(fn)
        def command(
            *args: Any, identity: list[str] | None = None, quiet: bool = False,
            json_out: bool = False, **kwargs: Any,
        ) -> T:  # fmt: skip
            _take_shared(identity, quiet, json_out)
            return fn(*args, **kwargs)

        command.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[*sig.parameters.values(), *_SHARED]
        )
        app.command(name)(command)
        return fn

    return register


@app.callback()
def main(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Option("--target", "-t", help="user@host[:port]")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="Saved profile name.")] = None,
    identity: IdentityOpt = None,
    known_hosts: Annotated[Path | None, typer.Option(help="known_hosts file.")] = None,
    accept_new: Annotated[bool, typer.Option(help="Trust and remember an unknown host.")] = False,
    batch: Annotated[
        bool, typer.Option(help="Never prompt (default when stdin is not a tty).")
    ] = False,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    state.target, state.profile, state.keys = target, profile, identity or []
    state.known_hosts, state.accept_new = known_hosts, accept_new
    state.batch = batch or not sys.stdin.isatty()
    state.password_stdin, state.quiet, state.json, state.debug = (
        password_stdin, quiet, json_out, debug
    )  # fmt: skip
    if ctx.invoked_subcommand is None:
        if target or os.environ.get("XFER_TARGET") or Profiles.load().current(profile):
            from cli.shell import run_shell

            run_shell()
        else:
            print(ctx.get_help())


# -- profiles --------------------------------------------------------------------


@verb()
def login(
    target: Annotated[str, typer.Argument(help="user@host[:port]")],
    name: Annotated[str | None, typer.Option(help="Profile name [the target].")] = None,
) -> None:
    """Check the connection and save TARGET as the default profile, with the keys and
    known_hosts file that worked and the directory the server starts in."""
    state.target = target
    start = run(lambda r: r.sftp.realpath("."))
    profiles = Profiles.load()
    key = name or target
    old = profiles.profiles.get(key)
    profiles.profiles[key] = Profile(
        key,
        target,
        [str(Path(k).expanduser().resolve()) for k in state.keys],
        old.cwd if old and old.cwd else start,
        str((state.known_hosts or default_known_hosts()).expanduser().resolve()),
    )
    profiles.default = key
    profiles.save()
    if not state.quiet:
        print(f"logged in to {target} (profile {key})")


@verb()
def logout(name: Annotated[str | None, typer.Argument()] = None) -> None:
    """Forget a saved profile (the default one if no NAME)."""
    profiles = Profiles.load()
    key = name or profiles.default
    if not key or key not in profiles.profiles:
        fail(XferError(USAGE, "no such profile"))
    del profiles.profiles[key]
    if profiles.default == key:
        profiles.default = next(iter(profiles.profiles), None)
    profiles.save()


# -- transfers -------------------------------------------------------------------

ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue a partial transfer.")]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Whole directories.")]
VerifyOpt = Annotated[bool, typer.Option("--verify/--no-verify", help="Checksum afterwards.")]
ParallelOpt = Annotated[int, typer.Option("--parallel", "-P", help="Files at once with -r.")]


def summary(verb: str, report: transfer.Report) -> None:
    if report.unverified:
        print(f"xfer: warning: {report.unverified} file(s) not verified: the server offers "
              "no checksum", file=sys.stderr)  # fmt: skip
    if state.json:
        print(json.dumps({
            "files": report.files, "bytes": report.bytes, "seconds": round(report.seconds, 3),
            "resumed_from": report.resumed_from, "verified": sorted(report.verified),
            "unverified": report.unverified,
        }))  # fmt: skip
        return
    if state.quiet:
        return
    rate = report.bytes / report.seconds / 2**20 if report.seconds else 0.0
    check = f", verified {'/'.join(sorted(report.verified))}" if report.verified else ""
    print(f"{verb} {report.files} file(s), {report.bytes:,} bytes in {report.seconds:.1f} s "
          f"({rate:.1f} MiB/s){check}")  # fmt: skip


def _transfer_cmd(upload: bool, args: list[str], opts: transfer.Options) -> None:
    report = run(lambda r: transfer.transfer_many(r, upload, args, opts, state.show_progress))
    summary("uploaded" if upload else "downloaded", report)


@verb()
def put(
    sources: Annotated[list[str], typer.Argument(help="LOCAL... [REMOTE]")],
    resume: ResumeOpt = False,
    recursive: RecursiveOpt = False,
    verify: VerifyOpt = True,
    parallel: ParallelOpt = 4,
) -> None:
    """Upload files (and with -r directories); an existing remote file is replaced."""
    opts = transfer.Options(resume=resume, verify=verify, recursive=recursive, parallel=parallel)
    _transfer_cmd(True, sources, opts)


@verb()
def get(
    sources: Annotated[list[str], typer.Argument(help="REMOTE... [LOCAL]")],
    resume: ResumeOpt = False,
    recursive: RecursiveOpt = False,
    verify: VerifyOpt = True,
    parallel: ParallelOpt = 4,
) -> None:
    """Download files (and with -r directories)."""
    opts = transfer.Options(resume=resume, verify=verify, recursive=recursive, parallel=parallel)
    _transfer_cmd(False, sources, opts)


# -- remote files ----------------------------------------------------------------


def format_entry(e: Entry) -> str:
    from sftpd.sizes import format_size

    mode = stat.filemode(e.attrs.permissions or 0)
    size = format_size(e.size) if not e.is_dir else "-"
    mtime = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.attrs.mtime or 0))
    return f"{mode}  {size:>10}  {mtime}  {e.name}"


def entry_json(e: Entry) -> dict[str, Any]:
    kind = {asyncssh.FILEXFER_TYPE_DIRECTORY: "dir", asyncssh.FILEXFER_TYPE_REGULAR: "file",
            asyncssh.FILEXFER_TYPE_SYMLINK: "link"}.get(e.attrs.type, "other")  # fmt: skip
    return {"name": e.name, "type": kind, "mode": oct((e.attrs.permissions or 0) & 0o7777),
            "size": e.size, "mtime": e.attrs.mtime}  # fmt: skip


@verb("dir")
def dir_cmd(path: Annotated[str, typer.Argument()] = "") -> None:
    """List a directory like ls -l, sorted by name."""
    entries = run(lambda r: r.listdir(path))
    if state.json:
        print(json.dumps([entry_json(e) for e in entries], indent=2))
    else:
        for e in entries:
            print(format_entry(e))


@verb()
def cd(path: Annotated[str, typer.Argument()] = "") -> None:
    """Change the remote directory (none: where the server starts); later one-shot verbs
    are relative to it."""
    new = run(lambda r: r.cd(path))
    target, profile = resolve_profile()
    profiles = Profiles.load()
    key = profile.name if profile else str(state.target or os.environ.get("XFER_TARGET"))
    current = profiles.profiles.get(key) or Profile(key, str(target), state.keys)
    current.cwd = new
    profiles.profiles[key] = current
    profiles.save()
    if not state.quiet:
        print(new)


@verb()
def pwd() -> None:
    """Print the remote working directory."""
    _target, profile = resolve_profile()
    if profile and profile.cwd:
        print(profile.cwd)
        return

    async def start(remote: Remote) -> str:
        return remote.cwd  # where the server starts the session

    print(run(start))


@verb()
def mkdir(path: str, parents: Annotated[bool, typer.Option("--parents", "-p")] = False) -> None:
    """Create a remote directory."""
    run(lambda r: r.mkdir(path, parents))


@verb("del")
def delete(
    paths: list[str],
    recursive: RecursiveOpt = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Do not ask.")] = False,
) -> None:
    """Delete remote files (directories need -r; asks first on a terminal unless -f)."""

    async def work(remote: Remote) -> None:
        for p in paths:
            if recursive and await remote.is_dir(p) and not (force or state.batch):
                answer = await asyncio.to_thread(input, f"delete directory tree {p}? [y/N] ")
                if answer.strip().lower() not in ("y", "yes"):
                    continue
            await remote.remove(p, recursive)

    run(work)


@verb()
def mv(old: str, new: str) -> None:
    """Rename or move a remote file or directory."""
    run(lambda r: r.rename(old, new))


@verb()
def sp() -> None:
    """Space used and quota (the server's sp command)."""
    result = run(lambda r: r.run("sp", *(["--json"] if state.json else [])))
    if result.exit_status != 0:
        fail(XferError(1, str(result.stderr or "sp is not supported by this server").strip()))
    sys.stdout.write(str(result.stdout))


@app.command("help")
def help_cmd(ctx: typer.Context) -> None:
    """Show this help."""
    print(ctx.parent.get_help() if ctx.parent else "")


@verb()
def shell() -> None:
    """Interactive shell on one connection (also: plain `xfer` with a target)."""
    from cli.shell import run_shell

    run_shell()


def main_entry() -> None:
    """Console script ``xfer``."""
    app(prog_name="xfer")
