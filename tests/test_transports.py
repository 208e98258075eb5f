"""Stream transports and servers (issue #4), against CPython's selector loop.

TCP (127.0.0.1) and AF_UNIX stream connections made with create_connection /
create_unix_connection / connect_accepted_socket, servers made with create_server /
create_unix_server, and asyncio streams on top of them:

* echo through a Protocol and through asyncio streams (start_server/open_connection and the
  UNIX variants);
* the protocol callback order and arguments: connection_made(transport) → data_received(bytes)*
  → eof_received() → connection_lost(None); writing from connection_made; writing after close;
* close() flushes the write buffer, abort() drops it; write_eof and half-close (eof_received
  returning True keeps the transport writable);
* flow control: the write-buffer limits, pause_writing/resume_writing at the high/low marks
  (the peer does not read), pause_reading/resume_reading/is_reading;
* BufferedProtocol (get_buffer/buffer_updated), get_extra_info, set_protocol/get_protocol;
* create_connection errors (refused; several addresses failing: one combined OSError);
  create_server's host forms, sock=, reuse_port; the Server object (sockets, is_serving,
  start_serving, serve_forever, close, wait_closed, get_loop, ``async with``);
  create_unix_server over a stale socket file and over a regular file;
* faults: a peer reset reaches connection_lost; a failing protocol factory does not stop the
  server; a failing data_received is reported and closes the transport; add_reader & co.
  refuse a transport's descriptor.

TLS, UDP, pipes and subprocesses are not covered here.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import socket
import struct
import tempfile
from asyncio import trsock

import pytest

#: Upper bound for any await in these tests (a broken loop fails instead of hanging).
SAFETY_TIMEOUT = 5.0

#: Deterministic payload of 1 MiB (bytes 0..255 repeated).
PAYLOAD = bytes(range(256)) * 4096

#: asyncio's default write-buffer limits: (low, high).
DEFAULT_LIMITS = (16 * 1024, 64 * 1024)

FAMILIES = ["tcp", "unix"]


def run(loop, awaitable, timeout: float = SAFETY_TIMEOUT):
    """Run ``awaitable`` to completion on ``loop``, failing after ``timeout`` seconds."""

    async def bounded():
        return await asyncio.wait_for(awaitable, timeout)

    return loop.run_until_complete(bounded())


def reset_connection(sock: socket.socket) -> None:
    """Close ``sock`` with SO_LINGER 0: the peer gets a TCP RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


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


@pytest.fixture
def unix_path():
    """A fresh AF_UNIX socket path (short enough for sun_path), removed afterwards."""
    directory = tempfile.mkdtemp(prefix="fl-", dir="/tmp")
    yield os.path.join(directory, "sock")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def listener():
    """A raw, listening 127.0.0.1 TCP socket (the peer of the transport under test)."""
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture
def handler_calls(loop):
    """Exception handler contexts reported on ``loop``."""
    calls: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: calls.append(context))
    return calls


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


async def read_to_eof(loop, sock: socket.socket) -> bytes:
    """Everything ``sock`` receives until EOF (sock_recv)."""
    chunks = []
    while True:
        chunk = await loop.sock_recv(sock, 256 * 1024)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


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


# ----------------------------------------------------------------------------- echo


@pytest.mark.parametrize("kind", FAMILIES)
def test_protocol_echo_and_callback_order(loop, kind, unix_path):
    """1 MiB through an echoing server; both sides see connection_made(transport) →
    data_received(bytes)* → eof_received() → connection_lost(None)."""
    servers: list[Recorder] = []

    def server_factory():
        servers.append(Recorder(loop, echo=True))
        return servers[-1]

    async def main():
        server, address = await serve(loop, kind, server_factory, unix_path)
        client = Recorder(loop)
        transport, protocol = await connect(loop, kind, lambda: client, address)
        assert protocol is client
        assert isinstance(transport, asyncio.Transport)
        assert client.events[0] == ("connection_made", transport)
        transport.write(PAYLOAD)
        transport.write_eof()
        exc = await client.lost
        await servers[0].lost
        server.close()
        await server.wait_closed()
        return transport, exc

    transport, exc = run(loop, main())
    assert exc is None
    (server_side,) = servers
    assert bytes(server_side.data) == PAYLOAD
    assert collapse(server_side.events) == [
        "connection_made",
        "data_received",
        "eof_received",
        "connection_lost",
    ]
    assert server_side.events[-1] == ("connection_lost", None)
    assert server_side.events[0][1] is server_side.transport
    assert all(type(e[1]) is bytes for e in server_side.events if e[0] == "data_received")
    assert transport.is_closing()


