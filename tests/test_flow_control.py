"""Flow control of the stream transport (TCP and Unix), against CPython's selector transport.

Writing: the write-buffer limits (defaults, validation, the default low mark, marks that are
not ints), pause_writing / resume_writing once each at the high / low marks while the peer
does not read, lowering the high mark below what is buffered. Reading: pause_reading /
resume_reading / is_reading, also from connection_made. Every test passes on stock asyncio
too; the helpers (recording protocols, buffer fillers) are in ``support.py``.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from support import (
    DEFAULT_LIMITS,
    FlowRecorder,
    Proto,
    Recorder,
    accept_peer,
    attach,
    fill_until_buffered,
    fill_write_buffer,
    raw_pair,
    recv_to_eof,
    run,
    shrink_buffers,
    until,
)


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


def test_pause_and_resume_reading_of_a_client_connection(loop, listener):
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


def test_write_buffer_limits_defaults_and_validation(loop, kind):
    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        results = {"default": transport.get_write_buffer_limits()}
        transport.set_write_buffer_limits(high=1000, low=10)
        results["both"] = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=1000)
        results["high only"] = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(low=300)
        results["low only"] = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(0, 0)
        results["zero"] = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits()
        results["reset"] = transport.get_write_buffer_limits()
        errors = {}
        for args in [(10, 20), (100, -1), (-4, None), (None, -1)]:
            with pytest.raises(ValueError) as info:
                transport.set_write_buffer_limits(*args)
            errors[args] = str(info.value)
        results["after errors"] = transport.get_write_buffer_limits()
        transport.close()
        await proto.lost
        peer.close()
        return results, errors

    results, errors = run(loop, main())
    assert results == {
        "default": (16384, 65536),
        "both": (10, 1000),
        "high only": (250, 1000),
        "low only": (300, 1200),
        "zero": (0, 0),
        "reset": (16384, 65536),
        "after errors": (16384, 65536),
    }
    assert errors == {
        (10, 20): "high (10) must be >= low (20) must be >= 0",
        (100, -1): "high (100) must be >= low (-1) must be >= 0",
        (-4, None): "high (-4) must be >= low (-1) must be >= 0",
        (None, -1): "high (-4) must be >= low (-1) must be >= 0",
    }


@pytest.mark.parametrize(("high", "low"), [(-5, -2), (-1, -1), (-7, -2), (-9, -3)])
def test_set_write_buffer_limits_default_low_is_high_floor_divided_by_4(loop, high, low):
    """Without low, asyncio takes ``high // 4`` (floor division): for a negative high the
    error message names that low."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, "unix", lambda: proto)
        with pytest.raises(ValueError) as info:
            transport.set_write_buffer_limits(high=high)
        limits = transport.get_write_buffer_limits()
        transport.close()
        await proto.lost
        peer.close()
        return str(info.value), limits

    message, limits = run(loop, main())
    assert message == f"high ({high}) must be >= low ({low}) must be >= 0"
    assert limits == (16384, 65536)


