"""Pipe transports (issue #9): ``loop.connect_read_pipe`` / ``loop.connect_write_pipe``,
against CPython's unix pipe transports.

Over every kind of file asyncio accepts: ``os.pipe()``, a FIFO, a socketpair, character
devices (``/dev/null``, a pty from ``os.openpty()``); regular files are refused with
asyncio's ValueError.

* read side: connection_made → data_received* → eof_received → connection_lost(None);
  pause_reading/resume_reading/is_reading; a failing data_received is reported as an
  exception in the reader callback and reading goes on; a pty master whose slave side is
  closed reads EIO: connection_lost(OSError(EIO)), nothing reported;
* write side: write/writelines (bytes-like only), flow control against a slow reader
  (pause_writing/resume_writing), write_eof/close (flushed first), abort (dropped), the read
  end closing (reader trick: connection_lost(None), or BrokenPipeError with data buffered),
  EPIPE on write (connection_lost(BrokenPipeError), only logged in debug mode), writes after
  closing dropped with asyncio's warning;
* asyncio streams over pipes (StreamReader, StreamWriter with drain);
* the ResourceWarning of a transport collected open, and no descriptor leaked.

Values are recorded inside callbacks and asserted after the loop ran.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import logging
import os
import socket
import tty
import warnings

import pytest
from support import DEFAULT_LIMITS, PAYLOAD, open_fds, run


def spin(loop, seconds: float = 0.05) -> None:
    """Let the loop run for a while."""
    loop.run_until_complete(asyncio.sleep(seconds))


class Recorder(asyncio.Protocol):
    """Records every callback of a read or write pipe protocol."""

    def __init__(self, loop, *, fail_first_data=False):
        self.events: list[tuple] = []
        self.data = bytearray()
        self.transport = None
        self.fail_first_data = fail_first_data
        self.lost = loop.create_future()
        self.got_data = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append(("connection_made",))

    def data_received(self, data):
        self.events.append(("data_received", type(data)))
        if self.fail_first_data and not self.data and not self.got_data.done():
            self.got_data.set_result(None)
            raise RuntimeError("protocol failure")
        self.data += data
        if not self.got_data.done():
            self.got_data.set_result(None)

    def eof_received(self):
        self.events.append(("eof_received",))
        return True  # ignored by pipe transports

    def pause_writing(self):
        self.events.append(("pause_writing",))

    def resume_writing(self):
        self.events.append(("resume_writing",))

    def connection_lost(self, exc):
        self.events.append(("connection_lost", exc))
        if not self.lost.done():
            self.lost.set_result(exc)

    def names(self) -> list[str]:
        """Callback names in order, runs of data_received folded into one."""
        names: list[str] = []
        for event in self.events:
            if names and names[-1] == event[0] == "data_received":
                continue
            names.append(event[0])
        return names


@pytest.fixture
def reports(loop):
    """The contexts the loop's exception handler receives."""
    received: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: received.append(context))
    return received


@pytest.fixture
def fds():
    """Descriptors to close at teardown (ignoring those already closed)."""
    opened: list[int] = []
    yield opened
    for fd in opened:
        try:
            os.close(fd)
        except OSError:
            pass


def open_pipe(fds):
    """``os.pipe()`` as (read fd, write fd), closed at teardown."""
    r, w = os.pipe()
    fds += [r, w]
    return r, w


