"""Socket set-up that servers (``_server``) and datagram endpoints (``_datagram``) share:
SO_REUSEPORT with asyncio's errors, and replacing a stale Unix socket file before binding."""

from __future__ import annotations

import logging
import os
import socket

from ._ferroloop import remove_stale_socket_file

logger = logging.getLogger("asyncio")


def enable_reuse_port(sock: socket.socket) -> None:
    """Sets SO_REUSEPORT, or raises asyncio's ValueError where the platform lacks it."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        ) from None


def remove_stale_unix_socket(path) -> None:
    """Removes the socket file an earlier server left at ``path`` (not in the abstract
    namespace); a path that is not a socket is left alone, and a failure to check is logged,
    as asyncio does."""
    if path[0] in (0, "\x00"):
        return
    try:
        remove_stale_socket_file(os.fsencode(path))
    except OSError as err:
        logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)
