"""Settings precedence and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftpd.config import ConfigError, Settings, load_settings
from sftpd.sizes import format_size, parse_size


def test_defaults_without_any_source() -> None:
    s = load_settings(env={})
    assert s == Settings()
    assert (s.port, s.listen, s.login_grace_time, s.max_auth_attempts) == (
        2222, ("127.0.0.1",), 30.0, 6
    )  # fmt: skip
    assert s.default_quota == 5 * 1024**3


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[server]\nport = 1000\nidle-timeout = 5\nlog_level = "debug"\n')
    env = {"SFTPD_PORT": "2000", "SFTPD_IDLE_TIMEOUT": "7"}
    s = load_settings(conf, {"port": 3000}, env)
    assert (s.port, s.idle_timeout, s.log_level) == (3000, 7.0, "debug")
    s = load_settings(conf, {}, {})
    assert (s.port, s.idle_timeout) == (1000, 5.0)


def test_listen_accepts_lists_and_commas() -> None:
    assert load_settings(env={"SFTPD_LISTEN": "127.0.0.1, ::1"}).listen == ("127.0.0.1", "::1")


@pytest.mark.parametrize(
    ("env", "needle"),
    [({"SFTPD_PORT": "65536"}, "port"), ({"SFTPD_PORT": "x"}, "port"),
     ({"SFTPD_NOPE": "1"}, "SFTPD_NOPE"), ({"SFTPD_LOG_LEVEL": "loud"}, "log_level"),
     ({"SFTPD_MAX_AUTH_ATTEMPTS": "0"}, "max_auth_attempts"),
     ({"SFTPD_IDLE_TIMEOUT": "-1"}, "idle_timeout")],
)  # fmt: skip
def test_bad_values_name_the_setting(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(env=env)


def test_unknown_key_in_file(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text("prot = 22\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_settings(conf, env={})


@pytest.mark.parametrize(
    ("text", "value"),
    [("5GiB", 5 * 1024**3), ("500MB", 500_000_000), ("1.5T", int(1.5 * 1024**4)),
     ("1024", 1024), ("10k", 10240), ("unlimited", 0), ("0", 0), ("2 MiB", 2 * 1024**2)],
)  # fmt: skip
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "GiB", "5 XB", "-1", "1.2.3G"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(12) == "12 B"
    assert format_size(int(1.2 * 1024**3)) == "1.2 GiB"


def test_ciphers_and_database_settings() -> None:
    s = load_settings(env={"SFTPD_CIPHERS": "aes128-ctr, aes128-gcm@openssh.com"})
    assert s.ciphers == ("aes128-ctr", "aes128-gcm@openssh.com")
    for bad in ("aes128-cbc", "", "rot13"):
        with pytest.raises(ConfigError, match="ciphers"):
            load_settings(env={"SFTPD_CIPHERS": bad})
    assert load_settings(env={}).db_url.startswith("sqlite:///")
    url = "postgresql://sftpd@db.example/sftpd"
    assert load_settings(env={"SFTPD_DB": url}).db_url == url
    with pytest.raises(ConfigError, match="db"):
        load_settings(env={"SFTPD_DB": "mysql://x"})
    assert load_settings(env={"SFTPD_NODE_TIMEOUT": "5"}).node_timeout == 5.0


def test_counts_are_singular_for_one() -> None:
    from sftpd.sizes import count

    assert [count(n, "file") for n in (0, 1, 2, 1234)] == [
        "0 files", "1 file", "2 files", "1,234 files"
    ]  # fmt: skip
