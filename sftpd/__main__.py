"""``python -m sftpd``."""

from sftpd.commands import main

main()
