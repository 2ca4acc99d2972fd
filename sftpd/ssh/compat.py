"""Transport tweaks sftpd and xfer apply to asyncssh connections (asyncssh 2.24)."""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

_EMPTY_IGNORE = String(b"")


def skip_cbc_countermeasure(
    conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection,
) -> None:
    """Stop asyncssh sending an empty MSG_IGNORE before every packet, unless CBC is in use.

    asyncssh inserts one ahead of each encrypted packet, a countermeasure against the
    2008 plaintext-recovery attack on CBC modes. With AES-GCM, chacha20-poly1305 or
    AES-CTR it protects nothing and doubles the packets, encryptions and sends of every
    transfer (OpenSSH does not send them). Measured on a 1 GiB download: about 17% less
    server CPU. Only those empty IGNOREs are dropped, and only when the negotiated
    cipher is not CBC.
    """
    send = conn.send_packet

    def send_packet(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if (
            pkttype == MSG_IGNORE
            and args == (_EMPTY_IGNORE,)
            and not kwargs
            and "cbc" not in str(conn.get_extra_info("send_cipher", "cbc"))
        ):
            return
        send(pkttype, *args, **kwargs)

    conn.send_packet = send_packet  # type: ignore[method-assign]
