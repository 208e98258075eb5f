"""The inspector: a loop's ``stats()``, tasks and transports served on a Unix socket, for
``python -m ferroloop ps|top PID`` (``_inspect_cli.py``).

Opt-in only (``FERROLOOP_INSPECT=1`` or ``loop.serve_inspector()``): a process that did not opt
in has no socket and runs none of this. The socket is ``ferroloop-PID.sock`` in
``$XDG_RUNTIME_DIR`` (a per-user 0700 directory) when set, else in ``ferroloop-UID`` in the
temporary directory, a directory made 0700 and checked to belong to us. The socket itself is
0600 and every connection's peer is checked (``SO_PEERCRED``): only our user, or root, is
answered. It is served by an ``asyncio.Protocol`` on the loop itself: each request is one line
naming a view (``stats``, ``tasks``, ``transports`` or ``all``), each answer one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import tempfile
from typing import Any

from ._inspect import inspect_tasks, inspect_transports

MAX_REQUEST = 4096


def socket_directory(uid: int | None = None) -> str:
    """Where the inspector sockets of user ``uid`` (default: ours) are."""
    uid = os.getuid() if uid is None else uid
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return runtime
    return os.path.join(tempfile.gettempdir(), f"ferroloop-{uid}")


def socket_path(pid: int, uid: int | None = None) -> str:
    """The inspector socket of process ``pid`` (started by user ``uid``)."""
    return os.path.join(socket_directory(uid), f"ferroloop-{pid}.sock")


def _peer_uid(sock: Any) -> int | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    return struct.unpack("3i", raw)[1]


def answer(loop: asyncio.AbstractEventLoop, view: str) -> dict[str, Any]:
    """The answer to one request."""
    if view == "stats":
        return {"pid": os.getpid(), "stats": loop.stats()}  # type: ignore[attr-defined]
    if view == "tasks":
        return {"pid": os.getpid(), "tasks": inspect_tasks(loop)}
    if view == "transports":
        return {"pid": os.getpid(), "transports": inspect_transports(loop)}
    if view == "all":
        return {
            "pid": os.getpid(),
            "stats": loop.stats(),  # type: ignore[attr-defined]
            "tasks": inspect_tasks(loop),
            "transports": inspect_transports(loop),
        }
    return {"error": f"unknown view {view!r}"}


class _InspectorProtocol(asyncio.Protocol):
    _ferroloop_inspector = True  # its connections are left out of inspect_transports()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: Any = None
        self._pending = b""

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        sock = transport.get_extra_info("socket")
        uid = _peer_uid(sock) if sock is not None else None
        if uid is None or uid not in (os.getuid(), 0):
            transport.abort()

    def data_received(self, data: bytes) -> None:
        self._pending += data
        while b"\n" in self._pending:
            line, self._pending = self._pending.split(b"\n", 1)
            view = line.decode("ascii", "replace").strip()
            try:
                reply = answer(self._loop, view)
            except Exception as exc:  # a view that failed: the client sees why
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            self._transport.write(json.dumps(reply, default=str).encode() + b"\n")
        if len(self._pending) > MAX_REQUEST:
            self._transport.abort()


class InspectorServer:
    """A loop's inspector socket and its server."""

    def __init__(self, path: str, sock: socket.socket) -> None:
        self.path = path
        self._sock = sock
        self._server: Any = None
        self._starting: Any = None

    @classmethod
    def start(cls, loop: asyncio.AbstractEventLoop) -> InspectorServer:
        """Binds the socket now (it exists when this returns) and serves it from the loop.
        The directory and socket are prepared in Rust (``prepare_inspector_socket``): no
        ``os.stat``/``os.mkdir``/``os.unlink`` from Python on the loop's thread."""
        from ._ferroloop import prepare_inspector_socket

        fd, path = prepare_inspector_socket(
            os.environ.get("XDG_RUNTIME_DIR") or None,
            os.path.join(tempfile.gettempdir(), f"ferroloop-{os.getuid()}"),
            os.getpid(),
        )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
        server = cls(path, sock)
        coro = loop.create_unix_server(lambda: _InspectorProtocol(loop), sock=sock)
        server._starting = asyncio.ensure_future(coro, loop=loop)
        server._starting.add_done_callback(server._started)
        return server

    def _started(self, future: Any) -> None:
        if not future.cancelled() and future.exception() is None:
            self._server = future.result()

    def close(self) -> None:
        """Stops serving and removes the socket file."""
        if self._server is not None:
            self._server.close()
        elif self._starting is not None and not self._starting.done():
            self._starting.cancel()
            self._sock.close()
        else:
            self._sock.close()
        from ._ferroloop import remove_stale_socket_file

        try:
            remove_stale_socket_file(os.fsencode(self.path))
        except OSError:
            pass