@pytest.mark.parametrize("kind", FAMILIES)
def test_client_callback_order_with_arguments(loop, kind, unix_path):
    """The client of an echo server gets the echoed bytes, then eof_received(), then
    connection_lost(None), in that order, with those arguments."""

    async def main():
        server, address = await serve(loop, kind, lambda: Recorder(loop, echo=True), unix_path)
        client = Recorder(loop)
        transport, _ = await connect(loop, kind, lambda: client, address)
        transport.write(b"hello ")
        transport.write(bytearray(b"world"))
        transport.write(memoryview(b"!"))
        transport.write_eof()
        await client.lost
        server.close()
        await server.wait_closed()
        return transport, client

    transport, client = run(loop, main())
    assert bytes(client.data) == b"hello world!"
    assert collapse(client.events) == [
        "connection_made",
        "data_received",
        "eof_received",
        "connection_lost",
    ]
    assert client.events[0] == ("connection_made", transport)
    assert client.events[-2] == ("eof_received",)
    assert client.events[-1] == ("connection_lost", None)
    assert all(type(e[1]) is bytes for e in client.events if e[0] == "data_received")


@pytest.mark.parametrize("kind", FAMILIES)
def test_stream_echo(loop, kind, unix_path):
    """start_server/open_connection (start_unix_server/open_unix_connection): line echo."""
    lines = [b"line %d\n" % i for i in range(50)] + [b"z" * 60000 + b"\n"]

    async def handle(reader, writer):
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        if kind == "tcp":
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        else:
            server = await asyncio.start_unix_server(handle, unix_path)
            reader, writer = await asyncio.open_unix_connection(unix_path)
        address = server.sockets[0].getsockname()
        async with server:
            assert server.is_serving()
            received = []
            for line in lines:
                writer.write(line)
                await writer.drain()
                received.append(await reader.readline())
            writer.write_eof()
            assert await reader.read() == b""
            assert reader.at_eof()
            peer = writer.get_extra_info("peername")
            writer.close()
            await writer.wait_closed()
        assert not server.is_serving()
        return received, peer, address

    received, peer, address = run(loop, main())
    assert received == lines
    assert peer == address


def test_connect_accepted_socket_echo(loop, listener):
    """connect_accepted_socket wraps an already accepted socket in a transport."""

    async def main():
        client = socket.socket()
        client.setblocking(False)
        await loop.sock_connect(client, listener.getsockname())
        conn, _ = listener.accept()
        server_side = Recorder(loop, echo=True)
        transport, protocol = await loop.connect_accepted_socket(lambda: server_side, conn)
        assert protocol is server_side
        assert server_side.events == [("connection_made", transport)]
        await loop.sock_sendall(client, b"ping")
        assert await loop.sock_recv(client, 100) == b"ping"
        client.shutdown(socket.SHUT_WR)
        assert await server_side.lost is None
        assert await loop.sock_recv(client, 100) == b""
        client.close()
        return server_side

    server_side = run(loop, main())
    assert collapse(server_side.events) == [
        "connection_made",
        "data_received",
        "eof_received",
        "connection_lost",
    ]


# ----------------------------------------------------------------------------- writing


def test_write_from_connection_made_before_create_connection_returns(loop, listener):
    """connection_made runs (and may write) before create_connection returns."""
    order = []

    class Greeter(Recorder):
        def connection_made(self, transport):
            order.append("connection_made")
            super().connection_made(transport)

    async def main():
        listener.setblocking(False)
        accepting = asyncio.ensure_future(loop.sock_accept(listener))
        transport, _ = await loop.create_connection(
            lambda: Greeter(loop, greeting=b"early bird"), *listener.getsockname()
        )
        order.append("create_connection returned")
        peer, _ = await accepting
        peer.setblocking(False)
        data = await loop.sock_recv(peer, 100)
        transport.close()
        peer.close()
        return data

    assert run(loop, main()) == b"early bird"
    assert order == ["connection_made", "create_connection returned"]


def test_write_after_close_is_dropped(loop, listener, caplog):
    """Writes after close() raise nothing and send nothing; after a few, each one logs a
    warning on the asyncio logger."""

    async def main():
        transport, client, peer = await accept_peer(loop, listener, lambda: Recorder(loop))
        transport.close()
        assert transport.is_closing()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(3):
                transport.write(b"dropped")
            early_warnings = len(caplog.records)
            assert await client.lost is None
            for _ in range(10):
                transport.write(b"dropped")
        data = await read_to_eof(loop, peer)
        peer.close()
        return early_warnings, data

    early_warnings, data = run(loop, main())
    assert data == b""
    assert early_warnings == 0
    warnings = [r for r in caplog.records if r.name == "asyncio"]
    assert warnings and all(r.getMessage() == "socket.send() raised exception." for r in warnings)


def test_write_argument_type_error(loop, listener):
    async def main():
        transport, _, peer = await accept_peer(loop, listener, lambda: Recorder(loop))
        try:
            with pytest.raises(
                TypeError, match="data argument must be a bytes-like object, not 'str'"
            ):
                transport.write("text")
            transport.write(b"")  # nothing to send: no error
            assert transport.get_write_buffer_size() == 0
        finally:
            transport.close()
            peer.close()

    run(loop, main())


