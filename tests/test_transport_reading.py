"""Reading from a stream transport (TCP and Unix), pinned to CPython 3.11's selector
transport: BufferedProtocol (get_buffer / buffer_updated, client and server side, small,
failing, empty and read-only buffers), a failing data_received (reported, the transport
closes, the loop goes on; an OSError from it is not reported), a slow data_received in debug
mode, received bytes that stay immutable and hash their contents. Pausing reading is in
``test_flow_control.py``. Every test passes on stock asyncio too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket

import pytest
from support import (
    PAYLOAD,
    Proto,
    Recorder,
    SmallBuffer,
    accept_peer,
    attach,
    collapse,
    recv_to_eof,
    run,
    until,
)


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


@pytest.mark.parametrize("form", ["bytearray", "memoryview"])
def test_buffered_protocol_small_buffer_gets_data_in_pieces(loop, kind, form):
    def make():
        if form == "bytearray":
            return bytearray(7)
        return memoryview(bytearray(20))[3:10]

    async def main():
        proto = SmallBuffer(loop, make)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        payload = random.Random(9).randbytes(1000)
        await loop.sock_sendall(peer, payload)
        await until(lambda: sum(map(len, proto.pieces)) >= len(payload))
        peer.shutdown(socket.SHUT_WR)
        assert await proto.lost is None
        peer.close()
        return payload, proto.pieces, proto.hints

    payload, pieces, hints = run(loop, main())
    assert b"".join(pieces) == payload
    assert all(0 < len(piece) <= 7 for piece in pieces)
    assert len(pieces) >= len(payload) // 7
    assert set(hints) == {-1}


@pytest.mark.parametrize(
    ("make", "exc_type", "exc_text"),
    [
        (lambda: ValueError("no buffer for you"), ValueError, "no buffer for you"),
        (bytearray, RuntimeError, "get_buffer() returned an empty buffer"),
        (
            lambda: memoryview(bytearray(8))[4:4],
            RuntimeError,
            "get_buffer() returned an empty buffer",
        ),
    ],
    ids=["raises", "empty-bytearray", "empty-memoryview"],
)
def test_buffered_protocol_get_buffer_failure_is_fatal(
    loop, kind, handler_calls, make, exc_type, exc_text
):
    async def main():
        proto = SmallBuffer(loop, make)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        await loop.sock_sendall(peer, b"data")
        exc = await proto.lost
        # closed with unread data: the peer sees EOF or a reset
        rest = await recv_to_eof(loop, peer, reset_ok=True)
        peer.close()
        return transport, proto, exc, rest

    transport, proto, exc, rest = run(loop, main())
    assert isinstance(exc, exc_type)
    assert str(exc) == exc_text
    assert rest == b""
    assert transport.is_closing()
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"] == "Fatal error: protocol.get_buffer() call failed."
    assert context["exception"] is exc
    assert context["transport"] is transport
    assert context["protocol"] is proto


def test_buffered_protocol_read_only_buffer_is_a_fatal_read_error(loop, kind, handler_calls):
    """get_buffer() returning bytes: asyncio's recv_into() raises TypeError, reported as a
    fatal read error (not as a get_buffer() failure)."""

    async def main():
        proto = SmallBuffer(loop, lambda: b"read-only")
        transport, _, peer = await attach(loop, kind, lambda: proto)
        await loop.sock_sendall(peer, b"data")
        exc = await proto.lost
        peer.close()
        return transport, proto, exc

    transport, proto, exc = run(loop, main())
    assert isinstance(exc, TypeError)
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"] == "Fatal read error on socket transport"
    assert context["exception"] is exc
    assert context["transport"] is transport


def test_buffered_protocol_buffer_updated_failure_is_fatal(loop, kind, handler_calls):
    error = ArithmeticError("bad count")

    class Failing(SmallBuffer):
        def buffer_updated(self, nbytes):
            super().buffer_updated(nbytes)
            raise error

    async def main():
        proto = Failing(loop, lambda: bytearray(64))
        transport, _, peer = await attach(loop, kind, lambda: proto)
        await loop.sock_sendall(peer, b"data")
        exc = await proto.lost
        peer.close()
        return transport, proto, exc

    transport, proto, exc = run(loop, main())
    assert exc is error
    assert proto.pieces == [b"data"]
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"] == "Fatal error: protocol.buffer_updated() call failed."
    assert context["exception"] is error
    assert context["transport"] is transport
    assert context["protocol"] is proto


def test_data_received_failure_is_fatal_and_the_loop_goes_on(loop, kind, handler_calls):
    error = LookupError("cannot handle this")

    class Failing(Proto):
        def data_received(self, data):
            super().data_received(data)
            raise error

    async def main():
        proto = Failing(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        await loop.sock_sendall(peer, b"boom")
        exc = await proto.lost
        rest = await recv_to_eof(loop, peer, reset_ok=True)
        await asyncio.sleep(0.02)
        peer.close()
        return transport, proto, exc, rest

    transport, proto, exc, rest = run(loop, main())
    assert exc is error
    assert proto.lost_calls == [error]
    assert bytes(proto.data) == b"boom"
    assert rest == b""
    assert transport.is_closing()
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"] == "Fatal error: protocol.data_received() call failed."
    assert context["exception"] is error
    assert context["transport"] is transport
    assert context["protocol"] is proto
    # the loop still runs
    assert run(loop, asyncio.sleep(0, "alive")) == "alive"


def test_data_received_raising_an_oserror_is_not_reported(loop, kind, handler_calls):
    """A fatal OSError is only logged in debug mode: no exception handler call; the transport
    still closes with it."""
    error = ConnectionAbortedError("protocol gave up")

    class Failing(Proto):
        def data_received(self, data):
            raise error

    async def main():
        proto = Failing(loop)
        _, _, peer = await attach(loop, kind, lambda: proto)
        await loop.sock_sendall(peer, b"boom")
        exc = await proto.lost
        peer.close()
        return exc

    assert run(loop, main()) is error
    assert handler_calls == []


def test_slow_data_received_is_reported_as_the_transports_read_ready(loop, kind, caplog):
    """Debug mode names a slow reader callback after the transport's ``_read_ready`` (the
    handle's visible callback is the bound method, whatever runs it)."""
    import time

    caplog.set_level(logging.WARNING, logger="asyncio")

    class Slow(asyncio.Protocol):
        def data_received(self, data):
            time.sleep(0.12)

    async def main():
        transport, _, peer = await attach(loop, kind, Slow)
        await loop.sock_sendall(peer, b"x")
        await asyncio.sleep(0.3)
        transport.close()
        peer.close()

    loop.set_debug(True)
    loop.slow_callback_duration = 0.1
    run(loop, main())
    slow = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Executing")]
    assert any("._read_ready()" in message for message in slow), slow


