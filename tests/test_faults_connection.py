"""Connection faults (issue #11, item 3), asserted the same on both loops: a peer that resets
(ECONNRESET) or goes away (EPIPE) while we write, a peer vanishing with megabytes still
buffered in the transport, and half-close in both directions on one connection.

The outcome asyncio gives and ferroloop must give: connection_lost(the error) once, an
OSError not reported to the exception handler (only logged in debug mode), the buffer
dropped without resume_writing, writes after the loss counted and warned about once past
the threshold, and no descriptor left open.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from support import open_fds, raw_pair, reset_connection, run

MIB = 1024 * 1024


class Writer(asyncio.Protocol):
    """Records the callbacks a writing side sees."""

    def __init__(self, loop) -> None:
        self.events: list[tuple] = []
        self.data = bytearray()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append(("connection_made",))

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.events.append(("eof_received",))
        return True

    def pause_writing(self):
        self.events.append(("pause_writing",))

    def resume_writing(self):
        self.events.append(("resume_writing",))

    def connection_lost(self, exc):
        self.events.append(("connection_lost", type(exc).__name__ if exc else None))
        if not self.lost.done():
            self.lost.set_result(exc)


def _lost_names(proto: Writer) -> list:
    return [e[1] for e in proto.events if e[0] == "connection_lost"]


@pytest.mark.parametrize("how", ["reset", "close"])
def test_peer_gone_mid_write_with_megabytes_buffered(loop, kind, handler_calls, how):
    """8 MiB written, most of it buffered (the peer reads nothing), then the peer resets
    (SO_LINGER 0; TCP only) or closes with data unread: connection_lost gets
    ConnectionResetError (TCP) or BrokenPipeError / ConnectionResetError (Unix), once; the
    buffer is dropped without resume_writing; nothing reported; no descriptor left."""
    if how == "reset" and kind == "unix":
        pytest.skip("SO_LINGER 0 resets only TCP connections")
    baseline = open_fds()

    async def main():
        ours, peer = raw_pair(kind)
        proto = Writer(loop)
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        transport.write(b"x" * (8 * MIB))
        buffered = transport.get_write_buffer_size()
        if how == "reset":
            reset_connection(peer)
        else:
            peer.close()
        exc = await proto.lost
        await asyncio.sleep(0.01)
        return transport, proto, exc, buffered

    transport, proto, exc, buffered = run(loop, main())
    assert buffered > MIB
    assert isinstance(exc, (ConnectionResetError, BrokenPipeError))
    if kind == "tcp":
        assert type(exc) is ConnectionResetError
    assert [e[0] for e in proto.events] == ["connection_made", "pause_writing", "connection_lost"]
    assert transport.get_write_buffer_size() == 0
    assert transport.is_closing()
    assert handler_calls == []
    assert open_fds() == baseline


def test_epipe_on_write_to_a_closed_peer_then_late_writes_are_warned(loop, kind, caplog):
    """The peer closed before we write: the write fails (EPIPE on Unix, EPIPE or ECONNRESET
    on TCP, whose first write still succeeds and draws the reset), connection_lost gets it
    once; later writes are dropped and counted, and from the fifth on each is warned about
    ('socket.send() raised exception.')."""
    baseline = open_fds()

    async def main():
        ours, peer = raw_pair(kind)
        proto = Writer(loop)
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        peer.close()
        await asyncio.sleep(0.05)  # let the loop see the peer's EOF first
        for _ in range(10):
            transport.write(b"late data")
            await asyncio.sleep(0)
        await asyncio.wait_for(proto.lost, 5)
        await asyncio.sleep(0.01)
        return transport, proto

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        transport, proto = run(loop, main())
    names = [e[0] for e in proto.events]
    assert names == ["connection_made", "eof_received", "connection_lost"]
    assert _lost_names(proto)[0] in ("BrokenPipeError", "ConnectionResetError")
    warned = [r for r in caplog.records if r.getMessage() == "socket.send() raised exception."]
    # 10 writes; Unix: all 10 lost, TCP: the first goes out (the reset answers it)
    assert len(warned) == (5 if kind == "unix" else 4) or (kind == "tcp" and len(warned) == 5)
    assert transport.is_closing()
    assert open_fds() == baseline


def test_reset_while_reading_and_writing_reports_once(loop, handler_calls):
    """A TCP reset while the transport both reads (data pending) and writes (buffer full):
    one connection_lost(ConnectionResetError), nothing reported, the loop keeps going."""
    baseline = open_fds()

    async def main():
        ours, peer = raw_pair("tcp")
        proto = Writer(loop)
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        transport.write(b"y" * (8 * MIB))
        peer.sendall(b"z" * 1000)
        await asyncio.sleep(0.01)
        reset_connection(peer)
        for _ in range(20):  # keep writing while the reset lands
            transport.write(b"y" * 65536)
            await asyncio.sleep(0.001)
        exc = await proto.lost
        timer_fired = loop.create_future()
        loop.call_later(0.01, timer_fired.set_result, True)
        return proto, exc, await timer_fired

    proto, exc, timer_fired = run(loop, main())
    assert type(exc) is ConnectionResetError
    assert len(_lost_names(proto)) == 1
    assert bytes(proto.data) == b"z" * 1000
    assert timer_fired is True
    assert handler_calls == []
    assert open_fds() == baseline


def test_half_close_both_ways(loop, kind):
    """One connection half-closed in each direction in turn: we write_eof while the peer
    still sends (we keep receiving), then the peer shuts its side (eof_received, returning
    True); every byte arrives both ways and connection_lost(None) follows close()."""
    baseline = open_fds()
    up = bytes(range(256)) * 4096 * 3  # 3 MiB from us
    down = bytes(range(255, -1, -1)) * 4096 * 2  # 2 MiB from the peer

    async def main():
        ours, peer = raw_pair(kind)
        proto = Writer(loop)
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock=ours)
        transport.write(up)
        transport.write_eof()
        can_write_eof = transport.can_write_eof()
        received = bytearray()
        while True:  # the peer reads our stream to its EOF ...
            chunk = await loop.sock_recv(peer, MIB)
            if not chunk:
                break
            received += chunk
        await loop.sock_sendall(peer, down)  # ... then answers on its open half
        peer.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(_until_eof(proto), 5)
        closing_at_eof = transport.is_closing()
        transport.close()
        exc = await proto.lost
        peer.close()
        return proto, bytes(received), exc, can_write_eof, closing_at_eof

    proto, received, exc, can_write_eof, closing_at_eof = run(loop, main())
    assert can_write_eof is True
    assert received == up
    assert bytes(proto.data) == down
    assert exc is None
    assert closing_at_eof is False
    names = [e[0] for e in proto.events if e[0] not in ("pause_writing", "resume_writing")]
    assert names == ["connection_made", "eof_received", "connection_lost"]
    assert open_fds() == baseline


async def _until_eof(proto: Writer) -> None:
    while ("eof_received",) not in proto.events:
        await asyncio.sleep(0.005)
