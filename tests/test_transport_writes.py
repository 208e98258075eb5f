"""Writing through a stream transport (TCP and Unix), as the running Python's selector
transport does: a bytearray / memoryview changed after write() is sent as it was at write()
time on CPython 3.11 (the buffer copies it) and as it is at send time on 3.12+ (the buffer
keeps the object; `writelines()` keeps a memoryview of each piece); bytes of every size
buffered behind a full socket arrive intact and in order; memoryviews with a non-byte format
send their raw bytes; argument errors, also of the call itself (a keyword, a wrong count);
write(b""); write after write_eof or after close; writelines; a non-contiguous memoryview (a
fatal write error, also behind buffered data). Every test passes on stock asyncio too.
"""

from __future__ import annotations

import array
import asyncio
import hashlib
import logging
import os
import random
import sys

import pytest
from support import (
    Proto,
    Recorder,
    accept_peer,
    attach,
    fill_until_buffered,
    recv_exactly,
    recv_to_eof,
    run,
)

#: CPython 3.12+'s socket transport buffers a written bytearray or memoryview itself (3.11
#: copies it): changes made to it before it is sent are sent.
BY_REFERENCE = sys.version_info >= (3, 12)

#: The suite runs on stock asyncio (FERROLOOP_TEST_LOOP=asyncio).
LOOP_UNDER_TEST_IS_STOCK = os.environ.get("FERROLOOP_TEST_LOOP", "").strip().lower() == "asyncio"

#: What write() says it takes: Python 3.14 words its TypeError differently (sendto() keeps
#: the older words, "a bytes-like object").
_WRITE_TYPE = (
    "a bytes, bytearray, or memoryview object"
    if sys.version_info >= (3, 14)
    else "a bytes-like object"
)


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
                TypeError, match=f"^data argument must be {_WRITE_TYPE}, not 'str'$"
            ):
                transport.write("text")
            transport.write(b"")  # nothing to send: no error
            assert transport.get_write_buffer_size() == 0
        finally:
            transport.close()
            peer.close()

    run(loop, main())


def test_bytearray_changed_after_write(loop, kind):
    """A bytearray changed after write(): CPython 3.11 sends it as it was at write() time
    (the buffer copies it); 3.12+ keep the object itself, so what is still unsent goes out
    as it is at send time. The unsent rest of a partly sent bytearray is then a memoryview
    of it (it cannot be resized); a bytearray buffered whole can be, and goes out resized."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto, sndbuf=4096)
        # Empty buffer, large bytearray: the socket takes a part, the rest is buffered.
        first = bytearray(random.Random(1).randbytes(512 * 1024))
        original = bytes(first)
        transport.write(first)
        unsent = transport.get_write_buffer_size()
        assert 0 < unsent < len(first)
        first[:] = b"\xee" * len(first)
        try:
            first.extend(b"grown")
            resized_first = True
        except BufferError:
            resized_first = False
        if BY_REFERENCE:
            expected = original[: len(first) - unsent] + b"\xee" * unsent
        else:
            expected = original
        # Buffer not empty: small and large bytearrays are buffered whole.
        for size in (1, 100, 4095, 4096, 70_000):
            data = bytearray(random.Random(size).randbytes(size))
            before = transport.get_write_buffer_size()
            transport.write(data)
            assert transport.get_write_buffer_size() == before + size
            if not BY_REFERENCE:
                expected += bytes(data)
            data[:] = b"\xdd" * size  # same length, new contents
            data.extend(b"grown")  # and a resize
            if BY_REFERENCE:
                expected += b"\xdd" * size + b"grown"
        transport.close()
        received = await recv_to_eof(loop, peer)
        assert await proto.lost is None
        peer.close()
        return expected, received, resized_first

    expected, received, resized_first = run(loop, main())
    assert resized_first is not BY_REFERENCE
    assert len(received) == len(expected)
    assert received == expected


def test_memoryview_of_bytearray_changed_after_write(loop, kind):
    """A memoryview of a bytearray written, then changed through the view or the bytearray:
    3.11 sends the contents at write() time; 3.12+ what the view shows at send time (only the
    unsent part can still change)."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto, sndbuf=4096)
        # Empty buffer: partly sent, the rest buffered.
        backing = bytearray(random.Random(2).randbytes(512 * 1024))
        original = bytes(backing)
        transport.write(memoryview(backing))
        unsent = transport.get_write_buffer_size()
        assert 0 < unsent < len(backing)
        backing[:] = b"\xee" * len(backing)
        if BY_REFERENCE:
            expected = original[: len(backing) - unsent] + b"\xee" * unsent
        else:
            expected = original
        # Buffer not empty: whole views and slices of views, small and large.
        for size in (3, 4096, 50_000):
            backing = bytearray(random.Random(size).randbytes(size + 10))
            view = memoryview(backing)[5:-5]
            transport.write(view)
            if not BY_REFERENCE:
                expected += view
            view[:] = b"\xcc" * len(view)
            backing[:5] = b"\xbb" * 5  # outside the view: never sent
            if BY_REFERENCE:
                expected += b"\xcc" * size
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
    """memoryview(array('i')) / ('d') written with the buffer empty (sent at once) sends the
    items' raw bytes."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        ints = array.array("i", range(-500, 500))
        doubles = array.array("d", [i / 7 for i in range(300)])
        transport.write(memoryview(ints))
        transport.write(memoryview(doubles))
        assert transport.get_write_buffer_size() == 0
        direct = await recv_exactly(loop, peer, len(ints) * ints.itemsize + len(doubles) * 8)
        transport.close()
        assert await proto.lost is None
        peer.close()
        return ints, doubles, direct

    ints, doubles, direct = run(loop, main())
    assert direct == ints.tobytes() + doubles.tobytes()


@pytest.mark.skipif(
    BY_REFERENCE and LOOP_UNDER_TEST_IS_STOCK,
    reason="CPython 3.12+'s socket transport counts a buffered memoryview's len() (items, "
    "not bytes): get_write_buffer_size() is off and the flush fails with IndexError "
    "('pop from an empty deque', a fatal write error); ferroloop sends the raw bytes",
)
def test_buffered_memoryview_with_non_byte_format_sends_its_raw_bytes(loop, kind):
    """memoryview(array('i')) / ('d') queued whole behind buffered data: the buffer grows by
    their size in bytes and their raw bytes are sent (on 3.12+ as they are at send time)."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        ints = array.array("i", range(-500, 500))
        doubles = array.array("d", [i / 7 for i in range(300)])
        fill = fill_until_buffered(transport)
        before = transport.get_write_buffer_size()
        transport.write(memoryview(ints))
        transport.write(memoryview(doubles)[10:20])
        assert transport.get_write_buffer_size() == before + len(ints) * ints.itemsize + 80
        expected_ints = ints.tobytes()
        ints[0] = 12345  # sent on 3.12+ (the buffer holds the view), not on 3.11
        if BY_REFERENCE:
            expected_ints = ints.tobytes()
        transport.close()
        rest = await recv_to_eof(loop, peer)
        assert await proto.lost is None
        peer.close()
        return fill + expected_ints + doubles[10:20].tobytes(), rest

    expected, rest = run(loop, main())
    assert rest == expected


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
    assert message == f"data argument must be {_WRITE_TYPE}, not '{type_name}'"