def test_close_flushes_buffered_data(loop, listener):
    """close() with buffered data: connection_lost waits until the peer has taken it all,
    then the peer sees EOF."""

    async def main():
        transport, client, peer = await accept_peer(loop, listener, lambda: Recorder(loop))
        shrink_buffers(transport, peer)
        written = await fill_write_buffer(transport)
        assert transport.get_write_buffer_size() > 0
        transport.close()
        assert transport.is_closing()
        await asyncio.sleep(0.05)
        assert not client.lost.done(), "connection_lost before the buffer was flushed"
        data = await read_to_eof(loop, peer)
        assert await client.lost is None
        peer.close()
        return written, data

    written, data = run(loop, main())
    assert len(data) == written
    assert data == b"x" * written


def test_abort_drops_buffered_data(loop, listener):
    """abort() with buffered data: connection_lost(None) at once, the buffer is dropped."""

    async def main():
        transport, client, peer = await accept_peer(loop, listener, lambda: Recorder(loop))
        shrink_buffers(transport, peer)
        written = await fill_write_buffer(transport)
        assert transport.get_write_buffer_size() > 0
        transport.abort()
        assert transport.is_closing()
        assert await asyncio.wait_for(client.lost, 1.0) is None
        assert transport.get_write_buffer_size() == 0
        try:
            data = await read_to_eof(loop, peer)
        except ConnectionResetError:
            data = b""
        peer.close()
        return written, data, client

    written, data, client = run(loop, main())
    assert len(data) < written
    assert collapse(client.events) == ["connection_made", "connection_lost"]


def test_abort_after_close_drops_the_rest(loop, listener):
    """close() then abort(): the rest of the buffer is dropped; connection_lost(None) is
    called once; further close()/abort() calls do nothing."""

    async def main():
        transport, client, peer = await accept_peer(loop, listener, lambda: Recorder(loop))
        shrink_buffers(transport, peer)
        written = await fill_write_buffer(transport)
        transport.close()
        transport.close()
        await asyncio.sleep(0.01)
        assert not client.lost.done()
        transport.abort()
        assert await asyncio.wait_for(client.lost, 1.0) is None
        transport.abort()
        transport.close()
        await asyncio.sleep(0.01)
        try:
            data = await read_to_eof(loop, peer)
        except ConnectionResetError:
            data = b""
        peer.close()
        return written, data, client

    written, data, client = run(loop, main())
    assert len(data) < written
    assert client.events[1:] == [("connection_lost", None)]


@pytest.mark.parametrize("kind", FAMILIES)
def test_write_eof_half_close(loop, kind, unix_path):
    """The client's write_eof reaches the server's eof_received; returning True keeps the
    server's transport open, and it still writes its reply, then closes."""
    servers: list[Recorder] = []

    class Replier(Recorder):
        def eof_received(self):
            super().eof_received()
            assert not self.transport.is_closing()
            self.transport.write(b"reply to " + bytes(self.data))
            asyncio.get_running_loop().call_soon(self.transport.close)
            return True

    def factory():
        servers.append(Replier(loop))
        return servers[-1]

    async def main():
        server, address = await serve(loop, kind, factory, unix_path)
        client = Recorder(loop)
        transport, _ = await connect(loop, kind, lambda: client, address)
        assert transport.can_write_eof()
        transport.write(b"request")
        transport.write_eof()
        transport.write_eof()  # a second call is a no-op
        with pytest.raises(RuntimeError, match=r"Cannot call write\(\) after write_eof\(\)"):
            transport.write(b"more")
        assert not transport.is_closing()
        exc = await client.lost
        await servers[0].lost
        server.close()
        await server.wait_closed()
        return exc, client

    exc, client = run(loop, main())
    assert exc is None
    assert bytes(client.data) == b"reply to request"
    assert collapse(client.events) == [
        "connection_made",
        "data_received",
        "eof_received",
        "connection_lost",
    ]
    assert servers[0].events[-1] == ("connection_lost", None)
    assert collapse(servers[0].events) == [
        "connection_made",
        "data_received",
        "eof_received",
        "connection_lost",
    ]


# ----------------------------------------------------------------------------- flow control


def test_write_buffer_limits(loop, listener):
    async def main():
        transport, _, peer = await accept_peer(loop, listener, lambda: Recorder(loop))
        try:
            assert transport.get_write_buffer_limits() == DEFAULT_LIMITS
            assert transport.get_write_buffer_size() == 0
            transport.set_write_buffer_limits(high=100)
            assert transport.get_write_buffer_limits() == (25, 100)
            transport.set_write_buffer_limits(low=10)
            assert transport.get_write_buffer_limits() == (10, 40)
            transport.set_write_buffer_limits(high=200, low=50)
            assert transport.get_write_buffer_limits() == (50, 200)
            transport.set_write_buffer_limits(high=0)
            assert transport.get_write_buffer_limits() == (0, 0)
            transport.set_write_buffer_limits()
            assert transport.get_write_buffer_limits() == DEFAULT_LIMITS
            with pytest.raises(ValueError, match=r"high \(1\) must be >= low \(2\) must be >= 0"):
                transport.set_write_buffer_limits(high=1, low=2)
            with pytest.raises(ValueError, match="must be >= 0"):
                transport.set_write_buffer_limits(high=1, low=-1)
            assert transport.get_write_buffer_limits() == DEFAULT_LIMITS
        finally:
            transport.close()
            peer.close()

    run(loop, main())