class Keeper(asyncio.Protocol):
    """Keeps some received ``bytes`` objects and drops the others, recording each one's hash
    and contents while it has it; ``keep(i)`` says whether to keep the i-th."""

    def __init__(self, keep):
        self.keep = keep
        self.kept: list[tuple[bytes, str]] = []
        self.seen: list[tuple[int, str]] = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.seen.append((hash(data), data.hex()))
        if self.keep(len(self.seen) - 1):
            self.kept.append((data, data.hex()))


@pytest.mark.parametrize("keep_every", [1, 2, 0], ids=["keep-all", "keep-half", "keep-none"])
def test_received_bytes_are_immutable_and_hash_their_contents(loop, kind, keep_every):
    """Each data_received gets bytes whose hash matches its contents, and bytes a protocol
    keeps never change afterwards, whether or not it keeps the others (the loop may reuse a
    bytes object only once nobody else holds it)."""
    size = 700
    rounds = 40

    async def main():
        protocol = Keeper(lambda i: keep_every and i % keep_every == 0)
        transport, _, peer = await attach(loop, kind, lambda: protocol)
        for i in range(rounds):
            await loop.sock_sendall(peer, bytes([i]) * size)
            await until(lambda count=i + 1: len(protocol.seen) == count)
        transport.close()
        peer.close()
        return protocol

    protocol = run(loop, main())
    assert [bytes.fromhex(h) for _, h in protocol.seen] == [
        bytes([i]) * size for i in range(rounds)
    ]
    assert [h for h, _ in protocol.seen] == [hash(bytes([i]) * size) for i in range(rounds)]
    for data, contents in protocol.kept:
        assert data.hex() == contents
