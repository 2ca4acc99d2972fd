"""The ``xfer`` command: each verb is one async function, run once here or many times by the
shell; connecting is in :mod:`cli.session`, printing in :mod:`cli.output`."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncssh
import typer

from cli import sync as sync_mod
from cli import transfer
from cli.connect import default_known_hosts
from cli.errors import EXIT_CODES_HELP, INTERRUPTED, REMOTE, USAGE, XferError, from_exception
from cli.output import fail, listing, summary, sync_plan, sync_summary
from cli.profiles import Profile, Profiles
from cli.session import Call, Options, Session, remember_cwd
from cli.shell import ShellVerb, run_shell
from sftpd.core.limits import Pacer
from sftpd.sizes import parse_size

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    rich_markup_mode=None,
    help="xfer: move files to and from an SFTP server (sftpd or any other).\n\n" + EXIT_CODES_HELP,
    add_completion=False,
    pretty_exceptions_enable=False,
    invoke_without_command=True,
    no_args_is_help=False,
)


def run(opts: Options, work: Callable[[Call], Awaitable[T]]) -> T:
    """Run ``work`` on a session opened on first use; every failure becomes one line and an
    exit code."""

    async def main() -> T:
        session = Session(opts)
        try:
            return await work(Call(opts, session))
        finally:
            session.close()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        print("xfer: interrupted", file=sys.stderr)
        raise typer.Exit(INTERRUPTED) from None
    except (XferError, asyncssh.Error, OSError) as exc:
        if opts.debug:
            raise
        fail(from_exception(exc))


IdentityOpt = Annotated[
    list[str] | None, typer.Option("--identity", "-i", help="Private key (repeatable).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No summary line.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
_CONTEXT = inspect.Parameter(
    "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
)
_SHARED = (
    inspect.Parameter("identity", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=IdentityOpt),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=QuietOpt),
    inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=JsonOpt),
)  # fmt: skip

IMPLEMENTATIONS: dict[str, Callable[..., Awaitable[None]]] = {}
SHELL_NAMES: dict[str, str] = {}  # what the shell accepts (aliases too) -> command name


def verb(name: str | None = None, *, also: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Register a verb; it also accepts ``-i``, ``-q`` and ``--json`` after its name.

    An async verb takes a :class:`Call` and works on the remote side: one-shot, it runs on
    its own connection; in the shell (under its name or ``also``), on the shell's. A plain
    function takes the :class:`Options` and is a one-shot command only.
    """

    def register(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        remote = inspect.iscoroutinefunction(fn)

        @functools.wraps(fn)
        def command(
            ctx: typer.Context, *, identity: list[str] | None = None, quiet: bool = False,
            json_out: bool = False, **kwargs: Any,
        ) -> None:  # fmt: skip
            opts = ctx.ensure_object(Options).with_verb_options(
                tuple(identity or ()), quiet, json_out
            )
            if remote:
                run(opts, lambda call: fn(call, **kwargs))
            else:
                fn(opts, **kwargs)

        own = list(sig.parameters.values())[1:]  # the Call or the Options
        command.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[_CONTEXT, *own, *_SHARED], return_annotation=None
        )
        command_name = name or fn.__name__
        app.command(command_name)(command)
        if remote:
            IMPLEMENTATIONS[command_name] = fn
            SHELL_NAMES.update({n: command_name for n in (command_name, *also)})
        return fn

    return register


def shell_verbs() -> dict[str, ShellVerb]:
    """Every remote verb, for the shell: parsed by the same command, run by the same code."""
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    return {
        alias: ShellVerb(name, commands[name], IMPLEMENTATIONS[name])
        for alias, name in SHELL_NAMES.items()
    }


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
    otp_stdin: Annotated[
        bool, typer.Option(help="Read a verification code from stdin (after any password).")
    ] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    ctx.obj = opts = Options(
        target=target, profile=profile, keys=tuple(identity or ()), known_hosts=known_hosts,
        accept_new=accept_new, batch=batch or not sys.stdin.isatty(),
        password_stdin=password_stdin, otp_stdin=otp_stdin, quiet=quiet, json=json_out, debug=debug,
    )  # fmt: skip
    if ctx.invoked_subcommand is None:
        if target or os.environ.get("XFER_TARGET") or Profiles.load().current(profile):
            run_shell(opts, shell_verbs())
        else:
            print(ctx.get_help())


