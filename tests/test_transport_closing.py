"""Closing a stream transport (TCP and Unix), pinned to CPython 3.11's selector transport:
close() flushes the buffer then calls connection_lost(None) once, abort() drops it, abort()
after close(); write_eof() and half-close (write_eof with data buffered, eof_received's
result: True keeps the transport writable, anything false closes it). Every test passes on
stock asyncio too.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from support import (
    FAMILIES,
    Proto,
    Recorder,
    accept_peer,
    attach,
    collapse,
    connect,
    fill_until_buffered,
    fill_write_buffer,
    recv_exactly,
    recv_to_eof,
    run,
    serve,
    shrink_buffers,
    until,
)


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


def test_close_with_buffered_data_flushes_then_connection_lost_once(loop, kind):
    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        fill = fill_until_buffered(transport)
        transport.close()
        assert transport.is_closing()
        assert not transport.is_reading()
        transport.close()  # a second close does nothing
        # asyncio still queues data written after close() while the buffer is not empty
        transport.write(b"late")
        await asyncio.sleep(0.05)
        assert proto.lost_calls == [], "connection_lost before the buffer was flushed"
        assert transport.get_write_buffer_size() > 0
        received = await recv_to_eof(loop, peer)
        assert await proto.lost is None
        await asyncio.sleep(0.02)
        transport.close()
        peer.close()
        return fill, received, proto.lost_calls, transport.get_write_buffer_size()

    fill, received, lost_calls, size = run(loop, main())
    assert len(received) == len(fill) + 4
    assert received == fill + b"late"
    assert lost_calls == [None]
    assert size == 0


def test_abort_with_buffered_data_drops_it_and_connection_lost_once(loop, kind):
    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        fill = fill_until_buffered(transport)
        buffered = transport.get_write_buffer_size()
        transport.abort()
        assert transport.is_closing()
        assert transport.get_write_buffer_size() == 0
        assert proto.lost_calls == []  # connection_lost comes from the loop, not abort()
        transport.abort()
        transport.close()
        received = await recv_to_eof(loop, peer, reset_ok=True)
        assert await proto.lost is None
        await asyncio.sleep(0.02)
        peer.close()
        return fill, buffered, received, proto.lost_calls

    fill, buffered, received, lost_calls = run(loop, main())
    assert lost_calls == [None]
    assert len(received) <= len(fill) - buffered
    assert received == fill[: len(received)]


def test_abort_after_close_with_buffered_data_connection_lost_once(loop, kind):
    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        fill = fill_until_buffered(transport)
        buffered = transport.get_write_buffer_size()
        transport.close()
        await asyncio.sleep(0.01)
        assert proto.lost_calls == []
        transport.abort()
        assert transport.get_write_buffer_size() == 0
        assert await proto.lost is None
        transport.abort()
        transport.close()
        received = await recv_to_eof(loop, peer, reset_ok=True)
        await asyncio.sleep(0.02)
        peer.close()
        return fill, buffered, received, proto.lost_calls

    fill, buffered, received, lost_calls = run(loop, main())
    assert lost_calls == [None]
    assert len(received) <= len(fill) - buffered
    assert received == fill[: len(received)]


def test_write_eof_with_buffered_data_then_read_the_peers_reply(loop, kind):
    """write_eof() with data buffered: the peer gets all of it, then EOF; the transport stays
    open and still reads what the peer sends afterwards."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        assert transport.can_write_eof()
        fill = fill_until_buffered(transport)
        transport.write(b"tail")
        transport.write_eof()
        assert transport.get_write_buffer_size() > 0
        assert not transport.is_closing()
        received = await recv_to_eof(loop, peer)
        assert not transport.is_closing()
        assert proto.lost_calls == []
        assert transport.get_write_buffer_size() == 0
        await loop.sock_sendall(peer, b"reply after eof")
        await until(lambda: len(proto.data) >= 15)
        peer.shutdown(socket.SHUT_WR)
        assert await proto.lost is None  # eof_received returned None: close
        peer.close()
        return fill, received, bytes(proto.data), proto.eof_calls

    fill, received, data, eof_calls = run(loop, main())
    assert received == fill + b"tail"
    assert data == b"reply after eof"
    assert eof_calls == 1


def test_eof_received_true_keeps_the_transport_writable(loop, kind):
    async def main():
        proto = Proto(loop, eof_result=True)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        await loop.sock_sendall(peer, b"request")
        peer.shutdown(socket.SHUT_WR)
        await proto.got_eof
        await asyncio.sleep(0.03)
        assert not transport.is_closing()
        assert proto.lost_calls == []
        transport.write(b"response after eof")
        reply = await recv_exactly(loop, peer, 18)
        transport.close()
        rest = await recv_to_eof(loop, peer)
        assert await proto.lost is None
        peer.close()
        return bytes(proto.data), reply, rest, proto.eof_calls

    data, reply, rest, eof_calls = run(loop, main())
    assert data == b"request"
    assert reply == b"response after eof"
    assert rest == b""
    assert eof_calls == 1


@pytest.mark.parametrize("result", [False, None, 0])
def test_eof_received_false_closes_the_transport(loop, kind, result):
    async def main():
        proto = Proto(loop, eof_result=result)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        await loop.sock_sendall(peer, b"bye")
        peer.shutdown(socket.SHUT_WR)
        assert await proto.lost is None
        closing = transport.is_closing()
        transport.write(b"dropped")
        rest = await recv_to_eof(loop, peer)
        await asyncio.sleep(0.02)
        peer.close()
        return closing, bytes(proto.data), rest, proto.eof_calls, proto.lost_calls

    closing, data, rest, eof_calls, lost_calls = run(loop, main())
    assert closing
    assert data == b"bye"
    assert rest == b""
    assert eof_calls == 1
    assert lost_calls == [None]
