"""Transports. The stream transport (TCP and Unix) is native (``StreamTransport``, in
``src/stream_transport.rs``); the datagram transport below is Python on the loop's native
readiness machinery (``_add_reader``/``_add_writer``). Behaviour follows CPython 3.11's
selector transports: callback order, write buffering with flow control (pause_writing /
resume_writing at the high/low water marks), and errors reported through the loop's
exception handler.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import threading
import warnings
from asyncio import trsock
from typing import Any

from ._ferroloop import StreamTransport

logger = logging.getLogger("asyncio")

#: Bytes read per receive, into one buffer per thread shared by every transport: reads are
#: copied out before the protocol runs, so idle connections hold no read buffer at all.
READ_SIZE = 256 * 1024
_read_buffers = threading.local()


def _shared_read_buffer() -> bytearray:
    buffer = getattr(_read_buffers, "buffer", None)
    if buffer is None:
        buffer = _read_buffers.buffer = bytearray(READ_SIZE)
    return buffer
#: Default high-water mark of the write buffer (asyncio's).
DEFAULT_HIGH_WATER = 64 * 1024
#: After this many writes to a lost connection, each further write logs a warning.
LOST_WRITES_BEFORE_WARNING = 5


def _set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY on TCP sockets, as asyncio does for every stream transport."""
    if (
        sock.family in (socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET))
        and sock.type == socket.SOCK_STREAM
        and sock.proto == socket.IPPROTO_TCP
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _SocketTransportBase:
    """What stream and datagram transports share: protocol bookkeeping, flow control of the
    write buffer, closing (graceful or forced), fatal-error reporting, extra info."""

    def _setup(self, loop, sock, protocol, server=None) -> None:
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._loop = loop
        self._sock = sock
        self._sock_fd = sock.fileno()
        loop._transports[self._sock_fd] = self
        self._protocol_connected = False
        self.set_protocol(protocol)
        self._server = server
        self._conn_lost = 0
        self._closing = False
        self._protocol_paused = False
        self._high_water = DEFAULT_HIGH_WATER
        self._low_water = DEFAULT_HIGH_WATER // 4
        self._empty_waiter = None
        if server is not None:
            server._attach()

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else ("closing" if self._closing else "open")
        return f"<{type(self).__name__} fd={self._sock_fd} {state}>"

    def __del__(self, _warn=warnings.warn):
        if getattr(self, "_sock", None) is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()

    def set_protocol(self, protocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._protocol_connected = True

    def get_protocol(self):
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water, self._low_water = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self.get_write_buffer_size() <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        self._notify_protocol("pause_writing")

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self.get_write_buffer_size() <= self._low_water:
            self._protocol_paused = False
            self._notify_protocol("resume_writing")

    def _notify_protocol(self, method: str) -> None:
        try:
            getattr(self._protocol, method)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": f"protocol.{method}() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    def close(self) -> None:
        """Closes after the buffered data is written; connection_lost(None) follows."""
        if self._closing:
            return
        self._closing = True
        self._loop._remove_reader(self._sock_fd)
        if not self._buffer:
            self._conn_lost += 1
            self._loop._remove_writer(self._sock_fd)
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        """Closes at once, dropping buffered data."""
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc)

    def _force_close(self, exc) -> None:
        if self._conn_lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._loop._remove_writer(self._sock_fd)
        if not self._closing:
            self._closing = True
            self._loop._remove_reader(self._sock_fd)
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc) -> None:
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            if self._empty_waiter is not None and not self._empty_waiter.done():
                self._empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))
            self._sock.close()
            self._sock = None
            self._protocol = None
            self._loop = None
            server, self._server = self._server, None
            if server is not None:
                server._detach()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)


def SocketTransport(loop, sock, protocol, waiter=None, extra=None, server=None):
    """A stream transport over a connected non-blocking socket: the native
    ``StreamTransport`` (``src/stream_transport.rs``). ``connection_made`` and reading start
    on the next loop iteration; then ``waiter`` (a future) gets its result."""
    transport = StreamTransport(loop, sock, protocol, extra, server)
    transport._start(waiter)
    return transport


class DatagramTransport(_SocketTransportBase, asyncio.Transport, asyncio.DatagramTransport):
    """A datagram transport (UDP or AF_UNIX datagrams) over a non-blocking socket;
    ``address`` set means connected (sendto's address must then be None or it). Like
    asyncio's, it is also an ``asyncio.Transport`` (for the flow-control API)."""

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        super().__init__(extra)
        self._setup(loop, sock, protocol)
        self._address = address
        self._buffer: collections.deque = collections.deque()
        self._buffer_size = 0
        loop.call_soon(self._protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(asyncio.futures._set_result_unless_cancelled, waiter, None)

    def _start_reading(self) -> None:
        if not self._closing:
            self._loop._add_reader(self._sock_fd, self._read_ready)

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def _read_ready(self) -> None:
        if self._conn_lost:
            return
        try:
            data, address = self._sock.recvfrom(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
            return
        self._protocol.datagram_received(data, address)

    def sendto(self, data, addr=None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if not data:
            return
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        if self._conn_lost and self._address:
            if self._conn_lost >= LOST_WRITES_BEFORE_WARNING:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            try:
                if self._extra["peername"]:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop._add_writer(self._sock_fd, self._send_buffered)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._buffer.append((bytes(data), addr))
        self._buffer_size += len(data)
        self._maybe_pause_protocol()

    def _send_buffered(self) -> None:
        while self._buffer:
            data, addr = self._buffer.popleft()
            self._buffer_size -= len(data)
            try:
                if self._extra["peername"]:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                self._buffer.appendleft((data, addr))  # try again when writable
                self._buffer_size += len(data)
                break
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._maybe_resume_protocol()
        if not self._buffer:
            self._loop._remove_writer(self._sock_fd)
            if self._closing:
                self._conn_lost += 1  # a later abort() must not report the loss twice
                self._call_connection_lost(None)