# -- profiles --------------------------------------------------------------------


async def _start_directory(call: Call) -> str:
    return await (await call.remote()).sftp.realpath(".")


@verb()
def login(
    opts: Options,
    target: Annotated[str, typer.Argument(help="user@host[:port]")],
    name: Annotated[str | None, typer.Option(help="Profile name [the target].")] = None,
) -> None:
    """Check the connection and save TARGET as the default profile, with the keys and
    known_hosts file that worked and the directory the server starts in."""
    opts = replace(opts, target=target)
    start = run(opts, _start_directory)
    profiles = Profiles.load()
    key = name or target
    old = profiles.profiles.get(key)
    profiles.profiles[key] = Profile(
        key,
        target,
        [str(Path(k).expanduser().resolve()) for k in opts.keys],
        old.cwd if old and old.cwd else start,
        str((opts.known_hosts or default_known_hosts()).expanduser().resolve()),
    )
    profiles.default = key
    profiles.save()
    if not opts.quiet:
        print(f"logged in to {target} (profile {key})")


@verb()
def logout(opts: Options, name: Annotated[str | None, typer.Argument()] = None) -> None:
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
LimitOpt = Annotated[
    str | None, typer.Option("--limit-rate", help="Total bytes per second, e.g. 10MiB.")
]
ParallelOpt = Annotated[
    int,
    typer.Option("--jobs", "-j", "--parallel", "-P",
                 help="Connections: files at once, or segments of one big file."),
]  # fmt: skip


SegmentOpt = Annotated[
    str,
    typer.Option("--segment-from", help="Split one file this big over the connections."),
]


def _segment_min(text: str) -> int:
    try:
        return max(1, parse_size(text))
    except ValueError as exc:
        raise XferError(USAGE, f"--segment-from: {exc}") from None


def _pacer(rate: str | None) -> Pacer:
    """``--limit-rate``: one pace for every connection of this command."""
    try:
        return Pacer(parse_size(rate.removesuffix("/s")) if rate else 0)
    except ValueError as exc:
        raise XferError(USAGE, f"--limit-rate: {exc}") from None


async def _transfer(call: Call, upload: bool, args: list[str], opts: transfer.Options) -> None:
    report = await transfer.transfer_many(
        call.session.pool, upload, args, opts, call.opts.show_progress
    )
    summary(call.opts, "uploaded" if upload else "downloaded", report)


@verb()
async def put(
    call: Call,
    sources: Annotated[list[str], typer.Argument(help="LOCAL... [REMOTE]")],
    resume: ResumeOpt = False,
    recursive: RecursiveOpt = False,
    verify: VerifyOpt = True,
    parallel: ParallelOpt = 4,
    limit_rate: LimitOpt = None,
    segment_from: SegmentOpt = "64MiB",
) -> None:
    """Upload files (and with -r directories); an existing remote file is replaced."""
    opts = transfer.Options(resume=resume, verify=verify, recursive=recursive, parallel=parallel,
                            limit=_pacer(limit_rate),
                            segment_min=_segment_min(segment_from))  # fmt: skip
    await _transfer(call, True, sources, opts)


@verb()
async def get(
    call: Call,
    sources: Annotated[list[str], typer.Argument(help="REMOTE... [LOCAL]")],
    resume: ResumeOpt = False,
    recursive: RecursiveOpt = False,
    verify: VerifyOpt = True,
    parallel: ParallelOpt = 4,
    limit_rate: LimitOpt = None,
    segment_from: SegmentOpt = "64MiB",
) -> None:
    """Download files (and with -r directories)."""
    opts = transfer.Options(resume=resume, verify=verify, recursive=recursive, parallel=parallel,
                            limit=_pacer(limit_rate),
                            segment_min=_segment_min(segment_from))  # fmt: skip
    await _transfer(call, False, sources, opts)


