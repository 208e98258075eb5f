"""Stream transports (issue #4) end to end, against CPython's selector loop.

TCP (127.0.0.1) and AF_UNIX stream connections made with create_connection /
create_unix_connection / connect_accepted_socket (servers from create_server /
create_unix_server), and asyncio streams on top of them: echo through a Protocol and through
asyncio streams; the protocol callback order and arguments (connection_made(transport) →
data_received(bytes)* → eof_received() → connection_lost(None)); writing from
connection_made; a peer reset reaches connection_lost; add_reader & co. refuse a
transport's descriptor.

The transport's concepts each have their file: writing (``test_transport_writes.py``),
closing and half-close (``test_transport_closing.py``), reading and BufferedProtocol
(``test_transport_reading.py``), the object itself (extra info, repr, protocol swap:
``test_transport_object.py``), flow control (``test_flow_control.py``); servers are in
``test_servers.py``, client connections' errors in ``test_client_connections.py``. TLS, UDP,
pipes and subprocesses are not covered here.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from support import (
    FAMILIES,
    PAYLOAD,
    Recorder,
    accept_peer,
    collapse,
    connect,
    reset_connection,
    run,
    serve,
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