def test_pause_and_resume_writing_at_the_marks(loop, listener):
    """pause_writing once the buffer exceeds the high mark (the peer does not read);
    resume_writing once it drains to the low mark (the peer reads)."""
    high, low = 256 * 1024, 64 * 1024

    async def main():
        transport, client, peer = await accept_peer(loop, listener, lambda: FlowRecorder(loop))
        shrink_buffers(transport, peer)
        transport.set_write_buffer_limits(high=high, low=low)
        assert transport.get_write_buffer_limits() == (low, high)
        chunk = b"y" * 32768
        written = 0
        for _ in range(2000):
            if client.paused:
                break
            transport.write(chunk)
            written += len(chunk)
            await asyncio.sleep(0)
        assert client.paused, "pause_writing never called"
        # Writing more while paused does not call pause_writing again.
        transport.write(chunk)
        written += len(chunk)
        assert [name for name, _ in client.flow] == ["pause_writing"]
        reading = asyncio.ensure_future(read_exactly(peer, written))
        await client.resumed
        data = await reading
        transport.close()
        await client.lost
        peer.close()
        return client.flow, data, written

    async def read_exactly(sock, size):
        chunks, got = [], 0
        while got < size:
            chunk = await loop.sock_recv(sock, 256 * 1024)
            assert chunk, "EOF before all data arrived"
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    flow, data, written = run(loop, main())
    assert [name for name, _ in flow] == ["pause_writing", "resume_writing"]
    assert flow[0][1] > high
    assert flow[1][1] <= low
    assert len(data) == written


def test_lowering_the_high_mark_pauses_writing(loop, listener):
    """set_write_buffer_limits below the current buffer size calls pause_writing at once."""

    async def main():
        transport, client, peer = await accept_peer(loop, listener, lambda: FlowRecorder(loop))
        shrink_buffers(transport, peer)
        transport.set_write_buffer_limits(high=1 << 30)
        await fill_write_buffer(transport)
        assert client.flow == []
        size = transport.get_write_buffer_size()
        assert size > 0
        transport.set_write_buffer_limits(high=size - 1, low=0)
        flow = list(client.flow)
        transport.abort()
        await client.lost
        peer.close()
        return flow, size

    flow, size = run(loop, main())
    assert flow == [("pause_writing", size)]


def test_pause_and_resume_reading(loop, listener):
    async def main():
        transport, client, peer = await accept_peer(loop, listener, lambda: Recorder(loop))
        assert transport.is_reading()
        transport.pause_reading()
        assert not transport.is_reading()
        transport.pause_reading()  # already paused: no error
        await loop.sock_sendall(peer, b"while paused")
        await asyncio.sleep(0.1)
        assert client.data == b""
        transport.resume_reading()
        assert transport.is_reading()
        transport.resume_reading()  # already reading: no error
        await client.received_any
        while len(client.data) < len(b"while paused"):
            await asyncio.sleep(0.01)
        transport.close()
        assert not transport.is_reading()
        transport.resume_reading()  # closing: no effect, no error
        assert not transport.is_reading()
        await client.lost
        peer.close()
        return client.data

    assert run(loop, main()) == b"while paused"


# ----------------------------------------------------------------------------- protocols


class BufferRecorder(asyncio.BufferedProtocol):
    """A BufferedProtocol reading into a small buffer, recording every callback."""

    def __init__(self, loop, size=4096):
        self.buffer = bytearray(size)
        self.data = bytearray()
        self.events: list[tuple] = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append(("connection_made", transport))

    def get_buffer(self, sizehint):
        self.events.append(("get_buffer", sizehint))
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes):
        self.events.append(("buffer_updated", nbytes))
        self.data += self.buffer[:nbytes]

    def eof_received(self):
        self.events.append(("eof_received",))

    def connection_lost(self, exc):
        self.events.append(("connection_lost", exc))
        self.lost.set_result(exc)


def test_buffered_protocol(loop, listener):
    """1 MiB read through get_buffer/buffer_updated into a 4 KiB buffer."""

    async def main():
        transport, proto, peer = await accept_peer(loop, listener, lambda: BufferRecorder(loop))
        await loop.sock_sendall(peer, PAYLOAD)
        peer.shutdown(socket.SHUT_WR)
        assert await proto.lost is None
        peer.close()
        return transport, proto

    transport, proto = run(loop, main())
    assert bytes(proto.data) == PAYLOAD
    events = proto.events
    assert events[0] == ("connection_made", transport)
    assert events[-2:] == [("eof_received",), ("connection_lost", None)]
    middle = events[1:-2]
    updates = [e for e in middle if e[0] == "buffer_updated"]
    assert len(updates) >= len(PAYLOAD) // 4096
    assert all(0 < n <= 4096 for _, n in updates)
    assert all(isinstance(e[1], int) for e in middle if e[0] == "get_buffer")
    # every buffer_updated follows a get_buffer
    for previous, event in zip(middle, middle[1:], strict=False):
        if event[0] == "buffer_updated":
            assert previous[0] == "get_buffer"


