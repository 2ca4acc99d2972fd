"""Transport preferences shared by the server and xfer: no server policy here."""

from __future__ import annotations

#: Every cipher sftpd can offer, in its order of preference (no CBC: see docs/security.md).
#: xfer asks for them in the same order.
SUPPORTED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)

#: SSH channel windows: how much data may be in flight before the receiver acknowledges.
#: A window bounds one channel to about window / round-trip time: asyncssh's default 2 MiB
#: held OpenSSH sftp uploads to sftpd at 16 MB/s and xfer's at 51 MB/s through a 50 ms link;
#: 16 MiB on the server let xfer put 109 MB/s (docs/performance.md). The window is credit,
#: not memory: a session only buffers that much if the disk cannot keep up with the link.
#: On loopback neither size makes a difference.
SERVER_WINDOW = 16 * 1024 * 1024
CLIENT_WINDOW = 16 * 1024 * 1024
