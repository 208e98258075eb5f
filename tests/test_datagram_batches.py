"""Datagram transports under bursts: ferroloop receives IP datagrams in batches
(``recvmmsg``) and delivers them one by one; these tests pin what a protocol observes
against stock asyncio: nothing lost or reordered per sender, addresses as the socket module
reports them, replies by address, and no delivery after close(). Both loops.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile

import pytest
from support import run

TIMEOUT = 10


class Collector(asyncio.DatagramProtocol):
    def __init__(self, loop, expected, close_after=None):
        self.datagrams = []
        self.expected = expected
        self.close_after = close_after
        self.done = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.datagrams.append((data, addr))
        if self.close_after is not None and len(self.datagrams) == self.close_after:
            self.transport.close()
        if len(self.datagrams) == self.expected and not self.done.done():
            self.done.set_result(None)

    def error_received(self, exc):
        pass

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_burst_from_several_senders_arrives_complete_and_in_order(loop, family):
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    senders_count, per_sender = 4, 40

    async def main():
        proto = Collector(loop, senders_count * per_sender)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: proto, local_addr=(host, 0), family=family
        )
        target = transport.get_extra_info("sockname")
        senders = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(senders_count)]
        for sender in senders:
            sender.bind((host, 0))
        # Interleaved bursts, sent before the loop gets to read: several per readiness.
        for i in range(per_sender):
            for n, sender in enumerate(senders):
                sender.sendto(f"{n}:{i}".encode() * 10, target[:2])
        await proto.done
        names = [sender.getsockname() for sender in senders]
        for sender in senders:
            sender.close()
        transport.close()
        await proto.lost
        return proto.datagrams, names

    datagrams, names = run(loop, main(), TIMEOUT)
    assert len(datagrams) == senders_count * per_sender
    for n, name in enumerate(names):
        mine = [data for data, addr in datagrams if addr[:2] == name[:2]]
        assert mine == [f"{n}:{i}".encode() * 10 for i in range(per_sender)]
    # The address is what the socket module reports: (host, port) or the IPv6 4-tuple.
    assert all(len(addr) == (2 if family == socket.AF_INET else 4) for _, addr in datagrams)


def test_no_delivery_after_close_inside_datagram_received(loop):
    async def main():
        proto = Collector(loop, expected=None, close_after=3)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: proto, local_addr=("127.0.0.1", 0)
        )
        target = transport.get_extra_info("sockname")
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(20):
            sender.sendto(b"%d" % i, target)
        exc = await proto.lost
        await asyncio.sleep(0.05)
        sender.close()
        return proto.datagrams, exc

    datagrams, exc = run(loop, main(), TIMEOUT)
    assert [data for data, _ in datagrams] == [b"0", b"1", b"2"]
    assert exc is None


def test_reply_to_the_received_address_reaches_each_sender(loop):
    async def main():
        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                self.transport.sendto(data.upper(), addr)

        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        target = transport.get_extra_info("sockname")
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        for n, sender in enumerate(senders):
            sender.setblocking(False)
            sender.sendto(b"hello %d" % n, target)
        replies = [await asyncio.wait_for(loop.sock_recv(s, 100), 5) for s in senders]
        for sender in senders:
            sender.close()
        transport.close()
        return replies

    assert run(loop, main(), TIMEOUT) == [b"HELLO 0", b"HELLO 1", b"HELLO 2"]


def test_unix_datagram_burst(loop):
    async def main():
        directory = tempfile.mkdtemp()
        path = os.path.join(directory, "server.sock")
        proto = Collector(loop, 30)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: proto, local_addr=path, family=socket.AF_UNIX
        )
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender_path = os.path.join(directory, "client.sock")
        sender.bind(sender_path)
        sender.setblocking(False)
        # AF_UNIX datagram queues are short (net.unix.max_dgram_qlen, 10 by default): a
        # blocking sendto would stall the loop, so send through it.
        for i in range(30):
            await loop.sock_sendto(sender, b"%d" % i, path)
        await proto.done
        sender.close()
        transport.close()
        await proto.lost
        return proto.datagrams, sender_path

    datagrams, sender_path = run(loop, main(), TIMEOUT)
    assert [data for data, _ in datagrams] == [b"%d" % i for i in range(30)]
    assert all(addr == sender_path for _, addr in datagrams)


def test_non_contiguous_memoryview_is_a_fatal_sendto_error(loop):
    """sendto() of a memoryview that is not C-contiguous, nothing queued: reported as a fatal
    write error, and the transport is lost with it (asyncio's sock.sendto raises BufferError)."""
    calls: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: calls.append(context))

    async def main():
        lost = loop.create_future()

        class Recorder(asyncio.DatagramProtocol):
            def connection_lost(self, exc):
                lost.set_result(exc)

        transport, _ = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        transport.sendto(memoryview(b"abcdefgh")[::2], transport.get_extra_info("sockname"))
        return await asyncio.wait_for(lost, 5)

    exc = loop.run_until_complete(main())
    assert isinstance(exc, BufferError)
    assert [c["message"] for c in calls] == ["Fatal write error on datagram transport"]


def test_empty_datagram_follows_the_running_python(loop):
    """sendto(b"") sends an empty datagram from Python 3.13 on; before, asyncio drops it."""
    import sys

    async def main():
        received = []
        got_marker = loop.create_future()

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                received.append(data)
                if data == b"end" and not got_marker.done():
                    got_marker.set_result(None)

        receiver, _ = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
        sender, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=receiver.get_extra_info("sockname")
        )
        sender.sendto(b"")
        sender.sendto(b"end")
        await asyncio.wait_for(got_marker, 5)
        sender.close()
        receiver.close()
        return received

    received = loop.run_until_complete(main())
    expected = [b"", b"end"] if sys.version_info >= (3, 13) else [b"end"]
    assert received == expected


def test_datagram_write_buffer_limits_keep_float_marks(loop):
    """The datagram transport resolves and reports water marks as asyncio does, floats
    included."""

    async def main():
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        seen = [transport.get_write_buffer_limits()]
        transport.set_write_buffer_limits(high=100.5)
        seen.append(transport.get_write_buffer_limits())
        transport.set_write_buffer_limits(low=10)
        seen.append(transport.get_write_buffer_limits())
        with pytest.raises(ValueError, match=r"high \(1\.5\) must be >= low \(2\) must be >= 0"):
            transport.set_write_buffer_limits(high=1.5, low=2)
        transport.close()
        return seen

    assert loop.run_until_complete(main()) == [(16384, 65536), (25.0, 100.5), (10, 40)]
