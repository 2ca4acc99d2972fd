#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run
# lint, type checks and every test. README's second command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    if [ -z "${APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# Real clients drive the interop tests: OpenSSH, and rclone's sftp backend.
for bin in sftp scp ssh ssh-keygen; do
    command -v "$bin" >/dev/null || { apt_install openssh-client; break; }
done
command -v rclone >/dev/null || apt_install rclone
# curl (libssh2's sftp:// and scp://), sshfs over FUSE with fio on top, restic's sftp backend.
for pkg in curl:curl sshfs:sshfs fusermount3:fuse3 fio:fio restic:restic; do
    command -v "${pkg%%:*}" >/dev/null || apt_install "${pkg#*:}"
done
# Server packages whose system services must not start: the tests run their own copies
# (sshd with its own config, PostgreSQL initdb'd into a temp dir) on 127.0.0.1.
# policy-rc.d keeps apt from starting the system's services; the tests never touch them.
apt_install_quiet_service() {
    if [ "$(id -u)" = 0 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        apt_install "$@"
        rm -f /usr/sbin/policy-rc.d
    else
        apt_install "$@"
    fi
}
[ -x /usr/sbin/sshd ] || apt_install_quiet_service openssh-server
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install_quiet_service postgresql
# coreutils' *sum commands are the reference for ours.
command -v sha512sum >/dev/null || apt_install coreutils

PYTHON="${PYTHON:-python3}"
# The C accelerator for chacha20-poly1305 (sftpd/ssh/_chacha.c) builds with these; without
# them pip skips it and sftpd runs its Python path (tests/interop/test_chacha.py insists).
command -v gcc >/dev/null || apt_install gcc
[ -e /usr/include/openssl/evp.h ] || apt_install libssl-dev
[ -e "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] \
    || apt_install python3-dev
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv || { apt_install python3-venv; "$PYTHON" -m venv .venv; }
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/pytest "$@"
