"""Helpers shared by the test modules (plain functions and classes; fixtures are in
``conftest.py``). Test modules import it as ``support`` (pytest puts ``tests/`` on the path).

Nothing here asserts inside a loop callback: the protocols record what the transport tells
them, and the tests assert after the run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import os
import random
import socket
import struct
from collections.abc import Callable
from typing import NamedTuple

#: Upper bound for any await in these tests (a broken loop fails instead of hanging).
SAFETY_TIMEOUT = 5.0

#: Deterministic payload of 1 MiB (bytes 0..255 repeated).
PAYLOAD = bytes(range(256)) * 4096

#: asyncio's default write-buffer limits: (low, high).
DEFAULT_LIMITS = (16 * 1024, 64 * 1024)

#: Stream socket kinds the transport tests run on: 127.0.0.1 TCP and AF_UNIX.
FAMILIES = ["tcp", "unix"]


def run(loop, awaitable, timeout: float = SAFETY_TIMEOUT):
    """Run ``awaitable`` to completion on ``loop``, failing after ``timeout`` seconds."""

    async def bounded():
        return await asyncio.wait_for(awaitable, timeout)

    return loop.run_until_complete(bounded())


class WeakReferable:
    """An object we can hold weak references to (to see that the loop let go of it)."""


def reset_connection(sock: socket.socket) -> None:
    """Close ``sock`` with SO_LINGER 0: the peer gets a TCP RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def recv_exactly(loop, sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``sock`` with sock_recv (fails on EOF before that)."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = await loop.sock_recv(sock, min(size - len(chunks), 1024 * 1024))
        assert chunk, f"EOF after {len(chunks)} of {size} bytes"
        chunks += chunk
    return bytes(chunks)


def open_fds() -> int:
    """How many descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """A ThreadPoolExecutor recording the functions submitted to it."""

    def __init__(self, max_workers: int = 2) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="counting")
        self.submitted: list[Callable] = []

    def submit(self, fn, /, *args, **kwargs):
        self.submitted.append(fn)
        return super().submit(fn, *args, **kwargs)


def closed_port() -> int:
    """A 127.0.0.1 TCP port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ipv6_available() -> bool:
    """Whether ::1 can be bound here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def collapse(events: list[tuple]) -> list[str]:
    """Callback names in order, runs of data_received/buffer_updated folded into one."""
    names: list[str] = []
    for event in events:
        if names and names[-1] == event[0] and event[0] in ("data_received", "buffer_updated"):
            continue
        names.append(event[0])
    return names


class Recorder(asyncio.Protocol):
    """A protocol recording every callback with its arguments.

    ``echo`` writes received data back; ``keep_open`` is what eof_received returns;
    ``greeting`` is written from connection_made.
    """

    def __init__(self, loop, *, echo=False, keep_open=False, greeting=b""):
        self.events: list[tuple] = []
        self.transport = None
        self.data = bytearray()
        self.echo = echo
        self.keep_open = keep_open
        self.greeting = greeting
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.received_any = loop.create_future()

    def connection_made(self, transport):
        self.events.append(("connection_made", transport))
        self.transport = transport
        if self.greeting:
            transport.write(self.greeting)
        self.made.set_result(transport)

    def data_received(self, data):
        self.events.append(("data_received", data))
        self.data += data
        if not self.received_any.done():
            self.received_any.set_result(None)
        if self.echo:
            self.transport.write(data)

    def eof_received(self):
        self.events.append(("eof_received",))
        self.eof.set_result(None)
        return self.keep_open

    def connection_lost(self, exc):
        self.events.append(("connection_lost", exc))
        self.lost.set_result(exc)


class FlowRecorder(Recorder):
    """Records pause_writing/resume_writing with the write-buffer size at that moment."""

    def __init__(self, loop, **kwargs):
        super().__init__(loop, **kwargs)
        self.flow: list[tuple[str, int]] = []
        self.paused = False
        self.resumed = loop.create_future()

    def pause_writing(self):
        self.flow.append(("pause_writing", self.transport.get_write_buffer_size()))
        self.paused = True

    def resume_writing(self):
        self.flow.append(("resume_writing", self.transport.get_write_buffer_size()))
        self.paused = False
        if not self.resumed.done():
            self.resumed.set_result(None)


async def serve(loop, kind: str, factory, unix_path: str, **kwargs):
    """A server of the given kind; returns (server, address to connect to)."""
    if kind == "tcp":
        server = await loop.create_server(factory, "127.0.0.1", 0, **kwargs)
        return server, server.sockets[0].getsockname()
    server = await loop.create_unix_server(factory, unix_path, **kwargs)
    return server, unix_path


async def connect(loop, kind: str, factory, address):
    """create_connection / create_unix_connection to ``address``."""
    if kind == "tcp":
        return await loop.create_connection(factory, *address)
    return await loop.create_unix_connection(factory, address)


async def accept_peer(loop, listener: socket.socket, factory):
    """Connect a transport to ``listener``; returns (transport, protocol, raw peer socket)."""
    listener.setblocking(False)
    accepting = asyncio.ensure_future(loop.sock_accept(listener))
    transport, protocol = await loop.create_connection(factory, *listener.getsockname())
    peer, _ = await accepting
    peer.setblocking(False)
    return transport, protocol, peer


async def fill_write_buffer(
    transport, chunk: bytes = b"x" * 65536, at_least: int = 256 * 1024, limit: int = 2000
) -> int:
    """Write ``chunk`` until the transport buffers ``at_least`` bytes (the peer reads nothing,
    so its receive window is full by then); returns the number of bytes written."""
    written = 0
    for _ in range(limit):
        transport.write(chunk)
        written += len(chunk)
        if transport.get_write_buffer_size() >= at_least:
            return written
        await asyncio.sleep(0.001)
    raise AssertionError("the write buffer never filled although the peer does not read")


def shrink_buffers(transport, peer: socket.socket) -> None:
    """A small kernel send buffer, so that the transport's own buffer fills sooner.

    (The peer's receive buffer is left alone: shrinking it on a connected socket makes Linux
    stall the stream on zero-window probes.)
    """
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


def raw_pair(kind: str) -> tuple[socket.socket, socket.socket]:
    """Two connected non-blocking stream sockets: (the transport's, the peer's)."""
    if kind == "unix":
        ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        with socket.create_server(("127.0.0.1", 0)) as listening:
            peer = socket.create_connection(listening.getsockname())
            ours, _ = listening.accept()
    ours.setblocking(False)
    peer.setblocking(False)
    return ours, peer


async def attach(loop, kind: str, factory, *, sndbuf: int | None = None):
    """A transport over one end of a fresh connection; returns (transport, protocol, peer).

    ``sndbuf`` shrinks the transport socket's kernel send buffer first, so that a write
    is only partly taken by the socket and the rest lands in the transport's buffer.
    """
    ours, peer = raw_pair(kind)
    if sndbuf is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    transport, protocol = await loop.connect_accepted_socket(factory, sock=ours)
    return transport, protocol, peer


async def recv_to_eof(loop, sock: socket.socket, *, reset_ok: bool = False) -> bytes:
    """Everything ``sock`` receives until EOF (or, with ``reset_ok``, a reset)."""
    chunks = bytearray()
    while True:
        try:
            chunk = await loop.sock_recv(sock, 1024 * 1024)
        except ConnectionResetError:
            if not reset_ok:
                raise
            return bytes(chunks)
        if not chunk:
            return bytes(chunks)
        chunks += chunk


async def until(predicate, timeout: float = 2.0) -> None:
    """Wait (running the loop) until ``predicate()`` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.002)


