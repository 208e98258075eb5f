"""A stream transport as an object (TCP and Unix), pinned to CPython 3.11's selector
transport: get_extra_info (both sides, also after the connection is lost, the peer name read
when the transport is made), isinstance and repr, the ResourceWarning of an unclosed
transport, set_protocol / get_protocol (data redirected, switching between Protocol and
BufferedProtocol). Every test passes on stock asyncio too.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from asyncio import trsock

import pytest
from support import (
    FAMILIES,
    Proto,
    Recorder,
    SmallBuffer,
    accept_peer,
    attach,
    collapse,
    connect,
    raw_pair,
    run,
    serve,
    until,
)


@pytest.mark.parametrize("kind", FAMILIES)
def test_get_extra_info_on_both_sides(loop, kind, unix_path):
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


def test_get_extra_info(loop, kind):
    async def main():
        proto = Proto(loop)
        ours, peer = raw_pair(kind)
        expected_sockname = ours.getsockname()
        expected_peername = ours.getpeername()
        fileno = ours.fileno()
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        info = {
            "sockname": transport.get_extra_info("sockname"),
            "peername": transport.get_extra_info("peername"),
            "socket": transport.get_extra_info("socket"),
            "missing": transport.get_extra_info("no such key"),
            "missing with default": transport.get_extra_info("no such key", "fallback"),
            "missing positional default": transport.get_extra_info("nope", 17),
        }
        sock = info["socket"]
        info["socket fileno"] = sock.fileno()
        info["socket again"] = transport.get_extra_info("socket")
        # the peer goes away: peername is still the peer's address
        peer.close()
        assert await proto.lost is None
        info["peername after loss"] = transport.get_extra_info("peername")
        return info, expected_sockname, expected_peername, fileno

    info, sockname, peername, fileno = run(loop, main())
    assert info["sockname"] == sockname
    assert info["peername"] == peername
    assert isinstance(info["socket"], trsock.TransportSocket)
    assert info["socket fileno"] == fileno
    assert info["socket again"] is info["socket"]
    assert info["missing"] is None
    assert info["missing with default"] == "fallback"
    assert info["missing positional default"] == 17
    assert info["peername after loss"] == peername


def test_peername_is_read_when_the_transport_is_created(loop):
    """The peer disconnects before the transport is even asked: the address known at
    creation is still reported."""

    async def main():
        proto = Proto(loop)
        ours, peer = raw_pair("tcp")
        peername = peer.getsockname()
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        peer.close()  # a reset: getpeername() on our socket now fails
        exc = await proto.lost
        return transport.get_extra_info("peername"), peername, exc

    got, expected, exc = run(loop, main())
    assert got == expected
    assert isinstance(exc, ConnectionResetError)


async def _closed_transport(loop, kind):
    """A transport whose connection was closed and lost; returns (transport, sockname)."""
    proto = Proto(loop)
    ours, peer = raw_pair(kind)
    sockname = ours.getsockname()
    transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
    transport.close()
    await proto.lost
    peer.close()
    return transport, sockname


def test_sockname_remains_after_connection_lost(loop, kind):
    """asyncio reads 'sockname' at creation: still reported after the connection is lost,
    even if nobody asked for it before."""
    transport, sockname = run(loop, _closed_transport(loop, kind))
    assert transport.get_extra_info("sockname") == sockname
    assert transport.get_extra_info("sockname", "default") == sockname


def test_socket_remains_after_connection_lost(loop, kind):
    """asyncio makes the 'socket' TransportSocket at creation: still reported after the
    connection is lost (its fileno() is then -1)."""
    transport, _ = run(loop, _closed_transport(loop, kind))
    sock = transport.get_extra_info("socket")
    assert isinstance(sock, trsock.TransportSocket)
    assert sock.fileno() == -1


def test_isinstance_and_repr(loop, kind):
    async def main():
        proto = Proto(loop)
        ours, peer = raw_pair(kind)
        fd = ours.fileno()
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        open_repr = repr(transport)
        transport.close()
        await proto.lost
        peer.close()
        return transport, fd, open_repr, repr(transport)

    transport, fd, open_repr, closed_repr = run(loop, main())
    for cls in (
        asyncio.Transport,
        asyncio.ReadTransport,
        asyncio.WriteTransport,
        asyncio.BaseTransport,
    ):
        assert isinstance(transport, cls), cls
    assert not isinstance(transport, asyncio.DatagramTransport)
    assert f"fd={fd}" in open_repr
    assert f"fd={fd}" in closed_repr
    assert "closed" in closed_repr


def test_unclosed_transport_warns_when_collected(loop, kind):
    # Garbage left by earlier tests (say, an unclosed transport of an aborted TLS handshake)
    # must not be counted here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    peers = []

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        peers.append(peer)
        await asyncio.sleep(0)
        transport.pause_reading()  # the loop no longer holds the transport
        await asyncio.sleep(0)
        return transport.get_extra_info("socket").fileno()

    fd = run(loop, main())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
        gc.collect()
    messages = [
        str(w.message)
        for w in caught
        if issubclass(w.category, ResourceWarning) and "unclosed transport" in str(w.message)
    ]
    assert len(messages) == 1, [str(w.message) for w in caught]
    assert f"fd={fd}" in messages[0]
    # the transport closed its socket: the peer sees EOF
    peer = peers[0]
    peer.settimeout(1.0)
    try:
        assert peer.recv(100) == b""
    finally:
        peer.close()


def test_set_protocol_redirects_data(loop, kind):
    async def main():
        first = Proto(loop)
        second = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: first)
        await loop.sock_sendall(peer, b"one")
        await until(lambda: first.data == b"one")
        transport.set_protocol(second)
        assert transport.get_protocol() is second
        await loop.sock_sendall(peer, b"two")
        await until(lambda: second.data == b"two")
        peer.shutdown(socket.SHUT_WR)
        assert await second.lost is None
        peer.close()
        return first, second

    first, second = run(loop, main())
    assert bytes(first.data) == b"one"
    assert first.eof_calls == 0 and first.lost_calls == []
    assert second.eof_calls == 1 and second.lost_calls == [None]


def test_set_protocol_switches_between_protocol_kinds(loop, kind):
    """From a Protocol to a BufferedProtocol and back: reads follow the current kind."""

    async def main():
        plain = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: plain)
        assert transport.get_protocol() is plain
        await loop.sock_sendall(peer, b"plain")
        await until(lambda: plain.data == b"plain")
        buffered = SmallBuffer(loop, lambda: bytearray(4))
        transport.set_protocol(buffered)
        assert transport.get_protocol() is buffered
        await loop.sock_sendall(peer, b"buffered!")
        await until(lambda: sum(map(len, buffered.pieces)) == 9)
        again = Proto(loop)
        transport.set_protocol(again)
        await loop.sock_sendall(peer, b"plain again")
        await until(lambda: again.data == b"plain again")
        transport.close()
        assert await again.lost is None
        peer.close()
        return plain, buffered, again

    plain, buffered, again = run(loop, main())
    assert bytes(plain.data) == b"plain"
    assert b"".join(buffered.pieces) == b"buffered!"
    assert all(len(piece) <= 4 for piece in buffered.pieces)
    assert not buffered.lost.done()
    assert plain.lost_calls == []
