"""[[hooks]] in the TOML file: parsed into Settings.hooks, every mistake one clear line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sftpd.config import ConfigError, load_settings
from sftpd.events import Event
from sftpd.events.hooks import Hook, old_meaning_warnings


def test_hooks_load_from_the_toml_file(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(
        '[server]\nupload_mode = "atomic"\n\n'
        '[[hooks]]\nevents = ["upload"]\npaths = ["/incoming/*"]\n'
        'command = ["/bin/true", "--x"]\ntimeout = 5\n\n'
        '[[hooks]]\nevents = ["upload", "delete"]\nusers = ["ana"]\n'
        'url = "http://127.0.0.1:9/h"\nsecret_env = "HOOK_SECRET"\nretries = 0\n'
    )
    s = load_settings(conf, env={"HOOK_SECRET": "k"})  # secret_env reads the process env
    assert s.upload_mode == "atomic"
    first, second = s.hooks
    assert first == Hook(("upload",), (), ("/incoming/*",), ("/bin/true", "--x"), "", 5.0)
    assert first.retries is None and first.horizon == 86400  # retried for a day
    assert second.url.endswith("/h") and second.retries == 0 and second.users == ("ana",)
    assert first.wants(Event("upload", "bob", path="/incoming/a.csv"))
    assert not first.wants(Event("upload", "bob", path="/elsewhere/a.csv"))
    assert not second.wants(Event("upload", "bob")) and second.wants(Event("delete", "ana"))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('events = ["upload"]', "exactly one of command or url"),
        ('events = ["uplod"]\ncommand = ["x"]', "unknown event 'uplod'"),
        ('events = ["upload"]\ncommand = "rm -rf /"', "command must be a list of strings"),
        ('events = ["upload"]\nurl = "ftp://x"', "url must start with http"),
        ('events = ["upload"]\ncommand = ["x"]\ntimeout = 0', "timeout must be a positive"),
        ('events = ["upload"]\ncommand = ["x"]\nshell = true', "unknown key 'shell'"),
        ('events = ["upload"]\nurl = "http://x"\nsecret_env = "NOPE_UNSET"', "NOPE_UNSET"),
    ],
)
def test_a_bad_hook_is_one_line_naming_it(tmp_path: Path, table: str, message: str) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(
        f'[[hooks]]\nevents = ["login"]\ncommand = ["/bin/true"]\n\n[[hooks]]\n{table}\n'
    )
    with pytest.raises(ConfigError) as err:
        load_settings(conf, env={})
    text = str(err.value)
    assert "\n" not in text and "hook 2:" in text and message in text


def test_a_hook_label_never_carries_url_credentials() -> None:
    hook = Hook(("upload",), url="https://ingest:hunter2@example.org:8443/hook")
    assert hook.label == "https://example.org:8443/hook"
    assert Hook(("upload",), command=("/usr/bin/ingest", "--fast")).label == "ingest"


@pytest.mark.parametrize(
    ("pattern", "path", "wanted"),
    [
        ("/incoming/*", "/incoming/a.csv", True),
        ("/incoming/*", "/incoming/sub/a.csv", False),  # fnmatch said True
        ("/incoming/**", "/incoming/sub/a.csv", True),
        ("/incoming/**/*.csv", "/incoming/x/y/a.csv", True),
        ("/*/report-?.txt", "/ana/report-1.txt", True),
        ("/*/report-?.txt", "/a/b/report-1.txt", False),
        ("/in/[ab]*.txt", "/in/b1.txt", True),
        ("/in/[!ab]*.txt", "/in/b1.txt", False),
        ("/in/a[/]b", "/in/a/b", False),  # a class never matches "/"
        ("/in/a+b(1).txt", "/in/a+b(1).txt", True),  # regex characters are literal
        ("**", "/anything/at/all", True),
        ("/a/**/b", "/a/b", True),  # ** between names may be no directory at all
        ("/a/**/b", "/a/x/y/b", True),
        ("/a/**/b", "/a/xb", False),
        ("/incoming/**/*.csv", "/incoming/a.csv", True),
        ("/in/**.csv", "/in/x/y.csv", True),
        ("/in/*", "/in/", True),  # * may match nothing
        ("/in/[a-c]?.txt", "/in/b9.txt", True),
        ("/in/[a-c]?.txt", "/in/d9.txt", False),
        ("/in/?", "/in//", False),  # ? never matches "/"
        ("/in/a\\b", "/in/a\\b", True),  # a backslash is a literal
    ],
)
def test_hook_paths_read_like_paths(pattern: str, path: str, wanted: bool) -> None:
    assert Hook(("upload",), paths=(pattern,)).wants(Event("upload", "u", path=path)) is wanted


def test_a_pattern_relying_on_the_old_star_gets_a_warning() -> None:
    hooks = (Hook(("upload",), paths=("/in/**", "/out/*")), Hook(("upload",), paths=("/a/*.csv",)))
    lines = old_meaning_warnings(hooks)
    assert len(lines) == 2
    assert lines[0].startswith("hook 1:") and "'/out/**'" in lines[0]
    assert lines[1].startswith("hook 2:") and "'**'" in lines[1]
    assert old_meaning_warnings((Hook(("upload",), paths=("/in/**",)),)) == []


def test_matching_stays_linear_whatever_the_pattern() -> None:
    """Patterns run on the event loop against names users chose: a backtracking regex took
    minutes on this; the automaton walks the path once."""
    pattern = "/**a**a**a**a**a**a**b"
    path = "/" + "a/" * 2000 + "a" * 4000
    started = time.process_time()
    for _ in range(10):
        assert not Hook(("upload",), paths=(pattern,)).wants(Event("upload", "u", path=path))
    assert Hook(("upload",), paths=(pattern,)).wants(Event("upload", "u", path=path + "b"))
    assert time.process_time() - started < 5  # about 0.1 s; a regex: hours


def test_a_rename_matches_by_either_path() -> None:
    hook = Hook(("rename",), paths=("/incoming/**",))
    assert hook.wants(Event("rename", "u", path="/tmp/a", target="/incoming/a"))
    assert hook.wants(Event("rename", "u", path="/incoming/a", target="/done/a"))
    assert not hook.wants(Event("rename", "u", path="/tmp/a", target="/tmp/b"))