def fill_until_buffered(transport, seed: int = 0, chunk_size: int = 128 * 1024) -> bytes:
    """Write distinct chunks (without running the loop, so the peer reads nothing) until the
    socket refuses some and the transport buffers them; returns everything written."""
    rng = random.Random(seed)
    written = bytearray()
    for _ in range(400):
        chunk = rng.randbytes(chunk_size)
        transport.write(chunk)
        written += chunk
        if transport.get_write_buffer_size() > 0:
            return bytes(written)
    raise AssertionError("the socket never refused data although the peer does not read")


class Proto(asyncio.Protocol):
    """Records what the transport tells it.

    ``eof_result`` is what eof_received returns; ``pause_on_made`` pauses reading from
    connection_made.
    """

    def __init__(self, loop, *, eof_result=None, pause_on_made=False):
        self.transport = None
        self.data = bytearray()
        self.data_types: set[type] = set()
        self.eof_calls = 0
        self.lost_calls: list = []
        self.flow: list[tuple[str, int]] = []
        self.eof_result = eof_result
        self.pause_on_made = pause_on_made
        self.got_eof = loop.create_future()
        self.lost = loop.create_future()
        self.resumed = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        if self.pause_on_made:
            transport.pause_reading()

    def data_received(self, data):
        self.data_types.add(type(data))
        self.data += data

    def eof_received(self):
        self.eof_calls += 1
        if not self.got_eof.done():
            self.got_eof.set_result(None)
        return self.eof_result

    def connection_lost(self, exc):
        self.lost_calls.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.flow.append(("pause_writing", self.transport.get_write_buffer_size()))

    def resume_writing(self):
        self.flow.append(("resume_writing", self.transport.get_write_buffer_size()))
        if not self.resumed.done():
            self.resumed.set_result(None)


