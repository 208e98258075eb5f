"""Transports of connections a server accepted: what asyncio reports about them.

ferroloop accepts natively (no socket object per connection until asked, see
``src/transport/accept.rs``); these tests pin that a server-side transport still answers exactly
as asyncio's: extra info before and after the connection is lost, ``_sock`` usable,
descriptors closed when the connection ends, no descriptor leaked by a failing protocol
factory. Each runs on both loops (``FERROLOOP_TEST_LOOP=asyncio``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import tempfile
import warnings

from support import Recorder, open_fds


async def serve_one(loop, kind):
    """A server, one client connected to it; returns (server, client socket, protocol)."""
    protocols = []

    def factory():
        protocols.append(Recorder(loop))
        return protocols[-1]

    if kind == "tcp":
        server = await loop.create_server(factory, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname()[:2])
    else:
        path = os.path.join(tempfile.mkdtemp(), "s.sock")
        server = await loop.create_unix_server(factory, path)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
    client.setblocking(False)
    for _ in range(200):
        if protocols:
            break
        await asyncio.sleep(0.005)
    await protocols[0].made
    return server, client, protocols[0]


def test_extra_info_of_an_accepted_connection(loop, kind):
    async def main():
        server, client, proto = await serve_one(loop, kind)
        transport = proto.transport
        info = {key: transport.get_extra_info(key) for key in ("peername", "sockname", "socket")}
        expected_peer = client.getsockname()
        expected_local = client.getpeername()
        transport_socket = info["socket"]
        fileno_before = transport_socket.fileno()
        transport.close()
        await proto.lost
        after = {key: transport.get_extra_info(key) for key in ("peername", "sockname")}
        client.close()
        server.close()
        await server.wait_closed()
        return info, expected_peer, expected_local, fileno_before, after, transport_socket

    info, peer, local, fileno_before, after, transport_socket = loop.run_until_complete(main())
    if kind == "tcp":
        assert info["peername"] == peer
    else:
        assert info["peername"] in ("", peer)
    assert info["sockname"] == local
    assert isinstance(transport_socket, asyncio.trsock.TransportSocket)
    assert fileno_before >= 0
    assert transport_socket.fileno() == -1  # closed with the connection
    assert after["peername"] == info["peername"]
    assert after["sockname"] == local


def test_socket_info_asked_only_after_connection_lost(loop):
    async def main():
        server, client, proto = await serve_one(loop, "tcp")
        local = client.getpeername()
        proto.transport.close()
        await proto.lost
        client.close()
        server.close()
        await server.wait_closed()
        return proto.transport, local

    transport, local = loop.run_until_complete(main())
    assert transport.get_extra_info("sockname") == local
    wrapped = transport.get_extra_info("socket")
    assert isinstance(wrapped, asyncio.trsock.TransportSocket)
    assert wrapped.fileno() == -1
    assert wrapped.family == socket.AF_INET
    assert transport.get_extra_info("nothing", 42) == 42


def test_echo_through_an_accepted_transport_and_descriptor_released(loop, kind):
    async def main():
        before = open_fds()
        server, client, proto = await serve_one(loop, kind)
        proto.transport.write(b"hello")
        got = b""
        while len(got) < 5:
            got += await loop.sock_recv(client, 16)
        await loop.sock_sendall(client, b"world")
        for _ in range(200):
            if proto.data:
                break
            await asyncio.sleep(0.005)
        client.close()
        exc = await proto.lost
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0)
        return before, got, bytes(proto.data), exc

    before, got, data, exc = loop.run_until_complete(main())
    assert got == b"hello"
    assert data == b"world"
    assert exc is None
    assert open_fds() <= before


def test_many_connections_each_get_a_transport_and_close_cleanly(loop):
    async def main():
        lost = []

        class P(asyncio.Protocol):
            def connection_made(self, transport):
                transport.write(b"x")

            def connection_lost(self, exc):
                lost.append(exc)

        before = open_fds()
        server = await loop.create_server(P, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()[:2]
        clients = []
        for _ in range(50):
            reader, writer = await asyncio.open_connection(*address)
            assert await reader.readexactly(1) == b"x"
            clients.append(writer)
        for writer in clients:
            writer.close()
            await writer.wait_closed()
        for _ in range(200):
            if len(lost) == 50:
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
        return before, lost

    before, lost = loop.run_until_complete(main())
    assert lost == [None] * 50
    assert open_fds() <= before


def test_failing_protocol_factory_leaks_no_descriptor(loop):
    loop.set_debug(True)  # asyncio reports a failing factory only in debug mode

    async def main():
        errors = []
        # Keep only the type: holding the exception would keep stock asyncio's accepted
        # socket alive through its traceback (asyncio never closes it, the collector does).
        loop.set_exception_handler(lambda _loop, context: errors.append(type(context["exception"])))

        def factory():
            raise ZeroDivisionError("no protocol")

        server = await loop.create_server(factory, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()[:2]
        before = open_fds()
        client = socket.create_connection(address)
        client.setblocking(False)
        for _ in range(200):
            if errors:
                break
            await asyncio.sleep(0.005)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        # The server closed its side: the client sees EOF (or a reset).
        try:
            data = await asyncio.wait_for(loop.sock_recv(client, 1), 2)
        except ConnectionResetError:
            data = b""
        client.close()
        server.close()
        await server.wait_closed()
        return errors, data, before

    errors, data, before = loop.run_until_complete(main())
    assert len(errors) == 1
    assert errors[0] is ZeroDivisionError
    assert data == b""
    assert open_fds() <= before


def test_sock_attribute_of_an_accepted_transport_is_the_connection(loop):
    async def main():
        server, client, proto = await serve_one(loop, "tcp")
        sock = proto.transport._sock
        info = (sock.fileno() >= 0, sock.getpeername() == client.getsockname())
        proto.transport.close()
        await proto.lost
        client.close()
        server.close()
        await server.wait_closed()
        return info, sock

    (valid, same_peer), sock = loop.run_until_complete(main())
    assert valid and same_peer
    assert sock.fileno() == -1


def test_unclosed_accepted_transport_warns_when_collected(loop):
    async def main():
        server, client, proto = await serve_one(loop, "tcp")
        transport = proto.transport
        transport.pause_reading()  # the loop no longer holds it
        proto.transport = None
        server.close()
        return client, transport

    client, transport = loop.run_until_complete(main())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del transport
        gc.collect()
    client.close()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)


def test_accepted_transport_takes_attributes(loop, kind):
    """Programs set attributes on transports (asyncio's are plain Python objects); ferroloop
    creates a transport's ``__dict__`` only when first used (3.12+, to keep idle connections
    small), which must not show."""

    async def main():
        server, client, proto = await serve_one(loop, kind)
        transport = proto.transport
        before = dict(vars(transport)) if hasattr(transport, "__dict__") else None
        missing = getattr(transport, "tag", "missing")
        transport.tag = "mine"
        tag = transport.tag
        after = dict(vars(transport))
        del transport.tag
        deleted = getattr(transport, "tag", "deleted")
        still_writes = transport.write(b"x")
        transport.close()
        await proto.lost
        client.close()
        server.close()
        await server.wait_closed()
        return missing, tag, after, deleted, still_writes, before

    missing, tag, after, deleted, still_writes, before = loop.run_until_complete(main())
    assert missing == "missing"
    assert tag == "mine"
    assert after.get("tag") == "mine"
    assert "tag" not in (before or {})
    assert deleted == "deleted"
    assert still_writes is None
