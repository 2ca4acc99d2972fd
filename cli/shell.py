"""``xfer shell``: one connection, a prompt with history and tab completion of verbs and paths."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable

import asyncssh

from cli import transfer
from cli.app import entry_json, format_entry, open_remote
from cli.errors import INTERRUPTED, XferError, from_exception
from cli.profiles import config_dir
from cli.remote import Remote

HELP = """\
verbs:
  put LOCAL... [REMOTE] [-r] [--resume] [--no-verify]   upload
  get REMOTE... [LOCAL] [-r] [--resume] [--no-verify]   download
  dir [PATH] [--json]        list (also: ls)
  cd [PATH]                  change remote directory
  pwd                        print remote directory
  mkdir PATH [-p]            create a directory
  del PATH... [-r] [-f]      delete (also: rm)
  mv OLD NEW                 rename or move
  sp [--json]                space used and quota
  help                       this text
  exit                       leave (also: quit, Ctrl-D)"""

VERBS = ["put", "get", "dir", "ls", "cd", "pwd", "mkdir", "del", "rm", "mv", "sp", "help",
         "exit", "quit"]  # fmt: skip


def split_flags(argv: list[str]) -> tuple[set[str], list[str]]:
    flags = {a for a in argv if a.startswith("-") and a != "-"}
    return flags, [a for a in argv if a not in flags]


class Shell:
    def __init__(self, remote: Remote, loop: asyncio.AbstractEventLoop) -> None:
        self.remote = remote
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
            options = [v + " " for v in VERBS if v.startswith(text)]
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

    async def execute(self, argv: list[str]) -> None:
        verb, args = argv[0], argv[1:]
        flags, args = split_flags(args)
        handlers: dict[str, Callable[[set[str], list[str]], Awaitable[None]]] = {
            "put": self.put, "get": self.get, "dir": self.dir, "ls": self.dir, "cd": self.cd,
            "pwd": self.pwd, "mkdir": self.mkdir, "del": self.delete, "rm": self.delete,
            "mv": self.mv, "sp": self.sp,
        }  # fmt: skip
        handler = handlers.get(verb)
        if handler is None:
            if verb != "help":
                print(f"unknown verb: {verb}")
            print(HELP)
            return
        await handler(flags, args)

    def _options(self, flags: set[str]) -> transfer.Options:
        return transfer.Options(
            resume="--resume" in flags,
            verify="--no-verify" not in flags,
            recursive=bool({"-r", "--recursive"} & flags),
        )

    async def put(self, flags: set[str], args: list[str]) -> None:
        await self._transfer(True, flags, args)

    async def get(self, flags: set[str], args: list[str]) -> None:
        await self._transfer(False, flags, args)

    async def _transfer(self, upload: bool, flags: set[str], args: list[str]) -> None:
        if not args:
            verb = "put LOCAL... [REMOTE]" if upload else "get REMOTE... [LOCAL]"
            raise XferError(2, f"usage: {verb}")
        opts = self._options(flags)
        report = await transfer.transfer_many(self.remote, upload, args, opts, sys.stderr.isatty())
        done = "uploaded" if upload else "downloaded"
        print(f"{done} {report.files} file(s), {report.bytes:,} bytes")

    async def dir(self, flags: set[str], args: list[str]) -> None:
        entries = await self.remote.listdir(args[0] if args else "")
        if "--json" in flags:
            import json

            print(json.dumps([entry_json(e) for e in entries], indent=2))
        for e in entries if "--json" not in flags else []:
            print(format_entry(e))

    async def cd(self, flags: set[str], args: list[str]) -> None:
        await self.remote.cd(args[0] if args else "")

    async def pwd(self, flags: set[str], args: list[str]) -> None:
        print(self.remote.cwd)

    async def mkdir(self, flags: set[str], args: list[str]) -> None:
        for a in args:
            await self.remote.mkdir(a, parents=bool({"-p", "--parents"} & flags))

    async def delete(self, flags: set[str], args: list[str]) -> None:
        recursive = bool({"-r", "--recursive"} & flags)
        for a in args:
            if recursive and await self.remote.is_dir(a) and not ({"-f", "--force"} & flags):
                answer = await asyncio.to_thread(input, f"delete directory tree {a}? [y/N] ")
                if answer.strip().lower() not in ("y", "yes"):
                    continue
            await self.remote.remove(a, recursive)

    async def mv(self, flags: set[str], args: list[str]) -> None:
        if len(args) != 2:
            raise XferError(2, "usage: mv OLD NEW")
        await self.remote.rename(*args)

    async def sp(self, flags: set[str], args: list[str]) -> None:
        result = await self.remote.run("sp", *(["--json"] if "--json" in flags else []))
        sys.stdout.write(str(result.stdout or result.stderr or "sp is not supported\n"))


async def _shell() -> None:
    remote = await open_remote()
    loop = asyncio.get_running_loop()
    sh = Shell(remote, loop)
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
                print(f"xfer: {exc}")
                continue
            if not argv:
                continue
            if argv[0] in ("exit", "quit"):
                break
            current = asyncio.create_task(sh.execute(argv))
            try:
                await current
            except asyncio.CancelledError:
                print("xfer: interrupted")
            except (XferError, asyncssh.Error, OSError) as exc:
                print(f"xfer: {from_exception(exc)}")
            finally:
                current = None
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if readline is not None:
            with contextlib.suppress(OSError):
                history.parent.mkdir(parents=True, exist_ok=True)
                readline.write_history_file(history)
        remote.sftp.exit()
        remote.conn.close()


def run_shell() -> None:
    try:
        asyncio.run(_shell())
    except KeyboardInterrupt:
        raise SystemExit(INTERRUPTED) from None
    except (XferError, asyncssh.Error, OSError) as exc:
        err = from_exception(exc)
        print(f"xfer: {err}", file=sys.stderr)
        raise SystemExit(err.code) from None