def test_buffered_protocol_server_side(loop, unix_path):
    """A BufferedProtocol served by create_unix_server."""
    protos: list[BufferRecorder] = []

    def factory():
        protos.append(BufferRecorder(loop, size=1000))
        return protos[-1]

    async def main():
        server = await loop.create_unix_server(factory, unix_path)
        transport, _ = await loop.create_unix_connection(asyncio.Protocol, unix_path)
        transport.write(PAYLOAD[:300000])
        transport.write_eof()
        await asyncio.sleep(0)
        while not protos:
            await asyncio.sleep(0.01)
        await protos[0].lost
        transport.close()
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert bytes(protos[0].data) == PAYLOAD[:300000]


@pytest.mark.parametrize("kind", FAMILIES)
def test_get_extra_info(loop, kind, unix_path):
    servers: list[Recorder] = []

    def factory():
        servers.append(Recorder(loop))
        return servers[-1]

    async def main():
        server, address = await serve(loop, kind, factory, unix_path)
        transport, client = await connect(loop, kind, lambda: Recorder(loop), address)
        while not servers:
            await asyncio.sleep(0.01)
        server_transport = await servers[0].made
        info = {name: transport.get_extra_info(name) for name in ("socket", "sockname", "peername")}
        server_info = {
            name: server_transport.get_extra_info(name) for name in ("sockname", "peername")
        }
        sock = info["socket"]
        raw = {
            "fileno": sock.fileno(),
            "sockname": sock.getsockname(),
            "peername": sock.getpeername(),
            "family": sock.family,
            "type": sock.type,
        }
        missing = transport.get_extra_info("no such key")
        default = transport.get_extra_info("no such key", "fallback")
        transport.close()
        await client.lost
        await servers[0].lost
        server.close()
        await server.wait_closed()
        return info, server_info, raw, missing, default, address

    info, server_info, raw, missing, default, address = run(loop, main())
    assert isinstance(info["socket"], trsock.TransportSocket)
    assert not isinstance(info["socket"], socket.socket)
    assert raw["family"] == (socket.AF_INET if kind == "tcp" else socket.AF_UNIX)
    assert raw["type"] == socket.SOCK_STREAM
    assert info["sockname"] == raw["sockname"]
    assert info["peername"] == raw["peername"]
    if kind == "tcp":
        assert info["peername"] == tuple(address)
        assert server_info["peername"] == info["sockname"]
        assert server_info["sockname"] == info["peername"]
    else:
        assert info["peername"] == unix_path
        assert server_info["sockname"] == unix_path
    assert missing is None
    assert default == "fallback"


def test_set_protocol_and_get_protocol(loop, listener):
    """After set_protocol, data and connection_lost go to the new protocol only."""

    async def main():
        transport, first, peer = await accept_peer(loop, listener, lambda: Recorder(loop))
        assert transport.get_protocol() is first
        await loop.sock_sendall(peer, b"one")
        await first.received_any
        second = Recorder(loop)
        transport.set_protocol(second)
        assert transport.get_protocol() is second
        await loop.sock_sendall(peer, b"two")
        await second.received_any
        peer.shutdown(socket.SHUT_WR)
        assert await second.lost is None
        peer.close()
        return first, second

    first, second = run(loop, main())
    assert bytes(first.data) == b"one"
    assert collapse(first.events) == ["connection_made", "data_received"]
    assert bytes(second.data) == b"two"
    assert collapse(second.events) == ["data_received", "eof_received", "connection_lost"]


# ----------------------------------------------------------------------------- connecting


def test_create_connection_refused(loop):
    port = closed_port()

    async def main():
        with pytest.raises(ConnectionRefusedError) as info:
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        return info.value

    exc = run(loop, main())
    assert exc.errno == errno.ECONNREFUSED
    assert f"Connect call failed ('127.0.0.1', {port})" in str(exc)


def test_create_connection_several_addresses_all_failing(loop):
    """Every resolved address is tried; different errors combine into one OSError."""
    port1, port2 = closed_port(), closed_port()
    while port2 == port1:
        port2 = closed_port()
    lookups = []

    async def fake_getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        lookups.append((host, port))
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port1)),
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port2)),
        ]

    loop.getaddrinfo = fake_getaddrinfo

    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_connection(asyncio.Protocol, "two.example.invalid", 80)
        return info.value

    exc = run(loop, main())
    assert lookups == [("two.example.invalid", 80)]
    assert type(exc) is OSError
    message = str(exc)
    assert message.startswith("Multiple exceptions: ")
    assert f"Connect call failed ('127.0.0.1', {port1})" in message
    assert f"Connect call failed ('127.0.0.1', {port2})" in message
    assert message.index(str(port1)) < message.index(str(port2))


