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
#: held OpenSSH sftp uploads to sftpd at 16 MB/s through a 50 ms link, 8 MiB let it do 62
#: and 16 MiB 105. But on loopback a fixed 16 MiB server window halved uploads (sftp -c
#: aes128-gcm into one worker, 1 GiB, medians of 6: 345 MB/s at 2 MiB, 338 at 4, 305 at 8,
#: 185 at 16). So a server channel starts at SERVER_WINDOW and grows (x8) up to
#: SERVER_WINDOW_MAX only while the window is what holds the sender back
#: (compat.growing_window; docs/performance.md). xfer's own window (downloads) shows no such
#: cliff (284-302 MB/s from 2 to 16 MiB), so it stays large.
SERVER_WINDOW = 2 * 1024 * 1024
SERVER_WINDOW_MAX = 16 * 1024 * 1024
CLIENT_WINDOW = 16 * 1024 * 1024
