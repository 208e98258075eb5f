"""Stream transports (issue #4), against CPython's selector loop.

TCP (127.0.0.1) and AF_UNIX stream connections made with create_connection /
create_unix_connection / connect_accepted_socket, servers made with create_server /
create_unix_server, and asyncio streams on top of them:

* echo through a Protocol and through asyncio streams (start_server/open_connection and the
  UNIX variants);
* the protocol callback order and arguments: connection_made(transport) → data_received(bytes)*
  → eof_received() → connection_lost(None); writing from connection_made; writing after close;
* close() flushes the write buffer, abort() drops it; write_eof and half-close (eof_received
  returning True keeps the transport writable);
* BufferedProtocol (get_buffer/buffer_updated), get_extra_info, set_protocol/get_protocol;
* faults: a peer reset reaches connection_lost; a failing data_received is reported and
  closes the transport; add_reader & co. refuse a transport's descriptor.

Flow control is in ``test_flow_control.py``, servers in ``test_servers.py``, client
connections' errors in ``test_client_connections.py``; edge cases of the transport itself in
``test_stream_transport_edges.py``.

TLS, UDP, pipes and subprocesses are not covered here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from asyncio import trsock

import pytest
from support import (
    FAMILIES,
    PAYLOAD,
    Recorder,
    accept_peer,
    collapse,
    connect,
    fill_write_buffer,
    recv_to_eof,
    reset_connection,
    run,
    serve,
    shrink_buffers,
)


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
        data = await recv_to_eof(loop, peer)
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
        data = await recv_to_eof(loop, peer)
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
            data = await recv_to_eof(loop, peer)
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
            data = await recv_to_eof(loop, peer)
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
    closing_at_eof: list[bool] = []

    class Replier(Recorder):
        def eof_received(self):
            super().eof_received()
            closing_at_eof.append(self.transport.is_closing())
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
    assert closing_at_eof == [False]
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
        rest = await recv_to_eof(loop, peer)
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