@verb()
async def sync(
    call: Call,
    source: Annotated[str, typer.Argument(help="LOCAL_DIR (or REMOTE_DIR with --pull)")],
    dest: Annotated[str, typer.Argument(help="REMOTE_DIR (or LOCAL_DIR with --pull)")],
    pull: Annotated[bool, typer.Option("--pull", help="Download: REMOTE_DIR LOCAL_DIR.")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="Remove what the source lacks.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Print the plan only.")] = False,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Skip names or paths (glob, repeatable).")
    ] = None,
    checksum: Annotated[
        bool, typer.Option("--checksum", "-c", help="Compare content, not size and mtime.")
    ] = False,
    verify: VerifyOpt = True,
    parallel: ParallelOpt = 4,
    limit_rate: LimitOpt = None,
) -> None:
    """Make a directory tree match another: copy what is missing or differs (size, mtime, or
    content with -c), keep mtimes, resume partial files; --delete removes extras."""
    remote = await call.remote()
    local, rroot = (
        (Path(dest), remote.resolve(source)) if pull else (Path(source), remote.resolve(dest))
    )
    opts = sync_mod.Options(pull, delete, dry_run, checksum, tuple(exclude or ()))
    plan = await sync_mod.plan(remote, local, rroot, opts)
    if dry_run:
        sync_plan(call.opts, plan)
        return
    copy = transfer.Options(verify=verify, parallel=parallel, limit=_pacer(limit_rate))
    report = await sync_mod.apply(
        call.session.pool, local, rroot, plan, opts, copy, call.opts.show_progress
    )
    sync_summary(call.opts, report)


# -- remote files ----------------------------------------------------------------


@verb("dir", also=("ls",))
async def dir_cmd(call: Call, path: Annotated[str, typer.Argument()] = "") -> None:
    """List a directory like ls -l, sorted by name."""
    listing(call.opts, await (await call.remote()).listdir(path))


@verb()
async def cd(call: Call, path: Annotated[str, typer.Argument()] = "") -> None:
    """Change the remote directory (none: where the server starts); later one-shot verbs
    are relative to it."""
    new = await (await call.remote()).cd(path)
    if call.interactive:  # the prompt shows it, and it lasts as long as the shell
        return
    remember_cwd(call.opts, new)
    if not call.opts.quiet:
        print(new)


@verb()
async def pwd(call: Call) -> None:
    """Print the remote working directory."""
    print(call.session.known_cwd() or (await call.remote()).cwd)


@verb()
async def mkdir(
    call: Call, path: str, parents: Annotated[bool, typer.Option("--parents", "-p")] = False
) -> None:
    """Create a remote directory."""
    await (await call.remote()).mkdir(path, parents)


@verb("del", also=("rm",))
async def delete(
    call: Call,
    paths: list[str],
    recursive: RecursiveOpt = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Do not ask.")] = False,
) -> None:
    """Delete remote files (directories need -r; asks first on a terminal unless -f)."""
    remote = await call.remote()
    for p in paths:
        if recursive and await remote.is_dir(p) and not (force or call.opts.batch):
            answer = await asyncio.to_thread(input, f"delete directory tree {p}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                continue
        await remote.remove(p, recursive)


@verb()
async def mv(call: Call, old: str, new: str) -> None:
    """Rename or move a remote file or directory."""
    await (await call.remote()).rename(old, new)


@verb()
async def sp(call: Call) -> None:
    """Space used and quota (the server's sp command)."""
    result = await (await call.remote()).run("sp", *(["--json"] if call.opts.json else []))
    if result.exit_status != 0:
        raise XferError(REMOTE, str(result.stderr or "sp is not supported by this server").strip())
    sys.stdout.write(str(result.stdout))


@app.command("help")
def help_cmd(ctx: typer.Context) -> None:
    """Show this help."""
    print(ctx.parent.get_help() if ctx.parent else "")


@verb()
def shell(opts: Options) -> None:
    """Interactive shell on one connection (also: plain `xfer` with a target)."""
    run_shell(opts, shell_verbs())


@verb()
def ui(
    opts: Options,
    local_dir: Annotated[Path, typer.Argument(help="Local directory to start in.")] = Path("."),
) -> None:
    """Two-pane file manager: local files left, the server's right, a transfer queue below."""
    from cli.ui import run_ui

    try:
        code = run_ui(opts, local_dir)
    except XferError as exc:
        fail(exc)
    raise typer.Exit(code)


def main_entry() -> None:
    """Console script ``xfer``."""
    app(prog_name="xfer")