def test_write_by_keyword_and_wrong_calls(loop, kind):
    """write(data=...) sends like write(data) (ferroloop: the PyO3 method behind the fast
    entry point takes keyword calls); no argument, two, or an unknown keyword raise the
    TypeError of a Python method's call and send nothing; the transport stays usable."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        errors = []
        try:
            transport.write(data=b"by keyword|")
            for args, kwargs in [((), {}), ((b"a", b"b"), {}), ((), {"dat": b"c"})]:
                try:
                    transport.write(*args, **kwargs)
                except TypeError as exc:
                    errors.append(str(exc))
            transport.write(b"by position")
            received = await recv_exactly(loop, peer, 22)
        finally:
            transport.close()
            peer.close()
        await proto.lost
        return received, errors

    received, errors = run(loop, main())
    assert received == b"by keyword|by position"
    assert len(errors) == 3
    assert "write() missing 1 required positional argument: 'data'" in errors[0]
    assert "write() takes" in errors[1] and "positional argument" in errors[1]
    assert "write() got an unexpected keyword argument 'dat'" in errors[2]


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
        # More than the socket and the peer can ever hold unread (so the flush writelines
        # makes cannot reach the pieces below, which stay queued).
        padding = b"p" * (32 << 20)
        transport.write(padding)
        fill += padding
        big = bytearray(b"y" * 10_000)
        transport.writelines([b"n", big, memoryview(b"o")])
        big[:] = b"z" * 10_000  # sent on 3.12+ (a memoryview of it is queued), not on 3.11
        # 3.12+ hold a memoryview of each piece: the bytearray cannot be resized meanwhile.
        try:
            big.extend(b"!")
            resized = True
        except BufferError:
            resized = False
        with pytest.raises(TypeError):
            # 3.15+ queue the pieces before the bad one; 3.12-3.14 check them all first.
            transport.writelines([b"ok", "not bytes"])
        transport.close()
        rest = await recv_to_eof(loop, peer)
        await proto.lost
        peer.close()
        return direct, more, fill, rest, resized

    direct, more, fill, rest, resized = run(loop, main())
    assert direct == b"abcdefghij"
    assert more == b"klm"
    assert resized is not BY_REFERENCE
    big = b"z" * 10_000 if BY_REFERENCE else b"y" * 10_000
    ok = b"ok" if sys.version_info >= (3, 15) else b""
    assert rest == fill + b"n" + big + b"o" + ok


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
