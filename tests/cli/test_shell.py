"""xfer shell driven through a pseudo-terminal, as a person types."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect

from tests.support import Xfer
from tests.support.live import LiveServer, User


def test_shell_session(live_server: LiveServer, user: User, tmp_path: Path) -> None:
    x = Xfer(tmp_path, f"{user.name}@127.0.0.1:{live_server.port}", user.key_path,
             live_server.known_hosts)  # fmt: skip
    (user.home / "documents").mkdir()
    (user.home / "documents" / "report.txt").write_text("quarterly numbers\n")
    (tmp_path / "up.txt").write_text("from the shell\n")
    child = pexpect.spawn(sys.executable, ["-m", "cli", *x.base[3:]], env=x.env, cwd=str(tmp_path),
                          encoding="utf-8", timeout=30, dimensions=(40, 200))  # fmt: skip
    try:
        prompt = f"{user.name}@127.0.0.1:/> "
        child.expect_exact(prompt)
        child.sendline("help")
        child.expect_exact("put LOCAL")
        child.expect_exact(prompt)
        child.sendline("frobnicate")
        child.expect_exact("unknown verb: frobnicate")
        child.expect_exact("verbs:")
        child.expect_exact(prompt)
        child.send("cd doc\t")  # completes the remote directory name
        child.expect_exact("cd documents/")
        child.sendline("")
        child.expect_exact(f"{user.name}@127.0.0.1:/documents> ")
        child.send("ge\t")  # completes the verb
        child.expect_exact("get ")
        child.send("rep\t")
        child.expect_exact("report.txt")
        child.sendline(" got.txt")
        child.expect_exact("downloaded 1 file(s)")
        child.sendline("put up.txt")
        child.expect_exact("uploaded 1 file(s)")
        child.sendline("dir")
        child.expect_exact("report.txt")
        child.sendline("get nothing-here")
        child.expect_exact("xfer: ")
        child.expect_exact(f"{user.name}@127.0.0.1:/documents> ")
        child.sendline("pwd")
        child.expect_exact("/documents")
        # Lines are parsed by the one-shot verbs' own parser, options and all.
        child.sendline("ls --json")
        child.expect_exact('"name": "report.txt"')
        child.sendline("mv onlyone")
        child.expect_exact("xfer: Missing argument 'new'")
        child.sendline("help mv")
        child.expect_exact("Usage: mv [OPTIONS]")
        child.expect_exact("Rename or move a remote file")
        child.sendline("mkdir -p keep/inner")
        child.expect_exact(f"{user.name}@127.0.0.1:/documents> ")
        child.sendline("rm -r keep")  # a person at a terminal is asked first
        child.expect_exact("delete directory tree keep? [y/N] ")
        child.sendline("n")
        child.expect_exact(f"{user.name}@127.0.0.1:/documents> ")
        assert (user.home / "documents" / "keep" / "inner").is_dir()
        child.sendline("del -r -f keep")
        child.expect_exact(f"{user.name}@127.0.0.1:/documents> ")
        child.sendline("dir")
        child.expect_exact(f"{user.name}@127.0.0.1:/documents> ")
        assert not (user.home / "documents" / "keep").exists()
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert (tmp_path / "got.txt").read_text() == "quarterly numbers\n"
    assert (user.home / "documents" / "up.txt").read_text() == "from the shell\n"
    assert "Traceback" not in (child.before or "")
    assert os.path.exists(tmp_path / "cfg" / "history")
