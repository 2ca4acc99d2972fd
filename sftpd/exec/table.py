"""The exec command table: exact names -> handlers. Nothing else runs."""

from __future__ import annotations

from sftpd.exec import Handler
from sftpd.exec.checksums import checksum_command
from sftpd.exec.sp import sp

COMMANDS: dict[str, Handler] = {
    "sp": sp,
    "md5sum": checksum_command("md5"),
    "sha1sum": checksum_command("sha1"),
    "sha256sum": checksum_command("sha256"),
    "sha512sum": checksum_command("sha512"),
}
