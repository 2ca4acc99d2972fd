#!/usr/bin/env bash
# README's first command: install sftpd into .venv and run it with embedded defaults
# (127.0.0.1:2222, state in ./data, host keys in ./keys). Extra arguments go to `sftpd serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/sftpd serve "$@"
