"""Edge cases of the stream transport (TCP and Unix), pinned to CPython 3.11's selector
transport, for the native rewrite (``src/transport/stream.rs``, ``src/transport/write_buffer.rs``).

Every test runs on real sockets (socketpair or a 127.0.0.1 connection, wrapped with
``loop.connect_accepted_socket``) and passes on stock asyncio too:

* the write path: bytearray / memoryview contents are taken at write() time even when they
  sit in the buffer (the buffer must copy them), bytes of every size buffered behind a full
  socket arrive intact and in order, memoryviews with a non-byte format send their raw bytes,
  argument errors, write(b""), write after write_eof, writelines;
* closing: close() flushes then calls connection_lost(None) once, abort() drops the buffer,
  abort() after close(), write_eof() with data buffered (half-close), eof_received's result;
* reading: BufferedProtocol with small, failing,
  empty and read-only buffers, a failing data_received;
* the object: get_extra_info (also after the connection is lost), isinstance, repr, the
  ResourceWarning of an unclosed transport, set_protocol / get_protocol.

Flow control (the marks, pause/resume writing and reading) is in ``test_flow_control.py``.
"""

from __future__ import annotations

import array
import asyncio
import gc
import hashlib
import logging
import random
import socket
import warnings
from asyncio import trsock

import pytest
from support import (
    Proto,
    attach,
    fill_until_buffered,
    raw_pair,
    recv_exactly,
    recv_to_eof,
    run,
    until,
)


def test_bytearray_mutated_after_write_is_sent_as_written(loop, kind):
    """A bytearray is sent as it was at write() time, whether the socket took part of it
    (the rest buffered) or none of it (all buffered behind earlier data)."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto, sndbuf=4096)
        # Empty buffer, large bytearray: the socket takes a part, the rest is buffered.
        first = bytearray(random.Random(1).randbytes(512 * 1024))
        expected = bytes(first)
        transport.write(first)
        assert 0 < transport.get_write_buffer_size() < len(first)
        first[:] = b"\xee" * len(first)
        # Buffer not empty: small and large bytearrays are buffered whole.
        for size in (1, 100, 4095, 4096, 70_000):
            data = bytearray(random.Random(size).randbytes(size))
            before = transport.get_write_buffer_size()
            transport.write(data)
            assert transport.get_write_buffer_size() == before + size
            expected += bytes(data)
            data[:] = b"\xdd" * size  # same length, new contents
            data.extend(b"grown")  # and a resize
        transport.close()
        received = await recv_to_eof(loop, peer)
        assert await proto.lost is None
        peer.close()
        return expected, received

    expected, received = run(loop, main())
    assert len(received) == len(expected)
    assert received == expected


def test_memoryview_of_bytearray_mutated_after_write_is_sent_as_written(loop, kind):
    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto, sndbuf=4096)
        expected = bytearray()
        # Empty buffer: partly sent, the rest buffered.
        backing = bytearray(random.Random(2).randbytes(512 * 1024))
        transport.write(memoryview(backing))
        assert 0 < transport.get_write_buffer_size() < len(backing)
        expected += backing
        backing[:] = b"\xee" * len(backing)
        # Buffer not empty: whole views and slices of views, small and large.
        for size in (3, 4096, 50_000):
            backing = bytearray(random.Random(size).randbytes(size + 10))
            view = memoryview(backing)[5:-5]
            transport.write(view)
            expected += view
            view[:] = b"\xcc" * len(view)
            backing[:5] = b"\xbb" * 5
        transport.close()
        received = await recv_to_eof(loop, peer)
        assert await proto.lost is None
        peer.close()
        return bytes(expected), received

    expected, received = run(loop, main())
    assert len(received) == len(expected)
    assert received == expected


@pytest.mark.parametrize("drain", ["after", "during"])
def test_many_writes_of_every_size_arrive_intact_and_in_order(loop, kind, drain):
    """Several MiB in bytes of sizes around and far above 4096 (plus some bytearrays and
    memoryviews), buffered behind a full socket; the written objects are not kept alive by
    the caller. ``drain="after"``: the peer starts reading once everything is written;
    ``"during"``: it reads while the writes go on, so the buffer drains part-way often."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        rng = random.Random(42)
        digest = hashlib.sha256()
        total = 0

        async def reader():
            received = hashlib.sha256()
            count = 0
            while True:
                chunk = await loop.sock_recv(peer, 1024 * 1024)
                if not chunk:
                    return received.hexdigest(), count
                received.update(chunk)
                count += len(chunk)

        reading = asyncio.ensure_future(reader()) if drain == "during" else None
        fill = fill_until_buffered(transport, seed=7)
        digest.update(fill)
        total += len(fill)
        writes = 0
        while total < 6 * 1024 * 1024:
            pick = rng.random()
            if pick < 0.55:
                size = rng.randint(1, 4095)
            elif pick < 0.8:
                size = rng.choice([4095, 4096, 4097, 8191, 8192, 16384, 65536])
            else:
                size = rng.randint(65537, 512 * 1024)
            data = rng.randbytes(size)
            digest.update(data)
            total += size
            form = rng.random()
            if form < 0.1:
                transport.write(bytearray(data))
            elif form < 0.2:
                transport.write(memoryview(data))
            else:
                transport.write(data)
            del data
            writes += 1
            if drain == "during" and writes % 7 == 0:
                await asyncio.sleep(0)
        if drain == "after":
            assert transport.get_write_buffer_size() > 1024 * 1024
            reading = asyncio.ensure_future(reader())
        transport.close()
        received_digest, count = await reading
        assert await proto.lost is None
        peer.close()
        return digest.hexdigest(), total, received_digest, count

    expected_digest, total, received_digest, count = run(loop, main())
    assert count == total
    assert received_digest == expected_digest


