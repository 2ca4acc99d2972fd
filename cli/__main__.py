"""``python -m cli``."""

from cli.app import app

app(prog_name="xfer")
