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
