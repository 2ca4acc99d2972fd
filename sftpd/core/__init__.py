"""Protocol-neutral rules: confinement (jail), the user's file operations (session), errors.

Nothing here imports asyncssh.
"""

from sftpd.core.errors import SftpdError
from sftpd.core.jail import Jail
from sftpd.core.session import AttrChanges, OpenFile, OpenMode, Session

__all__ = ["AttrChanges", "Jail", "OpenFile", "OpenMode", "Session", "SftpdError"]
