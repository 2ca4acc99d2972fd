"""``xfer shell``: one connection, a prompt with history and tab completion of verbs and paths.

Each line is parsed by the same command as the one-shot verb and run by the same function
(see :func:`cli.app.verb`), on the shell's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncssh
import typer

from cli.errors import INTERRUPTED, USAGE, XferError, from_exception
from cli.output import fail
from cli.profiles import config_dir
from cli.remote import Remote
from cli.session import Call, Options, Session

LEAVE = ("exit", "quit")


@dataclass(frozen=True)
class ShellVerb:
    name: str  # the command's own name (the shell also knows aliases)
    command: Any  # typer's (vendored) click command: parses a line as the one-shot verb does
    run: Callable[..., Awaitable[None]]


def _argument_usage(param: Any) -> str:
    if getattr(param, "help", None):
        return str(param.help)
    name = str(param.name).upper() + ("..." if param.nargs == -1 else "")
    return name if param.required else f"[{name}]"


class Shell:
    def __init__(self, opts: Options, remote: Remote, verbs: Mapping[str, ShellVerb],
                 loop: asyncio.AbstractEventLoop) -> None:  # fmt: skip
        self.opts = opts
        self.session = Session(opts, remote)
        self.remote = remote
        self.verbs = verbs
        self.loop = loop
        self.prompt_user = remote.conn.get_extra_info("username") or ""
        self.host = str(remote.conn.get_extra_info("peername", ("?",))[0])

    @property
    def prompt(self) -> str:
        return f"{self.prompt_user}@{self.host}:{self.remote.cwd}> "

    # -- completion (runs in the input thread) ---------------------------------

    def complete(self, text: str, index: int) -> str | None:
        import readline

        line = readline.get_line_buffer()
        if not line[: readline.get_begidx()].strip():
            options = [v + " " for v in (*self.verbs, "help", *LEAVE) if v.startswith(text)]
        else:
            options = self._remote_matches(text)
        return options[index] if index < len(options) else None

    def _remote_matches(self, text: str) -> list[str]:
        head, _, tail = text.rpartition("/")
        directory = head + "/" if head else ""
        try:
            future = asyncio.run_coroutine_threadsafe(
                self.remote.listdir(directory or "."), self.loop
            )
            entries = future.result(5)
        except Exception:  # completion must never break the prompt
            return []
        return [
            directory + e.name + ("/" if e.is_dir else " ")
            for e in entries
            if e.name.startswith(tail)
        ]

    # -- commands ----------------------------------------------------------------

    def help(self) -> str:
        lines = ["verbs:"]
        for alias, verb in self.verbs.items():
            if alias != verb.name:
                continue
            usage = " ".join(
                _argument_usage(p) for p in verb.command.params if p.param_type_name == "argument"
            )
            also = [a for a, v in self.verbs.items() if v.name == verb.name and a != alias]
            short = verb.command.get_short_help_str(48) + (
                f" (also: {', '.join(also)})" if also else ""
            )
            lines.append(f"  {alias + ' ' + usage:<28} {short}")
        lines += [f"  {'help [VERB]':<28} this text, or a verb's options",
                  f"  {'exit':<28} leave (also: quit, Ctrl-D)"]  # fmt: skip
        return "\n".join(lines)

    async def execute(self, argv: list[str]) -> None:
        name, args = argv[0], argv[1:]
        if name == "help" and args and args[0] in self.verbs:
            name, args = args[0], ["--help"]
        verb = self.verbs.get(name)
        if verb is None:
            if name != "help":
                print(f"unknown verb: {name}")
            print(self.help())
            return
        try:
            ctx = verb.command.make_context(name, args, obj=self.opts)
        except typer.Exit:  # --help, printed
            return
        except typer.TyperException as exc:
            raise XferError(USAGE, exc.format_message()) from None
        params = dict(ctx.params)
        opts = self.opts.with_verb_options(
            tuple(params.pop("identity") or ()), params.pop("quiet"), params.pop("json_out")
        )
        await verb.run(Call(opts, self.session, interactive=True), **params)


async def _shell(opts: Options, verbs: Mapping[str, ShellVerb]) -> None:
    remote = await Session(opts).remote()
    loop = asyncio.get_running_loop()
    sh = Shell(opts, remote, verbs, loop)
    history = config_dir() / "history"
    try:
        import readline

        readline.set_completer(sh.complete)
        readline.set_completer_delims(" \t\n")
        readline.parse_and_bind("tab: complete")
        with contextlib.suppress(OSError):
            readline.read_history_file(history)
    except ImportError:  # pragma: no cover - readline is part of CPython on Linux
        readline = None  # type: ignore[assignment]
    current: asyncio.Task[None] | None = None

    def interrupt() -> None:
        if current is not None and not current.done():
            current.cancel()

    loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        while True:
            try:
                line = await asyncio.to_thread(input, sh.prompt)
            except EOFError:
                print()
                break
            try:
                argv = shlex.split(line)
            except ValueError as exc:
                print(f"xfer: {exc}", file=sys.stderr)
                continue
            if not argv:
                continue
            if argv[0] in LEAVE:
                break
            current = asyncio.create_task(sh.execute(argv))
            try:
                await current
            except asyncio.CancelledError:
                print("xfer: interrupted", file=sys.stderr)
            except (XferError, asyncssh.Error, OSError) as exc:
                print(f"xfer: {from_exception(exc)}", file=sys.stderr)
            finally:
                current = None
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if readline is not None:
            with contextlib.suppress(OSError):
                history.parent.mkdir(parents=True, exist_ok=True)
                readline.write_history_file(history)
        sh.session.close()


def run_shell(opts: Options, verbs: Mapping[str, ShellVerb]) -> None:
    """Run the shell until exit; a failure to connect is one line and an exit code."""
    try:
        asyncio.run(_shell(opts, verbs))
    except KeyboardInterrupt:
        raise typer.Exit(INTERRUPTED) from None
    except (XferError, asyncssh.Error, OSError) as exc:
        if opts.debug:
            raise
        fail(from_exception(exc))