def test_memoryview_with_non_byte_format_sends_its_raw_bytes(loop, kind):
    """memoryview(array('i')) / ('d'), written with the buffer empty (sent at once) and with
    data buffered (queued whole), sends the items' raw bytes."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        ints = array.array("i", range(-500, 500))
        doubles = array.array("d", [i / 7 for i in range(300)])
        transport.write(memoryview(ints))
        transport.write(memoryview(doubles))
        assert transport.get_write_buffer_size() == 0
        direct = await recv_exactly(loop, peer, len(ints) * ints.itemsize + len(doubles) * 8)
        fill = fill_until_buffered(transport)
        before = transport.get_write_buffer_size()
        transport.write(memoryview(ints))
        transport.write(memoryview(doubles)[10:20])
        assert transport.get_write_buffer_size() == before + len(ints) * ints.itemsize + 80
        ints[0] = 12345  # the buffered copy is not affected
        transport.close()
        rest = await recv_to_eof(loop, peer)
        assert await proto.lost is None
        peer.close()
        return ints, doubles, direct, fill, rest

    ints, doubles, direct, fill, rest = run(loop, main())
    ints[0] = -500
    assert direct == ints.tobytes() + doubles.tobytes()
    assert rest == fill + ints.tobytes() + doubles[10:20].tobytes()


@pytest.mark.parametrize(
    ("value", "type_name"),
    [("text", "str"), (42, "int"), (None, "NoneType"), ([b"x"], "list")],
)
def test_write_of_a_non_bytes_like_object_raises_type_error(loop, kind, value, type_name):
    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        try:
            with pytest.raises(TypeError) as info:
                transport.write(value)
            assert transport.get_write_buffer_size() == 0
            assert not transport.is_closing()
            transport.write(b"still fine")
            assert await recv_exactly(loop, peer, 10) == b"still fine"
        finally:
            transport.close()
            peer.close()
        await proto.lost
        return str(info.value)

    message = run(loop, main())
    assert message == f"data argument must be a bytes-like object, not '{type_name}'"


def test_write_of_empty_data_is_a_no_op(loop, kind):
    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        for empty in (b"", bytearray(), memoryview(b""), memoryview(array.array("i"))):
            transport.write(empty)
            assert transport.get_write_buffer_size() == 0
        transport.writelines([])
        transport.writelines([b"", bytearray()])
        assert transport.get_write_buffer_size() == 0
        # with data buffered, empty writes change nothing either
        fill = fill_until_buffered(transport)
        before = transport.get_write_buffer_size()
        transport.write(b"")
        transport.write(bytearray())
        assert transport.get_write_buffer_size() == before
        transport.write(b"end")
        transport.close()
        received = await recv_to_eof(loop, peer)
        await proto.lost
        peer.close()
        return fill, received

    fill, received = run(loop, main())
    assert received == fill + b"end"


def test_write_after_write_eof_raises_runtime_error(loop, kind):
    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        transport.write(b"before")
        transport.write_eof()
        transport.write_eof()  # a second call does nothing
        errors = []
        for data in (b"after", bytearray(b"after"), memoryview(b"after"), b""):
            with pytest.raises(RuntimeError) as info:
                transport.write(data)
            errors.append(str(info.value))
        with pytest.raises(RuntimeError):
            transport.writelines([b"after"])
        # the argument type is checked first
        with pytest.raises(TypeError):
            transport.write("after")
        received = await recv_to_eof(loop, peer)
        assert not transport.is_closing()
        transport.close()
        await proto.lost
        peer.close()
        return errors, received

    errors, received = run(loop, main())
    assert errors == ["Cannot call write() after write_eof()"] * 4
    assert received == b"before"


def test_writelines_with_mixed_buffer_types(loop, kind):
    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        mutable = bytearray(b"cd")
        transport.writelines(
            [b"ab", mutable, memoryview(b"ef"), memoryview(bytearray(b"gh")), b"", b"ij"]
        )
        mutable[:] = b"XX"
        direct = await recv_exactly(loop, peer, 10)
        transport.writelines(iter([b"k", bytearray(b"l"), memoryview(array.array("B", b"m"))]))
        more = await recv_exactly(loop, peer, 3)
        # with data buffered, the joined lines queue behind it
        fill = fill_until_buffered(transport)
        big = bytearray(b"y" * 10_000)
        transport.writelines([b"n", big, memoryview(b"o")])
        big[:] = b"z" * 10_000
        with pytest.raises(TypeError):
            transport.writelines([b"ok", "not bytes"])
        transport.close()
        rest = await recv_to_eof(loop, peer)
        await proto.lost
        peer.close()
        return direct, more, fill, rest

    direct, more, fill, rest = run(loop, main())
    assert direct == b"abcdefghij"
    assert more == b"klm"
    assert rest == fill + b"n" + b"y" * 10_000 + b"o"


def test_non_contiguous_memoryview_is_a_fatal_write_error(loop, kind, handler_calls):
    """A memoryview that is not C-contiguous cannot be sent: with nothing buffered, write()
    returns, the error is reported as a fatal write error and the connection is lost with it."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        transport.write(memoryview(b"abcdefgh")[::2])
        exc = await proto.lost
        peer.close()
        return transport, exc

    transport, exc = run(loop, main())
    assert isinstance(exc, BufferError)
    assert transport.is_closing()
    assert [c["message"] for c in handler_calls] == ["Fatal write error on socket transport"]
    assert handler_calls[0]["exception"] is exc


def test_non_contiguous_memoryview_behind_buffered_data(loop, kind, handler_calls):
    """With data already buffered, a non-contiguous memoryview is asyncio's TypeError on 3.11
    (its bytearray buffer refuses it) and a fatal write error on 3.12+ (its buffer keeps the view
    and the next flush fails with BufferError, dropping what was buffered)."""
    import sys

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto, sndbuf=4096)
        fill_until_buffered(transport)
        if sys.version_info < (3, 12):
            with pytest.raises(TypeError):
                transport.write(memoryview(b"abcdefgh")[::2])
            assert not transport.is_closing()
            transport.abort()
            exc = await proto.lost
            peer.close()
            return exc, None
        transport.write(memoryview(b"abcdefgh")[::2])
        drained = loop.create_task(recv_to_eof(loop, peer, reset_ok=True))
        exc = await proto.lost
        await drained
        peer.close()
        return exc, handler_calls

    exc, calls = run(loop, main())
    if sys.version_info < (3, 12):
        assert exc is None
    else:
        assert isinstance(exc, BufferError)
        assert [c["message"] for c in calls] == ["Fatal write error on socket transport"]


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
