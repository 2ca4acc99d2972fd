"""xfer, the command-line client: put/get with resume and verification, and friends.

``app.py`` parses and prints; ``connect.py`` owns targets, auth and host keys;
``transfer.py`` does resume, verification and progress; ``errors.py`` holds the
exit-code table.
"""

import sftpd  # noqa: F401  (first: it silences asyncssh's DSA warnings before asyncssh loads)