def test_pause_and_resume_writing_once_each_at_the_marks(loop, kind):
    """pause_writing once, as soon as the buffer exceeds the high mark (more writes do not
    repeat it); get_write_buffer_size grows by exactly what is written while data is
    buffered; resume_writing once, when the buffer has drained to the low mark or below."""
    high, low = 50_000, 10_000
    chunk = 7_000

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        transport.set_write_buffer_limits(high=high, low=low)
        assert transport.get_write_buffer_limits() == (low, high)
        fill = fill_until_buffered(transport, chunk_size=32 * 1024)
        expected = bytearray(fill)
        if transport.get_write_buffer_size() > high:
            pytest.fail("the first buffered write already exceeded the high mark")
        assert proto.flow == []
        rng = random.Random(3)
        while not proto.flow:
            before = transport.get_write_buffer_size()
            data = rng.randbytes(chunk)
            transport.write(data)
            expected += data
            assert transport.get_write_buffer_size() == before + chunk
            if transport.get_write_buffer_size() <= high:
                assert proto.flow == []
        paused_at = proto.flow[0][1]
        for _ in range(20):
            data = rng.randbytes(chunk)
            transport.write(data)
            expected += data
        # raising the limits does not resume by itself
        transport.set_write_buffer_limits(high=high * 100)
        transport.set_write_buffer_limits(high=high, low=low)
        flow_before_reading = list(proto.flow)
        received = bytearray()
        while not proto.resumed.done():
            received += await loop.sock_recv(peer, 64 * 1024)
        resumed_at = proto.flow[1][1]
        transport.close()
        received += await recv_to_eof(loop, peer)
        assert await proto.lost is None
        peer.close()
        return expected, received, paused_at, resumed_at, flow_before_reading, proto.flow

    expected, received, paused_at, resumed_at, flow_before, flow = run(loop, main())
    assert high < paused_at <= high + chunk
    assert flow_before == [("pause_writing", paused_at)]
    assert flow == [("pause_writing", paused_at), ("resume_writing", resumed_at)]
    assert resumed_at <= low
    assert received == expected


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"high": 100.5}, (25.0, 100.5)),
        ({"low": 10.5}, (10.5, 42.0)),
        ({"high": 100.5, "low": 20.25}, (20.25, 100.5)),
        ({"high": True}, (0, True)),
        ({"high": 2**70}, (2**68, 2**70)),
    ],
    ids=["float-high", "float-low", "both-floats", "bool", "huge-int"],
)
def test_write_buffer_limits_keep_non_int_marks_as_given(loop, kind, limits, expected):
    """asyncio keeps water marks that are not plain ints as given (floats, bools, ints beyond
    64 bits) and reports them back unchanged; flow control compares sizes with them."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        transport.set_write_buffer_limits(**limits)
        limits_back = transport.get_write_buffer_limits()
        transport.close()
        peer.close()
        return limits_back

    limits_back = run(loop, main())
    assert limits_back == expected
    assert [type(x) for x in limits_back] == [type(x) for x in expected]


def test_float_high_water_mark_pauses_only_above_it(loop, kind):
    """A float high-water mark pauses the protocol only once the buffer is above it."""

    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto, sndbuf=4096)
        transport.set_write_buffer_limits(high=1e12)
        fill_until_buffered(transport)
        buffered = transport.get_write_buffer_size()
        flow = [list(proto.flow)]
        transport.set_write_buffer_limits(high=buffered + 0.5)
        flow.append(list(proto.flow))
        transport.set_write_buffer_limits(high=buffered - 0.5)
        flow.append(list(proto.flow))
        transport.abort()
        peer.close()
        await proto.lost
        return buffered, flow

    buffered, flow = run(loop, main())
    assert flow == [[], [], [("pause_writing", buffered)]]


def test_pause_and_resume_reading(loop, kind):
    async def main():
        proto = Proto(loop)
        transport, _, peer = await attach(loop, kind, lambda: proto)
        await loop.sock_sendall(peer, b"first")
        await until(lambda: len(proto.data) == 5)
        assert transport.is_reading()
        transport.pause_reading()
        transport.pause_reading()  # no-op
        assert not transport.is_reading()
        payload = random.Random(5).randbytes(100_000)
        await loop.sock_sendall(peer, payload)
        await asyncio.sleep(0.05)
        assert bytes(proto.data) == b"first", "data_received while reading was paused"
        transport.resume_reading()
        transport.resume_reading()  # no-op
        assert transport.is_reading()
        await until(lambda: len(proto.data) >= 5 + len(payload))
        transport.close()
        assert not transport.is_reading()
        transport.pause_reading()  # no-ops once closing
        transport.resume_reading()
        assert not transport.is_reading()
        assert await proto.lost is None
        peer.close()
        return payload, bytes(proto.data), proto.data_types

    payload, data, types = run(loop, main())
    assert data == b"first" + payload
    assert types == {bytes}


def test_pause_reading_from_connection_made(loop, kind):
    """Reading starts after connection_made; pausing there means no data_received at all
    until resume_reading()."""

    async def main():
        proto = Proto(loop, pause_on_made=True)
        ours, peer = raw_pair(kind)
        peer.send(b"early data")
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        assert not transport.is_reading()
        await asyncio.sleep(0.05)
        assert proto.data == b""
        transport.resume_reading()
        await until(lambda: len(proto.data) == 10)
        transport.close()
        await proto.lost
        peer.close()
        return bytes(proto.data)

    assert run(loop, main()) == b"early data"


class _Echo(asyncio.Protocol):
    """Echoes what it receives (the soak's server)."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


@pytest.mark.parametrize("order", ["reader_first", "user_first"])
def test_stream_reader_pause_interleaved_with_user_pause(loop, order):
    """bench/soak.py's client: the StreamReader pauses the transport above 2 x limit, the
    user pauses/resumes around a sleep, then drain and read back. The pause flag is one
    idempotent flag shared by both (as asyncio's): a user resume after the reader's pause
    reads again, the reader resumes once drained, and the 512 KiB echo completes."""

    async def main():
        server = await loop.create_server(_Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=16 * 1024)
        transport = writer.transport
        size = 512 * 1024
        states = []
        writer.write(b"x" * size)
        if order == "reader_first":
            await until(lambda: reader._paused)
            states.append(transport.is_reading())  # the reader paused it
            transport.pause_reading()  # already paused: no-op
            await asyncio.sleep(0.02)
            transport.resume_reading()
            states.append(transport.is_reading())  # reading again, reader still "paused"
        else:
            transport.pause_reading()
            await asyncio.sleep(0.02)
            transport.resume_reading()
            await until(lambda: reader._paused)
            states.append(transport.is_reading())
        await writer.drain()
        got = 0
        while got < size:
            chunk = await reader.read(size - got)
            assert chunk, "early EOF"
            got += len(chunk)
        states.append((got, reader._paused, transport.is_reading()))
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return states

    states = run(loop, main())
    if order == "reader_first":
        assert states == [False, True, (512 * 1024, False, True)]
    else:
        assert states == [False, (512 * 1024, False, True)]
