"""Socket set-up that servers (``_server``) and datagram endpoints (``_datagram``) share:
SO_REUSEPORT with asyncio's errors, and replacing a stale Unix socket file before binding."""

from __future__ import annotations

import logging
import os
import socket
import stat

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
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)