class SmallBuffer(asyncio.BufferedProtocol):
    """A BufferedProtocol whose get_buffer returns ``make_buffer()`` (or raises it)."""

    def __init__(self, loop, make_buffer):
        self.make_buffer = make_buffer
        self.hints: list[int] = []
        self.pieces: list[bytes] = []
        self.current = None
        self.transport = None
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        self.current = self.make_buffer()
        if isinstance(self.current, BaseException):
            raise self.current
        return self.current

    def buffer_updated(self, nbytes):
        self.pieces.append(bytes(memoryview(self.current)[:nbytes]))

    def eof_received(self):
        return None

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


#: A fault for the helpers below: called, it returns a context manager inside which the
#: fault is in effect (descriptors exhausted, the file table full, ...).
Fault = Callable[[], contextlib.AbstractContextManager]


@dataclasses.dataclass
class ConnectUnderFault:
    """What ``connect_under_fault`` saw."""

    #: What create_connection raised while the fault was in effect (None: nothing).
    error: BaseException | None
    #: The protocols the factory made meanwhile.
    made_under_fault: list[str]
    #: Descriptors open after that attempt (the fault lifted), less those open before it.
    leaked: int
    #: The protocols made by the attempt after the fault was lifted (which must work).
    made_after: list[str]


def connect_under_fault(loop, address, fault: Fault) -> ConnectUnderFault:
    """create_connection to ``address`` while ``fault`` is in effect, then again after it."""
    made: list[str] = []

    def factory():
        made.append("protocol")
        return asyncio.Protocol()

    async def connect():
        try:
            await loop.create_connection(factory, *address)
        except OSError as exc:
            return exc
        return None

    async def connect_again():
        transport, _ = await loop.create_connection(factory, *address)
        transport.close()
        await asyncio.sleep(0.01)

    run(loop, asyncio.sleep(0))  # the loop's lazily made objects exist before we count
    baseline = open_fds()
    with fault():
        error = run(loop, connect())
    made_under_fault = list(made)
    leaked = open_fds() - baseline
    made.clear()
    run(loop, connect_again())
    return ConnectUnderFault(error, made_under_fault, leaked, made)


class RaisedOSError(NamedTuple):
    """An OSError as seen, without the exception (whose traceback would keep what the
    failed call made alive)."""

    type: type
    errno: int | None
    strerror: str | None


def new_loop_under_fault(new_loop, fault: Fault):
    """``new_loop()`` while ``fault`` is in effect: (the loop, None) or (None, the OSError
    it raised, as a ``RaisedOSError``)."""
    made = error = None
    with fault():
        try:
            made = new_loop()
        except OSError as exc:
            error = exc
    # The exception is dropped only now, the fault lifted: its traceback holds the half-built
    # loop, whose finalizer (stock asyncio's reports an error) must not run under the fault.
    seen = None if error is None else RaisedOSError(type(error), error.errno, error.strerror)
    error = None
    return made, seen


def assert_failed_loop_left_nothing(loop_kind: str, baseline: int) -> None:
    """After a ``new_event_loop()`` that failed (nothing referencing what it made any more):
    no descriptor it made stays open once collected. Stock asyncio's half-built loop keeps
    its epoll descriptor while pytest holds the unraisable ``__del__`` error (until the next
    test); ferroloop closes what it made at once."""
    gc.collect()
    assert open_fds() <= baseline + (1 if loop_kind == "asyncio" else 0)
    if loop_kind == "ferroloop":
        assert open_fds() == baseline