def test_create_connection_same_error_twice_is_not_combined(loop):
    """Identical errors for every address: the first one is raised as it is."""
    port = closed_port()

    async def fake_getaddrinfo(host, port_, *, family=0, type=0, proto=0, flags=0):
        info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))
        return [info, info]

    loop.getaddrinfo = fake_getaddrinfo

    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_connection(asyncio.Protocol, "twice.example.invalid", 80)
        return info.value

    exc = run(loop, main())
    assert type(exc) is ConnectionRefusedError
    assert not str(exc).startswith("Multiple exceptions")


def test_create_connection_argument_errors(loop):
    async def main():
        with pytest.raises(ValueError, match="host and port was not specified and no sock"):
            await loop.create_connection(asyncio.Protocol)
        with socket.socket() as sock:
            with pytest.raises(ValueError, match="host/port and sock can not be specified"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, sock=sock)
        with socket.socket(type=socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError, match="A Stream Socket was expected"):
                await loop.create_connection(asyncio.Protocol, sock=sock)

    run(loop, main())


# ----------------------------------------------------------------------------- servers


def families_of(server) -> set:
    return {sock.family for sock in server.sockets}


@pytest.mark.parametrize("host", [None, ""])
def test_create_server_all_interfaces(loop, host):
    """host None or '': a listening socket per family, on the wildcard address."""

    async def main():
        server = await loop.create_server(asyncio.Protocol, host, 0)
        try:
            socks = server.sockets
            names = [(sock.family, sock.getsockname()) for sock in socks]
            listening = [sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for sock in socks]
            v4_port = next(name[1] for family, name in names if family == socket.AF_INET)
            # connecting to the IPv4 socket works
            client = socket.socket()
            client.setblocking(False)
            await loop.sock_connect(client, ("127.0.0.1", v4_port))
            client.close()
        finally:
            server.close()
            await server.wait_closed()
        return names, listening

    names, listening = run(loop, main())
    families = {family for family, _ in names}
    assert socket.AF_INET in families
    assert families <= {socket.AF_INET, socket.AF_INET6}
    assert len(names) == len(families)
    for family, name in names:
        assert name[0] == ("0.0.0.0" if family == socket.AF_INET else "::")
        assert name[1] != 0
    assert all(listening)


def test_create_server_host_list(loop):
    """A list of hosts: one socket per distinct address."""
    hosts = ["127.0.0.1", "127.0.0.1"] + (["::1"] if ipv6_available() else [])

    async def main():
        server = await loop.create_server(asyncio.Protocol, hosts, 0)
        try:
            return sorted((sock.family, sock.getsockname()[0]) for sock in server.sockets)
        finally:
            server.close()
            await server.wait_closed()

    expected = [(socket.AF_INET, "127.0.0.1")]
    if ipv6_available():
        expected.append((socket.AF_INET6, "::1"))
    assert run(loop, main()) == sorted(expected)


def test_create_server_port_zero_and_socket_options(loop):
    """Port 0 picks a free port; SO_REUSEADDR by default; SO_REUSEPORT only when asked."""

    async def main():
        options = []
        for kwargs in ({}, {"reuse_port": True}):
            server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, **kwargs)
            assert type(server.sockets) is tuple
            (sock,) = server.sockets
            assert isinstance(sock, trsock.TransportSocket)
            options.append(
                (
                    sock.getsockname()[1],
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR),
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT),
                )
            )
            server.close()
            await server.wait_closed()
        return options

    (port, reuse_addr, reuse_port), (port2, _, reuse_port2) = run(loop, main())
    assert port != 0 and port2 != 0
    assert reuse_addr != 0
    assert reuse_port == 0
    assert reuse_port2 != 0


