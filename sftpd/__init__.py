"""sftpd: a secure, quota-limited SFTP and SCP file service on asyncssh."""

import warnings

__version__ = "0.1.0"

# Recent cryptography releases deprecate DSA, and asyncssh names its DSA classes at import: every
# command would print five warnings on stderr before its own output. sftpd never offers
# ssh-dss, so the warning says nothing to its users; only asyncssh's lines are silenced.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh(\.|$)")