def read_all(fd: int) -> bytes:
    """Blocking read of ``fd`` until end of file (run in an executor thread)."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --- read side ------------------------------------------------------------------------------


def test_read_pipe_callbacks_and_eof(loop, fds):
    r, w = open_pipe(fds)
    pipe = open(r, "rb", buffering=0)
    transport, proto = run(loop, loop.connect_read_pipe(lambda: Recorder(loop), pipe))
    assert proto.names() == ["connection_made"]  # before the waiter resolved
    assert isinstance(transport, asyncio.ReadTransport)
    assert not isinstance(transport, asyncio.WriteTransport)
    assert not isinstance(transport, asyncio.Transport)
    assert transport.get_extra_info("pipe") is pipe
    assert transport.get_extra_info("missing", "dflt") == "dflt"
    assert transport.get_protocol() is proto
    assert transport.is_reading() and not transport.is_closing()
    assert "fd=" in repr(transport)

    os.write(w, b"hello ")
    run(loop, proto.got_data)
    os.write(w, b"world")
    os.close(w)
    exc = run(loop, proto.lost)
    assert exc is None
    assert bytes(proto.data) == b"hello world"
    assert proto.names() == ["connection_made", "data_received", "eof_received", "connection_lost"]
    assert all(event[1] is bytes for event in proto.events if event[0] == "data_received")
    assert pipe.closed  # connection_lost closed the pipe object
    assert transport.is_closing() and not transport.is_reading()
    assert "closed" in repr(transport)
    assert transport.get_extra_info("pipe") is pipe  # still there after the loss


def test_read_pipe_close_before_eof(loop, fds):
    r, w = open_pipe(fds)
    pipe = open(r, "rb", buffering=0)
    transport, proto = run(loop, loop.connect_read_pipe(lambda: Recorder(loop), pipe))
    transport.close()
    transport.close()  # idempotent
    assert transport.is_closing()
    assert run(loop, proto.lost) is None
    assert proto.names() == ["connection_made", "connection_lost"]
    assert pipe.closed


def test_pause_and_resume_reading(loop, fds):
    r, w = open_pipe(fds)
    transport, proto = run(
        loop, loop.connect_read_pipe(lambda: Recorder(loop), open(r, "rb", buffering=0))
    )
    transport.pause_reading()
    transport.pause_reading()  # no-op
    paused = transport.is_reading()
    os.write(w, b"while paused")
    spin(loop)
    received_while_paused = bytes(proto.data)
    transport.resume_reading()
    transport.resume_reading()  # no-op
    resumed = transport.is_reading()
    run(loop, proto.got_data)
    transport.close()
    run(loop, proto.lost)
    assert paused is False and resumed is True
    assert received_while_paused == b""
    assert bytes(proto.data) == b"while paused"
    assert transport.is_reading() is False  # closing


def test_pause_in_data_received_holds_data_and_eof_until_resumed(loop, fds):
    """A reader that pauses in data_received (as StreamReader does above its limit) gets
    nothing more, not even the end of file, until it resumes; the transport reports itself
    idle meanwhile; then the rest arrives in order."""
    r, w = open_pipe(fds)

    class PausesOnData(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.pause_reading()

    transport, proto = run(
        loop, loop.connect_read_pipe(lambda: PausesOnData(loop), open(r, "rb", buffering=0))
    )
    os.write(w, b"first")
    run(loop, proto.got_data)
    os.write(w, b"second")
    os.close(w)
    fds.remove(w)
    spin(loop)
    held = (bytes(proto.data), proto.names(), transport.is_reading(), repr(transport))
    received = []
    while not proto.lost.done():
        transport.resume_reading()
        polling = repr(transport)
        spin(loop, 0.01)
        received.append(polling)
    assert held[0] == b"first"
    assert held[1] == ["connection_made", "data_received"]
    assert held[2] is False
    assert "idle" in held[3] and "polling" not in held[3]
    assert "polling" in received[0]
    assert bytes(proto.data) == b"firstsecond"
    assert proto.names() == [
        "connection_made",
        "data_received",
        "eof_received",
        "connection_lost",
    ]


def test_pause_and_resume_in_one_step_loses_nothing(loop, fds):
    """Pausing and resuming before the loop looks at the pipe again (StreamReader pausing in
    feed_data and its reader resuming it in the next step) neither loses nor repeats data."""
    r, w = open_pipe(fds)
    chunks = [bytes([i]) * 1000 for i in range(50)]

    class Bounces(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.pause_reading()
            loop.call_soon(self.transport.resume_reading)

    transport, proto = run(
        loop, loop.connect_read_pipe(lambda: Bounces(loop), open(r, "rb", buffering=0))
    )

    async def feed():
        for chunk in chunks:
            os.write(w, chunk)
            await asyncio.sleep(0)
        os.close(w)
        fds.remove(w)

    run(loop, feed())
    run(loop, proto.lost)
    assert bytes(proto.data) == b"".join(chunks)
    assert proto.names()[-2:] == ["eof_received", "connection_lost"]


def test_pause_in_connection_made_defers_reading(loop, fds):
    r, w = open_pipe(fds)
    os.write(w, b"early")

    class PausesAtOnce(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    transport, proto = run(
        loop, loop.connect_read_pipe(lambda: PausesAtOnce(loop), open(r, "rb", buffering=0))
    )
    spin(loop)
    before = bytes(proto.data)
    transport.resume_reading()
    run(loop, proto.got_data)
    transport.close()
    run(loop, proto.lost)
    assert before == b""
    assert bytes(proto.data) == b"early"


def test_failing_data_received_is_reported_and_reading_goes_on(loop, fds, reports):
    r, w = open_pipe(fds)
    transport, proto = run(
        loop,
        loop.connect_read_pipe(
            lambda: Recorder(loop, fail_first_data=True), open(r, "rb", buffering=0)
        ),
    )
    os.write(w, b"first")
    run(loop, proto.got_data)
    spin(loop, 0.02)
    closing_after_failure = transport.is_closing()
    os.write(w, b"second")
    os.close(w)
    run(loop, proto.lost)
    assert closing_after_failure is False
    assert bytes(proto.data) == b"second"
    assert len(reports) == 1
    assert isinstance(reports[0]["exception"], RuntimeError)
    assert reports[0]["message"].startswith("Exception in callback")
    assert "_read_ready" in reports[0]["message"]


def test_set_protocol(loop, fds):
    r, w = open_pipe(fds)
    transport, first = run(
        loop, loop.connect_read_pipe(lambda: Recorder(loop), open(r, "rb", buffering=0))
    )
    second = Recorder(loop)
    transport.set_protocol(second)
    os.write(w, b"to the second")
    os.close(w)
    run(loop, second.lost)
    assert transport.get_protocol() is None  # released with the connection
    assert bytes(first.data) == b""
    assert bytes(second.data) == b"to the second"
    assert second.names() == ["data_received", "eof_received", "connection_lost"]


# --- write side -----------------------------------------------------------------------------


def test_write_pipe_write_and_close(loop, fds):
    r, w = open_pipe(fds)
    pipe = open(w, "wb", buffering=0)
    transport, proto = run(loop, loop.connect_write_pipe(lambda: Recorder(loop), pipe))
    assert proto.names() == ["connection_made"]
    # asyncio's write pipe transport derives from _FlowControlMixin, an asyncio.Transport.
    assert isinstance(transport, asyncio.WriteTransport)
    assert isinstance(transport, asyncio.Transport)
    assert transport.get_extra_info("pipe") is pipe
    assert transport.can_write_eof() is True
    assert transport.get_write_buffer_size() == 0
    assert transport.get_write_buffer_limits() == DEFAULT_LIMITS

    transport.write(b"bytes,")
    transport.write(bytearray(b"bytearray,"))
    transport.write(memoryview(b"memoryview,"))
    transport.write(b"")  # nothing
    transport.writelines([b"line1,", bytearray(b"line2,"), memoryview(b"line3")])
    transport.close()
    assert transport.is_closing()
    exc = run(loop, proto.lost)
    assert exc is None
    assert pipe.closed
    assert os.read(r, 1000) == b"bytes,bytearray,memoryview,line1,line2,line3"
    assert os.read(r, 1000) == b""  # the write end is closed
    assert proto.names() == ["connection_made", "connection_lost"]


def test_write_rejects_non_bytes(loop, fds):
    r, w = open_pipe(fds)
    transport, proto = run(
        loop, loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
    )
    errors = []
    for bad in ("text", 42, None):
        try:
            transport.write(bad)
        except Exception as exc:  # noqa: BLE001 - compared with stock asyncio's
            errors.append(type(exc))
    transport.close()
    run(loop, proto.lost)
    assert errors == [AssertionError] * 3


def test_flow_control_with_slow_reader(loop, fds):
    r, w = open_pipe(fds)
    transport, proto = run(
        loop, loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
    )
    transport.set_write_buffer_limits(high=4096, low=1024)
    limits = transport.get_write_buffer_limits()
    # Nobody reads yet: the pipe (64 KiB) fills, the rest is buffered, the protocol paused.
    transport.write(PAYLOAD)
    buffered = transport.get_write_buffer_size()
    paused_events = proto.names()
    spin(loop, 0.02)

    async def slow_reader():
        reader = asyncio.StreamReader()
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), open(r, "rb", buffering=0)
        )
        received = bytearray()
        while len(received) < len(PAYLOAD):
            received += await reader.read(8192)
            await asyncio.sleep(0)
        read_transport.close()
        return bytes(received)

    received = run(loop, slow_reader())
    spin(loop, 0.01)
    size_after = transport.get_write_buffer_size()
    transport.close()
    run(loop, proto.lost)
    assert limits == (1024, 4096)
    assert 0 < buffered <= len(PAYLOAD)
    assert paused_events == ["connection_made", "pause_writing"]
    assert received == PAYLOAD
    assert size_after == 0
    assert proto.names() == [
        "connection_made",
        "pause_writing",
        "resume_writing",
        "connection_lost",
    ]


def pipe_capacity(fd: int) -> int:
    """How many bytes the pipe holds (F_GETPIPE_SZ)."""
    return fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ


def test_set_write_buffer_limits_pauses_at_once(loop, fds):
    r, w = open_pipe(fds)
    transport, proto = run(
        loop, loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
    )
    transport.write(PAYLOAD[: pipe_capacity(w) + 10_000])  # the pipe fills, 10 kB buffered
    buffered = transport.get_write_buffer_size()
    before = proto.names()
    transport.set_write_buffer_limits(high=1000)
    after = proto.names()
    with pytest.raises(ValueError, match="high .* must be >= low"):
        transport.set_write_buffer_limits(high=1, low=2)
    transport.abort()
    run(loop, proto.lost)
    assert buffered == 10_000
    assert before == ["connection_made"]  # below the default high-water mark
    assert after == ["connection_made", "pause_writing"]  # above the new one


def test_non_contiguous_memoryview(loop, fds, reports):
    r, w = open_pipe(fds)
    transport, proto = run(
        loop, loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
    )
    strided = memoryview(b"abcdef")[::2]
    # Behind buffered data: asyncio's `bytearray += view` fails in write() itself.
    transport.write(PAYLOAD[: pipe_capacity(w) + 10])
    with pytest.raises(TypeError):
        transport.write(strided)
    transport.abort()
    run(loop, proto.lost)

    r, w = open_pipe(fds)
    transport, proto = run(
        loop, loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
    )
    # Nothing buffered: os.write raises BufferError, a fatal (reported) write error.
    transport.write(strided)
    exc = run(loop, proto.lost)
    assert isinstance(exc, BufferError)
    assert [type(c["exception"]) for c in reports] == [BufferError]
    assert reports[0]["message"] == "Fatal write error on pipe transport"


def test_write_pipe_set_protocol(loop, fds):
    r, w = open_pipe(fds)
    transport, first = run(
        loop, loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
    )
    second = Recorder(loop)
    transport.set_protocol(second)
    current = transport.get_protocol()
    transport.write(PAYLOAD)  # above the high-water mark: the new protocol is paused
    transport.abort()
    run(loop, second.lost)
    assert current is second
    assert first.names() == ["connection_made"]
    assert second.names() == ["pause_writing", "connection_lost"]


def test_write_eof_flushes_then_closes(loop, fds):
    r, w = open_pipe(fds)
    pipe = open(w, "wb", buffering=0)
    transport, proto = run(loop, loop.connect_write_pipe(lambda: Recorder(loop), pipe))
    transport.write(PAYLOAD)  # more than the pipe holds
    buffered = transport.get_write_buffer_size()
    transport.write_eof()
    transport.write_eof()  # no-op
    closing = transport.is_closing()
    transport.write(b"after eof")  # dropped, no error
    reading = loop.run_in_executor(None, read_all, r)
    received = run(loop, reading)
    exc = run(loop, proto.lost)
    assert buffered > 0 and closing
    assert received == PAYLOAD
    assert exc is None
    assert pipe.closed
    # Flushing the buffer resumes the protocol before the transport finishes closing.
    assert proto.names() == [
        "connection_made",
        "pause_writing",
        "resume_writing",
        "connection_lost",
    ]


def test_writes_after_close_warn_from_the_sixth(loop, fds, caplog):
    r, w = open_pipe(fds)
    transport, proto = run(
        loop, loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
    )
    transport.close()
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        for _ in range(7):
            transport.write(b"x")
    run(loop, proto.lost)
    warnings_logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert warnings_logged == ["pipe closed by peer or os.write(pipe, data) raised exception."] * 2
    assert os.read(r, 10) == b""


def test_abort_drops_buffered_data(loop, fds):
    r, w = open_pipe(fds)
    pipe = open(w, "wb", buffering=0)
    transport, proto = run(loop, loop.connect_write_pipe(lambda: Recorder(loop), pipe))
    transport.write(PAYLOAD)
    buffered = transport.get_write_buffer_size()
    transport.abort()
    size_after_abort = transport.get_write_buffer_size()
    exc = run(loop, proto.lost)
    received = read_all(r)
    assert buffered > 0 and size_after_abort == 0
    assert exc is None
    assert pipe.closed
    assert 0 < len(received) < len(PAYLOAD)
    assert received == PAYLOAD[: len(received)]


def test_epipe_on_write_when_reader_closed(loop, fds, reports):
    r, w = open_pipe(fds)
    transport, proto = run(
        loop, loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
    )
    os.close(r)
    transport.write(b"nobody reads")  # EPIPE at once, before the loop notices
    closing = transport.is_closing()
    exc = run(loop, proto.lost)
    assert closing
    assert isinstance(exc, BrokenPipeError)
    assert reports == []  # an OSError is only logged (in debug mode)
    assert proto.names() == ["connection_made", "connection_lost"]


def test_reader_closing_is_noticed_while_idle(loop, fds):
    r, w = open_pipe(fds)
    transport, proto = run(
        loop, loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
    )
    os.close(r)
    exc = run(loop, proto.lost)
    assert exc is None  # nothing was buffered
    assert transport.is_closing()


def test_reader_closing_with_buffered_data_is_broken_pipe(loop, fds, reports):
    r, w = open_pipe(fds)
    transport, proto = run(
        loop, loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
    )
    transport.write(PAYLOAD)
    buffered = transport.get_write_buffer_size()
    os.close(r)
    exc = run(loop, proto.lost)
    assert buffered > 0
    assert isinstance(exc, BrokenPipeError)
    assert transport.get_write_buffer_size() == 0
    assert reports == []


def test_epipe_logged_in_debug_mode(loop, fds, caplog):
    loop.set_debug(True)
    r, w = open_pipe(fds)
    transport, proto = run(
        loop, loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
    )
    os.close(r)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        transport.write(b"x")
        exc = run(loop, proto.lost)
    messages = [rec.getMessage() for rec in caplog.records if rec.exc_info]
    assert isinstance(exc, BrokenPipeError)
    assert any("Fatal write error on pipe transport" in m for m in messages)


# --- other kinds of file --------------------------------------------------------------------


def test_fifo_both_ways(loop, tmp_path, fds):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(path, os.O_WRONLY)
    fds += [r, w]

    async def main():
        rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), open(r, "rb", buffering=0))
        wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", buffering=0))
        wt.write(b"through the fifo")
        wt.close()
        await wp.lost
        await rp.lost
        return rp, wp

    rp, wp = run(loop, main())
    assert bytes(rp.data) == b"through the fifo"
    assert rp.names() == ["connection_made", "data_received", "eof_received", "connection_lost"]
    assert wp.names() == ["connection_made", "connection_lost"]


def test_socketpair_both_ways_and_peer_close(loop):
    a, b = socket.socketpair()
    read_obj = open(a.detach(), "rb", 0)
    write_obj = open(b.detach(), "wb", 0)

    async def main():
        rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), read_obj)
        wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), write_obj)
        wt.write(PAYLOAD)
        while len(rp.data) < len(PAYLOAD):
            await asyncio.sleep(0.001)
        # The reading side goes away: the writer notices through its reader trick.
        rt.close()
        await rp.lost
        return rp, await wp.lost

    rp, write_exc = run(loop, main())
    assert bytes(rp.data) == PAYLOAD
    assert write_exc is None
    assert read_obj.closed and write_obj.closed


def test_dev_null_write(loop):
    pipe = open(os.devnull, "wb", buffering=0)
    transport, proto = run(loop, loop.connect_write_pipe(lambda: Recorder(loop), pipe))
    transport.write(PAYLOAD)
    size = transport.get_write_buffer_size()
    transport.close()
    assert run(loop, proto.lost) is None
    assert size == 0 and pipe.closed


def test_dev_null_read_cannot_be_polled(loop, reports):
    # A character device epoll refuses: the transport is made, watching it fails (EPERM),
    # reported as an exception in the callback that starts reading.
    pipe = open(os.devnull, "rb", buffering=0)
    transport, proto = run(loop, loop.connect_read_pipe(lambda: Recorder(loop), pipe))
    spin(loop, 0.01)
    transport.close()
    run(loop, proto.lost)
    assert [type(c.get("exception")) for c in reports] == [PermissionError]
    assert pipe.closed


def test_regular_file_is_refused(loop, tmp_path):
    path = tmp_path / "regular"
    path.write_bytes(b"data")
    with open(path, "rb") as f:
        with pytest.raises(ValueError) as read_error:
            run(loop, loop.connect_read_pipe(asyncio.Protocol, f))
        assert not f.closed
    with open(path, "wb") as f:
        with pytest.raises(ValueError) as write_error:
            run(loop, loop.connect_write_pipe(asyncio.Protocol, f))
    assert str(read_error.value) == "Pipe transport is for pipes/sockets only."
    assert str(write_error.value) == (
        "Pipe transport is only for pipes, sockets and character devices"
    )


def test_closed_pipe_object_is_refused(loop, fds):
    r, w = open_pipe(fds)
    pipe = open(os.dup(r), "rb", buffering=0)
    pipe.close()
    with pytest.raises(ValueError):
        run(loop, loop.connect_read_pipe(asyncio.Protocol, pipe))


def test_pipe_is_made_non_blocking(loop, fds):
    r, w = open_pipe(fds)
    assert os.get_blocking(r) and os.get_blocking(w)
    rt, rp = run(loop, loop.connect_read_pipe(lambda: Recorder(loop), open(r, "rb", 0)))
    wt, wp = run(loop, loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", 0)))
    blocking = (os.get_blocking(r), os.get_blocking(w))
    rt.close()
    wt.close()
    run(loop, asyncio.gather(rp.lost, wp.lost))
    assert blocking == (False, False)


# --- ptys -----------------------------------------------------------------------------------


def test_pty_echo_and_eio_at_close(loop, fds, reports):
    master, slave = os.openpty()
    fds += [master, slave]
    write_master = os.dup(master)
    fds.append(write_master)
    read_obj = open(master, "rb", buffering=0)
    write_obj = open(write_master, "wb", buffering=0)

    async def main():
        rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), read_obj)
        wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), write_obj)
        wt.write(b"hello\n")  # typed on the terminal: the line discipline echoes it
        while b"hello" not in rp.data:
            await asyncio.sleep(0.001)
        typed = await loop.run_in_executor(None, os.read, slave, 100)
        os.close(slave)  # the slave side goes away: the master reads EIO
        exc = await rp.lost
        wt.close()
        await wp.lost
        return rp, typed, exc

    rp, typed, exc = run(loop, main())
    assert typed == b"hello\n"
    assert bytes(rp.data).startswith(b"hello")
    assert isinstance(exc, OSError) and exc.errno == errno.EIO
    assert rp.names() == ["connection_made", "data_received", "connection_lost"]
    assert reports == []  # EIO is not reported
    assert read_obj.closed and write_obj.closed


def test_pty_raw_bidirectional(loop, fds):
    master, slave = os.openpty()
    fds += [master, slave]
    tty.setraw(slave)
    slave_write = os.dup(slave)
    fds.append(slave_write)

    async def main():
        rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), open(slave, "rb", 0))
        wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), open(slave_write, "wb", 0))
        wt.write(b"to master")
        from_slave = b""
        while len(from_slave) < 9:
            from_slave += await loop.run_in_executor(None, os.read, master, 100)
        os.write(master, b"to slave")
        while len(rp.data) < 8:
            await asyncio.sleep(0.001)
        rt.close()
        wt.close()
        await rp.lost
        await wp.lost
        return from_slave, bytes(rp.data)

    from_slave, to_slave = run(loop, main())
    assert from_slave == b"to master"
    assert to_slave == b"to slave"


@pytest.mark.ferroloop_only
def test_read_and_write_transports_on_one_descriptor(loop, fds):
    # One pty master descriptor carries both transports (the write side's pipe object does
    # not own it): closing one must leave the other's watch in place. Stock asyncio's write
    # pipe removes the descriptor's reader when it closes, even one it never added (the read
    # transport then hears nothing more): a documented difference.
    master, slave = os.openpty()
    fds += [master, slave]
    tty.setraw(slave)
    read_obj = open(master, "rb", buffering=0)
    write_obj = open(master, "wb", buffering=0, closefd=False)

    async def main():
        rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), read_obj)
        wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), write_obj)
        wt.write(b"typed")
        typed = b""
        while len(typed) < 5:
            typed += await loop.run_in_executor(None, os.read, slave, 100)
        wt.close()
        await wp.lost
        os.write(slave, b"still read")  # the read transport still watches the descriptor
        while len(rp.data) < 10:
            await asyncio.sleep(0.001)
        rt.close()
        await rp.lost
        return typed, bytes(rp.data)

    typed, received = run(loop, main())
    assert typed == b"typed"
    assert received == b"still read"
    assert read_obj.closed


# --- asyncio streams ------------------------------------------------------------------------


def test_streams_over_pipes(loop, fds):
    r, w = open_pipe(fds)

    async def main():
        reader = asyncio.StreamReader(limit=16)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), open(r, "rb", buffering=0)
        )
        w_transport, w_protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, open(w, "wb", buffering=0)
        )
        writer = asyncio.StreamWriter(w_transport, w_protocol, None, loop)

        async def produce():
            writer.write(b"first line\n")
            for _ in range(8):
                writer.write(PAYLOAD[:65536])
                await writer.drain()
            writer.close()

        producer = asyncio.ensure_future(produce())
        line = await reader.readline()
        rest = bytearray()
        while chunk := await reader.read(65536):
            rest += chunk
        await producer
        return line, bytes(rest), reader.at_eof()

    line, rest, at_eof = run(loop, main())
    assert line == b"first line\n"
    assert rest == PAYLOAD[:65536] * 8
    assert at_eof


# --- resources ------------------------------------------------------------------------------


def test_unclosed_transports_warn_and_close_their_pipe(new_loop, fds):
    loop = new_loop()
    r, w = open_pipe(fds)
    read_obj = open(r, "rb", buffering=0)
    write_obj = open(w, "wb", buffering=0)
    rt, _ = run(loop, loop.connect_read_pipe(asyncio.Protocol, read_obj))
    wt, _ = run(loop, loop.connect_write_pipe(asyncio.Protocol, write_obj))
    loop.close()
    reprs = (repr(rt), repr(wt))
    gc.collect()  # garbage of earlier tests first
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del rt, wt
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert all("open" in text for text in reprs)
    assert (
        sorted(text.split(" <")[0] for text in messages if "transport" in text)
        == ["unclosed transport"] * 2
    )
    assert read_obj.closed and write_obj.closed


def test_no_descriptor_leaked(loop):
    def one_round():
        r, w = os.pipe()

        async def main():
            rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), open(r, "rb", 0))
            wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), open(w, "wb", 0))
            wt.write(b"x" * 100_000)
            wt.close()
            await wp.lost
            await rp.lost
            return len(rp.data)

        return run(loop, main())

    one_round()  # warm-up: the loop's own descriptors, executor, caches
    gc.collect()
    before = open_fds()
    sizes = {one_round() for _ in range(50)}
    gc.collect()
    after = open_fds()
    assert sizes == {100_000}
    assert after == before


def test_a_pipe_the_user_passes_is_never_resized(loop):
    """connect_read_pipe/connect_write_pipe leave the capacity of the caller's pipe alone,
    also when a transfer fills it (only the pipes the loop makes for a child grow)."""
    r, w = os.pipe()
    before = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
    payload = os.urandom(1024 * 1024)
    seen: list[int] = []

    class Reader(asyncio.Protocol):
        def __init__(self):
            self.data = bytearray()
            self.lost = loop.create_future()

        def data_received(self, data):
            self.data += data
            seen.append(fcntl.fcntl(r, fcntl.F_GETPIPE_SZ))

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        wt, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w, "wb", 0))
        wt.write(payload)
        seen.append(fcntl.fcntl(w, fcntl.F_GETPIPE_SZ))
        wt.close()
        rt, reader = await loop.connect_read_pipe(Reader, os.fdopen(r, "rb", 0))
        await reader.lost
        return bytes(reader.data)

    assert run(loop, main()) == payload
    assert seen and set(seen) == {before}