def test_create_server_sock(loop):
    """create_server(sock=...) serves on the given (bound, not yet listening) socket."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    address = sock.getsockname()
    protos: list[Recorder] = []

    def factory():
        protos.append(Recorder(loop, echo=True))
        return protos[-1]

    async def main():
        server = await loop.create_server(factory, sock=sock)
        (served,) = server.sockets
        assert served.fileno() == sock.fileno()
        assert served.getsockname() == address
        transport, client = await loop.create_connection(lambda: Recorder(loop), *address)
        transport.write(b"via sock")
        await client.received_any
        transport.close()
        await client.lost
        server.close()
        await server.wait_closed()
        return client

    client = run(loop, main())
    assert bytes(client.data) == b"via sock"
    assert len(protos) == 1


def test_create_server_argument_errors(loop):
    async def main():
        with pytest.raises(ValueError, match="Neither host/port nor sock were specified"):
            await loop.create_server(asyncio.Protocol)
        with socket.socket() as sock:
            with pytest.raises(ValueError, match="host/port and sock can not be specified"):
                await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, sock=sock)
        with socket.socket(type=socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError, match="A Stream Socket was expected"):
                await loop.create_server(asyncio.Protocol, sock=sock)

    run(loop, main())


def test_create_server_address_in_use(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(OSError) as info:
                await loop.create_server(asyncio.Protocol, "127.0.0.1", port)
        finally:
            server.close()
            await server.wait_closed()
        return info.value, port

    exc, port = run(loop, main())
    assert exc.errno == errno.EADDRINUSE
    assert f"('127.0.0.1', {port})" in str(exc)


# ----------------------------------------------------------------------------- Server objects


def test_server_start_serving_later(loop):
    protos: list[Recorder] = []

    def factory():
        protos.append(Recorder(loop))
        return protos[-1]

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0, start_serving=False)
        assert server.get_loop() is loop
        assert not server.is_serving()
        assert len(server.sockets) == 1
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()  # already serving: no error
        transport, client = await loop.create_connection(
            lambda: Recorder(loop), *server.sockets[0].getsockname()
        )
        while not protos:
            await asyncio.sleep(0.01)
        await protos[0].made
        transport.close()
        await protos[0].lost
        server.close()
        await server.wait_closed()
        assert not server.is_serving()

    run(loop, main())
    assert len(protos) == 1


def test_serve_forever_cancelled(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, start_serving=False)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        assert server.is_serving()
        with pytest.raises(RuntimeError, match=r"is already being awaited on serve_forever\(\)"):
            await server.serve_forever()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        assert server.sockets == ()
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()

    run(loop, main())


def test_server_close_keeps_connections_and_refuses_new_ones(loop):
    protos: list[Recorder] = []

    def factory():
        protos.append(Recorder(loop, echo=True))
        return protos[-1]

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        transport, client = await loop.create_connection(lambda: Recorder(loop), *address)
        while not protos:
            await asyncio.sleep(0.01)
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        server.close()  # a second close is a no-op
        # the accepted connection still works
        transport.write(b"still here")
        await client.received_any
        # the listening socket is gone
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, *address)
        transport.close()
        await client.lost
        await protos[0].lost
        # (before Python 3.12.1, wait_closed() after close() returns at once even while
        # connections are open; it is awaited once they are gone)
        await server.wait_closed()
        return client

    client = run(loop, main())
    assert bytes(client.data) == b"still here"


def test_wait_closed_waits_for_close_and_for_connections(loop):
    """wait_closed, awaited while serving, ends once the server is closed and its last
    connection is gone."""
    protos: list[Recorder] = []

    def factory():
        protos.append(Recorder(loop))
        return protos[-1]

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        waiting = asyncio.ensure_future(server.wait_closed())
        transport, client = await loop.create_connection(
            lambda: Recorder(loop), *server.sockets[0].getsockname()
        )
        while not protos:
            await asyncio.sleep(0.01)
        await protos[0].made
        await asyncio.sleep(0.01)
        assert not waiting.done(), "wait_closed ended while serving"
        server.close()
        await asyncio.sleep(0.01)
        assert not waiting.done(), "wait_closed ended with a connection still open"
        transport.close()
        await protos[0].lost
        await asyncio.wait_for(waiting, 1.0)
        await client.lost

    run(loop, main())


def test_wait_closed_without_connections(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        waiting = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        server.close()
        await asyncio.wait_for(waiting, 1.0)
        await asyncio.wait_for(server.wait_closed(), 1.0)  # after close: returns

    run(loop, main())


def test_server_async_with(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        async with server as entered:
            assert entered is server
            assert server.is_serving()
            port = server.sockets[0].getsockname()[1]
        assert not server.is_serving()
        assert server.sockets == ()
        return port

    port = run(loop, main())
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


def test_unix_server_replaces_stale_socket_file(loop, unix_path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(unix_path)
    stale.close()
    assert os.path.exists(unix_path)

    async def main():
        server = await loop.create_unix_server(lambda: Recorder(loop, echo=True), unix_path)
        transport, client = await loop.create_unix_connection(lambda: Recorder(loop), unix_path)
        transport.write(b"fresh")
        await client.received_any
        transport.close()
        await client.lost
        server.close()
        await server.wait_closed()
        return client

    assert bytes(run(loop, main()).data) == b"fresh"


def test_unix_server_on_a_regular_file_is_address_in_use(loop, unix_path):
    with open(unix_path, "w") as f:
        f.write("not a socket")

    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_unix_server(asyncio.Protocol, unix_path)
        return info.value

    exc = run(loop, main())
    assert exc.errno == errno.EADDRINUSE
    assert str(exc) == f"[Errno {errno.EADDRINUSE}] Address {unix_path!r} is already in use"
    with open(unix_path) as f:
        assert f.read() == "not a socket"


# ----------------------------------------------------------------------------- faults


def test_peer_reset_reaches_connection_lost(loop, listener, handler_calls):
    async def main():
        transport, client, peer = await accept_peer(loop, listener, lambda: Recorder(loop))
        await client.made
        reset_connection(peer)
        return await client.lost, transport, client

    exc, transport, client = run(loop, main())
    assert isinstance(exc, ConnectionResetError)
    assert collapse(client.events) == ["connection_made", "connection_lost"]
    assert transport.is_closing()
    assert handler_calls == []


class FailingFactory:
    """A protocol factory whose first call raises; later calls make echoing Recorders."""

    def __init__(self, loop):
        self.loop = loop
        self.calls = 0
        self.error = LookupError("no protocol for you")
        self.protocols: list[Recorder] = []

    def __call__(self):
        self.calls += 1
        if self.calls == 1:
            raise self.error
        self.protocols.append(Recorder(self.loop, echo=True))
        return self.protocols[-1]


def serve_with_failing_factory(loop, factory: FailingFactory):
    """Connect twice to a server whose factory fails the first time; returns the second
    client's received data."""

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        first = socket.socket()
        first.setblocking(False)
        await loop.sock_connect(first, address)
        while factory.calls < 1:
            await asyncio.sleep(0.01)
        transport, client = await loop.create_connection(lambda: Recorder(loop), *address)
        transport.write(b"second")
        await client.received_any
        assert server.is_serving()
        transport.close()
        await client.lost
        first.close()
        server.close()
        await server.wait_closed()
        return bytes(client.data)

    return run(loop, main())


