"""The floor for sftpd's overhead: asyncssh's own SFTPServer with chroot, nothing else.

Usage: python -m bench.bare_server ROOT HOST_KEY AUTHORIZED_KEYS  (prints its port)
"""

from __future__ import annotations

import asyncio
import signal
import sys

import asyncssh


async def main(root: str, host_key: str, authorized: str) -> None:
    server = await asyncssh.create_server(
        None,
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=authorized,
        sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root.encode()),
        allow_scp=True,
        encoding=None,
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
