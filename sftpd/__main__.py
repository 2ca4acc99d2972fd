"""``python -m sftpd``."""

from sftpd.admin import main

main()