def test_failing_protocol_factory_server_keeps_serving(loop, handler_calls):
    factory = FailingFactory(loop)
    assert serve_with_failing_factory(loop, factory) == b"second"
    assert factory.calls == 2


@pytest.mark.ferroloop_only
def test_failing_protocol_factory_is_reported(loop, handler_calls):
    """ferroloop reports a failing protocol factory in every mode (stock asyncio only in
    debug mode)."""
    factory = FailingFactory(loop)
    assert serve_with_failing_factory(loop, factory) == b"second"
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["exception"] is factory.error
    assert context["message"] == "Error on transport creation for incoming connection"


def test_failing_protocol_factory_is_reported_in_debug_mode(loop, handler_calls):
    loop.set_debug(True)
    loop.slow_callback_duration = 10.0
    factory = FailingFactory(loop)
    assert serve_with_failing_factory(loop, factory) == b"second"
    reports = [c for c in handler_calls if c.get("exception") is factory.error]
    assert len(reports) == 1
    assert reports[0]["message"] == "Error on transport creation for incoming connection"


def test_failing_data_received_is_reported_and_closes(loop, listener, handler_calls):
    error = ZeroDivisionError("bad data")

    class Failing(Recorder):
        def data_received(self, data):
            super().data_received(data)
            raise error

    async def main():
        transport, proto, peer = await accept_peer(loop, listener, lambda: Failing(loop))
        await loop.sock_sendall(peer, b"boom")
        exc = await proto.lost
        rest = await read_to_eof(loop, peer)
        peer.close()
        # the loop is alive and well
        done = loop.create_future()
        loop.call_soon(done.set_result, "alive")
        return exc, transport, proto, rest, await done

    exc, transport, proto, rest, alive = run(loop, main())
    assert exc is error
    assert rest == b""
    assert alive == "alive"
    assert transport.is_closing()
    assert collapse(proto.events) == ["connection_made", "data_received", "connection_lost"]
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"] == "Fatal error: protocol.data_received() call failed."
    assert context["exception"] is error
    assert context["transport"] is transport
    assert context["protocol"] is proto
    assert not loop.is_closed()


def test_add_reader_on_a_transport_descriptor_is_refused(loop):
    rsock, wsock = socket.socketpair()

    async def main():
        transport, proto = await loop.create_connection(lambda: Recorder(loop), sock=rsock)
        fd = rsock.fileno()
        try:
            for target in (fd, rsock, transport.get_extra_info("socket")):
                expected = f"File descriptor {target!r} is used by transport {transport!r}"
                for method in (loop.add_reader, loop.add_writer):
                    with pytest.raises(RuntimeError) as info:
                        method(target, lambda: None)
                    assert str(info.value) == expected
                for method in (loop.remove_reader, loop.remove_writer):
                    with pytest.raises(RuntimeError) as info:
                        method(target)
                    assert str(info.value) == expected
            # the transport still works
            wsock.send(b"after")
            await proto.received_any
        finally:
            transport.close()
        await proto.lost
        return proto

    try:
        assert bytes(run(loop, main()).data) == b"after"
    finally:
        rsock.close()
        wsock.close()


def test_transport_repr_names_the_descriptor(loop):
    """The RuntimeError of add_reader shows the transport's repr; it must not fail."""
    rsock, wsock = socket.socketpair()

    fd = rsock.fileno()

    async def main():
        transport, proto = await loop.create_connection(lambda: Recorder(loop), sock=rsock)
        text = repr(transport)
        transport.close()
        await proto.lost
        return text, repr(transport)

    try:
        open_repr, closed_repr = run(loop, main())
    finally:
        rsock.close()
        wsock.close()
    assert str(fd) in open_repr
    assert closed_repr
