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
#: A window bounds one channel to window / round-trip time (asyncssh's default 2 MiB: 40 MB/s
#: at 50 ms). The server's bounds uploads; it also bounds what a stalled upload may buffer
#: per session, so the server's is smaller. On loopback neither makes a difference.
SERVER_WINDOW = 8 * 1024 * 1024
CLIENT_WINDOW = 16 * 1024 * 1024
