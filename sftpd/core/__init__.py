"""Protocol-neutral rules: confinement (jail), the user's file operations (session), errors.

Nothing here imports asyncssh.
"""

from sftpd.core.errors import SftpdError
from sftpd.core.files import AttrChanges, OpenFile, OpenMode
from sftpd.core.jail import Jail
from sftpd.core.quota import QuotaLedger, scan_home
from sftpd.core.session import Session, UsageReport

__all__ = [
    "AttrChanges",
    "Jail",
    "OpenFile",
    "OpenMode",
    "QuotaLedger",
    "Session",
    "SftpdError",
    "UsageReport",
    "scan_home",
]
