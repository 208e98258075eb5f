"""Faults raised by protocol code (issue #11, item 3): every protocol callback raising, a
BufferedProtocol's get_buffer handing back something that is not a writable buffer, and
KeyboardInterrupt / SystemExit escaping a plain callback or a protocol callback.

Asyncio's rules, which both loops must follow: an ordinary exception from data_received,
eof_received, get_buffer or buffer_updated is a fatal error of the transport (reported to the
exception handler, connection_lost(exc) called once, the socket closed); one from
connection_made or connection_lost is an error of the callback that ran it (reported, the
transport carries on, resp. the socket is closed anyway); one from pause_writing or
resume_writing is reported and the transport carries on. KeyboardInterrupt and SystemExit are
never swallowed: they leave run_forever / run_until_complete, the loop stops cleanly, and it
can be run again. Nothing is asserted inside a callback; descriptors are counted at the end.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from support import open_fds, raw_pair, run


class Boom(Exception):
    """The ordinary exception the failing protocols raise."""


class Faulty(asyncio.Protocol):
    """A protocol recording its callbacks and raising ``error`` from the one named ``where``."""

    def __init__(self, loop, where: str, error: BaseException) -> None:
        self.where = where
        self.error = error
        self.events: list[tuple] = []
        self.data = bytearray()
        self.lost = loop.create_future()
        self.transport = None

    def _maybe_raise(self, name: str) -> None:
        if name == self.where:
            self.where = None  # once: a level-triggered read would call it again
            raise self.error

    def connection_made(self, transport):
        self.transport = transport
        self.events.append(("connection_made",))
        self._maybe_raise("connection_made")

    def data_received(self, data):
        self.events.append(("data_received",))
        self.data += data
        self._maybe_raise("data_received")

    def eof_received(self):
        self.events.append(("eof_received",))
        self._maybe_raise("eof_received")
        return True  # keep the transport open for writing

    def pause_writing(self):
        self.events.append(("pause_writing",))
        self._maybe_raise("pause_writing")

    def resume_writing(self):
        self.events.append(("resume_writing",))
        self._maybe_raise("resume_writing")

    def connection_lost(self, exc):
        self.events.append(("connection_lost", type(exc).__name__ if exc else None))
        if not self.lost.done():
            self.lost.set_result(exc)
        self._maybe_raise("connection_lost")


class FaultyBuffered(asyncio.BufferedProtocol):
    """A BufferedProtocol whose get_buffer returns ``buffer()`` and whose buffer_updated may
    raise ``error``."""

    def __init__(self, loop, buffer, error: BaseException | None = None) -> None:
        self.buffer = buffer
        self.error = error
        self.events: list[tuple] = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append(("connection_made",))

    def get_buffer(self, sizehint):
        self.events.append(("get_buffer",))
        return self.buffer()

    def buffer_updated(self, nbytes):
        self.events.append(("buffer_updated", nbytes))
        if self.error is not None:
            raise self.error

    def eof_received(self):
        self.events.append(("eof_received",))

    def connection_lost(self, exc):
        self.events.append(("connection_lost", type(exc).__name__ if exc else None))
        if not self.lost.done():
            self.lost.set_result(exc)


def _summary(calls: list[dict]) -> list[tuple[str, str]]:
    """(message, exception type) of each exception handler call."""
    return [(c["message"], type(c.get("exception")).__name__) for c in calls]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("data_received", "Fatal error: protocol.data_received() call failed."),
        ("eof_received", "Fatal error: protocol.eof_received() call failed."),
    ],
)
def test_reading_callback_raising_is_fatal(loop, kind, handler_calls, where, message):
    """data_received / eof_received raising: reported once with asyncio's message,
    connection_lost(the error) once, the socket closed; the loop keeps running."""
    baseline = open_fds()

    async def main():
        ours, peer = raw_pair(kind)
        proto = Faulty(loop, where, Boom("protocol failed"))
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        await loop.sock_sendall(peer, b"hello")
        if where == "eof_received":
            peer.shutdown(socket.SHUT_WR)
        exc = await proto.lost
        await asyncio.sleep(0.01)  # the loop lives on
        peer.close()
        return transport, proto, exc

    transport, proto, exc = run(loop, main())
    assert isinstance(exc, Boom)
    assert transport.is_closing()
    assert proto.events[-1] == ("connection_lost", "Boom")
    assert [e for e in proto.events if e[0] == "connection_lost"] == [("connection_lost", "Boom")]
    assert _summary(handler_calls) == [(message, "Boom")]
    assert handler_calls[0]["protocol"] is proto
    assert handler_calls[0]["transport"] is transport
    assert open_fds() == baseline


def test_connection_made_raising_is_reported_and_the_transport_carries_on(
    loop, kind, handler_calls
):
    """connection_made raising: the error is reported as an error of that callback, the
    transport stays open and delivers data afterwards."""
    baseline = open_fds()

    async def main():
        ours, peer = raw_pair(kind)
        proto = Faulty(loop, "connection_made", Boom("made failed"))
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        await loop.sock_sendall(peer, b"still here")
        for _ in range(200):
            if proto.data:
                break
            await asyncio.sleep(0.005)
        closing_before = transport.is_closing()
        transport.close()
        await proto.lost
        peer.close()
        return closing_before, proto

    closing_before, proto = run(loop, main())
    assert closing_before is False
    assert bytes(proto.data) == b"still here"
    assert len(handler_calls) == 1
    assert handler_calls[0]["message"].startswith("Exception in callback ")
    assert type(handler_calls[0]["exception"]) is Boom
    assert proto.events[-1] == ("connection_lost", None)
    assert open_fds() == baseline


def test_connection_lost_raising_is_reported_and_the_socket_closed(loop, kind, handler_calls):
    """connection_lost raising: reported as an error of that callback; the socket is closed
    all the same (no descriptor left)."""
    baseline = open_fds()

    async def main():
        ours, peer = raw_pair(kind)
        proto = Faulty(loop, "connection_lost", Boom("lost failed"))
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        transport.close()
        await proto.lost
        await asyncio.sleep(0.01)
        tail = await loop.sock_recv(peer, 10)
        peer.close()
        return transport, tail

    transport, tail = run(loop, main())
    assert tail == b""
    assert transport.get_extra_info("socket") is not None
    assert len(handler_calls) == 1
    assert handler_calls[0]["message"].startswith("Exception in callback ")
    assert type(handler_calls[0]["exception"]) is Boom
    assert open_fds() == baseline


@pytest.mark.parametrize("where", ["pause_writing", "resume_writing"])
def test_flow_control_callback_raising_is_reported_and_writing_goes_on(
    loop, kind, handler_calls, where
):
    """pause_writing / resume_writing raising: reported ('protocol.<name>() failed', with
    transport and protocol), and every byte still reaches the peer."""
    baseline = open_fds()
    payload = bytes(range(256)) * 4096 * 8  # 8 MiB: more than the kernel takes at once

    async def main():
        ours, peer = raw_pair(kind)
        proto = Faulty(loop, where, Boom(f"{where} failed"))
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        transport.write(payload)
        received = bytearray()
        while len(received) < len(payload):
            chunk = await loop.sock_recv(peer, 1 << 20)
            if not chunk:
                break
            received += chunk
        for _ in range(200):  # resume_writing runs once the buffer is drained
            if transport.get_write_buffer_size() == 0 and any(
                e[0] == "resume_writing" for e in proto.events
            ):
                break
            await asyncio.sleep(0.005)
        transport.close()
        await proto.lost
        peer.close()
        return transport, proto, bytes(received)

    transport, proto, received = run(loop, main())
    assert received == payload
    names = [e[0] for e in proto.events]
    assert names.count("pause_writing") == 1
    assert names.count("resume_writing") == 1
    assert proto.events[-1] == ("connection_lost", None)
    assert _summary(handler_calls) == [(f"protocol.{where}() failed", "Boom")]
    assert handler_calls[0]["transport"] is transport
    assert handler_calls[0]["protocol"] is proto
    assert open_fds() == baseline


@pytest.mark.parametrize(
    ("buffer", "exc_type", "message"),
    [
        (lambda: 42, TypeError, "Fatal error: protocol.get_buffer() call failed."),
        (lambda: None, TypeError, "Fatal error: protocol.get_buffer() call failed."),
        (lambda: [0, 0, 0, 0], TypeError, "Fatal read error on socket transport"),
        (lambda: "text", TypeError, "Fatal read error on socket transport"),
        (lambda: bytearray(), RuntimeError, "Fatal error: protocol.get_buffer() call failed."),
    ],
    ids=["int", "none", "list", "str", "zero-length"],
)
def test_get_buffer_returning_a_wrong_object_is_fatal(
    loop, kind, handler_calls, buffer, exc_type, message
):
    """get_buffer returning an object that is not a writable buffer (or an empty one): the
    read fails, reported with the message of the step that failed, connection_lost(the
    error), the socket closed."""
    baseline = open_fds()

    async def main():
        ours, peer = raw_pair(kind)
        proto = FaultyBuffered(loop, buffer)
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        await loop.sock_sendall(peer, b"data")
        exc = await proto.lost
        await asyncio.sleep(0.01)
        peer.close()
        return transport, proto, exc

    transport, proto, exc = run(loop, main())
    assert type(exc) is exc_type
    assert transport.is_closing()
    assert [e[0] for e in proto.events] == ["connection_made", "get_buffer", "connection_lost"]
    assert _summary(handler_calls) == [(message, exc_type.__name__)]
    assert open_fds() == baseline


def test_buffer_updated_raising_is_fatal(loop, kind, handler_calls):
    """buffer_updated raising: 'protocol.buffer_updated() call failed', connection_lost(the
    error) once, the socket closed."""
    baseline = open_fds()

    async def main():
        ours, peer = raw_pair(kind)
        proto = FaultyBuffered(loop, lambda: bytearray(64), Boom("updated failed"))
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        await loop.sock_sendall(peer, b"data")
        exc = await proto.lost
        await asyncio.sleep(0.01)
        peer.close()
        return transport, proto, exc

    transport, proto, exc = run(loop, main())
    assert type(exc) is Boom
    assert proto.events == [
        ("connection_made",),
        ("get_buffer",),
        ("buffer_updated", 4),
        ("connection_lost", "Boom"),
    ]
    assert _summary(handler_calls) == [
        ("Fatal error: protocol.buffer_updated() call failed.", "Boom")
    ]
    assert open_fds() == baseline


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_a_plain_callback_stops_the_loop(loop, error):
    """KeyboardInterrupt / SystemExit from call_soon and call_later callbacks leave
    run_forever; the callbacks after it run on the next run."""
    ran: list[str] = []

    def interrupt():
        ran.append("interrupt")
        raise error

    for schedule in (loop.call_soon, lambda cb: loop.call_later(0.001, cb)):
        schedule(interrupt)
        loop.call_later(0.05, ran.append, "later")
        with pytest.raises(error):
            loop.run_forever()
        running_after = loop.is_running()
        loop.call_later(0.1, loop.stop)
        loop.run_forever()
        assert running_after is False
    assert ran == ["interrupt", "later", "interrupt", "later"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("where", ["data_received", "eof_received", "connection_lost"])
def test_base_exception_from_a_protocol_callback_stops_the_loop(loop, kind, error, where):
    """KeyboardInterrupt / SystemExit from a protocol callback propagate out of
    run_until_complete (not reported to the exception handler); the loop is stopped cleanly
    and runs again; the transport can still be closed and nothing is left open."""
    baseline = open_fds()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    ours, peer = raw_pair(kind)
    proto = Faulty(loop, where, error())

    async def start():
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        await loop.sock_sendall(peer, b"ping")
        if where == "eof_received":
            peer.shutdown(socket.SHUT_WR)
        if where == "connection_lost":
            transport.close()
        await asyncio.sleep(5)
        return transport

    with pytest.raises(error):
        loop.run_until_complete(start())
    running_after = loop.is_running()

    async def finish():
        await asyncio.sleep(0.01)  # the loop works again
        transport = proto.transport
        transport.close()
        await asyncio.sleep(0.01)
        peer.close()
        return transport

    transport = run(loop, finish())
    assert running_after is False
    assert transport.is_closing()
    if where != "connection_lost":  # there close() comes before the data is read
        assert bytes(proto.data) == b"ping"
    assert reported == []
    # the same callbacks as asyncio: the level-triggered EOF calls eof_received again
    expected = {
        "data_received": ["connection_made", "data_received", "connection_lost"],
        "eof_received": [
            "connection_made",
            "data_received",
            "eof_received",
            "eof_received",
            "connection_lost",
        ],
        "connection_lost": ["connection_made", "connection_lost"],
    }
    assert [e[0] for e in proto.events] == expected[where]
    # the test body raised inside the first run: cancel leftovers before counting
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    assert open_fds() == baseline
