"""Datagrams sent from callbacks: ferroloop holds the replies of one loop iteration back and
sends them with one ``sendmmsg`` at the end of the iteration (replies, on unconnected IP
sockets: datagrams to the address tuple ``datagram_received`` was given).
These tests pin what a program can observe against stock asyncio, which sends every datagram
inside ``sendto``: the order of datagrams (also across held-back and immediate sends), the
write buffer size (0: the datagrams count as sent), errors reported to ``error_received``
(per datagram, the others still sent; ECONNREFUSED on a connected socket), ``close()``
sending everything before ``connection_lost``, ``abort()`` after sends that had gone out,
and ``sendto`` outside the running loop sending at once. Both loops.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from support import closed_port, run

TIMEOUT = 10


class Sender(asyncio.DatagramProtocol):
    """Records what the transport reports; runs ``on_datagram(transport, data, addr)`` for
    every datagram received (the replies under test are sent from there)."""

    def __init__(self, loop, on_datagram=None):
        self.errors = []
        self.paused = 0
        self.addrs = []
        self.on_datagram = on_datagram
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.addrs.append(addr)
        if self.on_datagram is not None:
            self.on_datagram(self.transport, data, addr)

    def error_received(self, exc):
        self.errors.append(exc)

    def pause_writing(self):
        self.paused += 1

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def peer_socket():
    """A plain UDP socket with a large receive buffer, timing out after a while."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(TIMEOUT)
    return sock


def drain(sock):
    """Every datagram waiting on ``sock`` now, in arrival order."""
    got = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(65536))
    except BlockingIOError:
        return got
    finally:
        sock.settimeout(TIMEOUT)


async def serve_once(loop, peer, on_datagram, proto_class=Sender):
    """An endpoint whose ``on_datagram`` replies to one datagram from ``peer``; returns after
    it ran (and the iteration that ran it ended), with the transport and protocol."""
    transport, proto = await loop.create_datagram_endpoint(
        lambda: proto_class(loop, on_datagram), local_addr=("127.0.0.1", 0)
    )
    peer.sendto(b"go", transport.get_extra_info("sockname"))
    while not proto.addrs:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.02)
    return transport, proto


async def close_and_wait(transport, proto):
    transport.close()
    return await proto.lost


def reply_and_close(loop, on_datagram, proto_class=Sender, then=None):
    """``serve_once`` for a new peer socket, then ``await then(transport, proto)`` if given,
    then the endpoint closed; returns the protocol and what the peer received, in order."""
    peer = peer_socket()

    async def main():
        transport, proto = await serve_once(loop, peer, on_datagram, proto_class)
        if then is not None:
            await then(transport, proto)
        await close_and_wait(transport, proto)
        return proto

    try:
        proto = run(loop, main(), TIMEOUT)
        return proto, drain(peer)
    finally:
        peer.close()


def test_replies_keep_their_order_across_batches_and_immediate_sends(loop):
    """200 replies from one datagram_received (more than one batch), every 7th to the peer
    named by host name (sent at once, through the socket module): all arrive, in order, and
    nothing counts as buffered meanwhile."""
    seen = {}

    def burst(transport, data, addr):
        for i in range(200):
            to = ("localhost", addr[1]) if i % 7 == 0 else addr
            transport.sendto(b"%d" % i, to)
        seen["size"] = transport.get_write_buffer_size()

    proto, got = reply_and_close(loop, burst)
    assert got == [b"%d" % i for i in range(200)]
    assert seen["size"] == 0
    assert proto.errors == [] and proto.paused == 0


def test_write_buffer_size_is_zero_right_after_a_reply(loop):
    """asyncio sent the reply inside sendto: nothing is buffered, on ferroloop neither (the
    held-back datagrams do not count), and even a high-water mark of 1 pauses nothing."""
    sizes = []

    def replies(transport, data, addr):
        transport.set_write_buffer_limits(high=1, low=0)
        for _ in range(5):
            transport.sendto(b"x" * 1000, addr)
            sizes.append(transport.get_write_buffer_size())
        transport.get_extra_info("socket")  # anything in between
        sizes.append(transport.get_write_buffer_size())

    async def size_after(transport, proto):
        sizes.append(transport.get_write_buffer_size())

    proto, got = reply_and_close(loop, replies, then=size_after)
    assert sizes == [0] * 7
    assert proto.paused == 0
    assert got == [b"x" * 1000] * 5


def test_error_between_replies_goes_to_error_received_and_the_rest_is_sent(loop):
    """A datagram to port 0 is refused by the kernel (EINVAL) alone: error_received gets it
    once, the replies before and after it arrive in order."""

    def replies(transport, data, addr):
        transport.sendto(b"before", addr)
        transport.sendto(b"bad", ("127.0.0.1", 0))
        transport.sendto(b"after", addr)

    proto, got = reply_and_close(loop, replies)
    assert got == [b"before", b"after"]
    assert [type(e) for e in proto.errors] == [OSError]
    assert proto.errors[0].errno == errno.EINVAL


def test_connected_socket_to_a_closed_port_reports_connection_refused(loop):
    """The ICMP port-unreachable of a datagram makes a later send (or the read) fail with
    ECONNREFUSED, which goes to error_received; the transport stays open."""
    port = closed_port()

    async def main():
        transport, proto = await loop.create_datagram_endpoint(
            lambda: Sender(loop), remote_addr=("127.0.0.1", port)
        )
        for _ in range(20):
            transport.sendto(b"ping")
            transport.sendto(b"ping")
            await asyncio.sleep(0.01)
            if proto.errors:
                break
        closing = transport.is_closing()
        await close_and_wait(transport, proto)
        return proto, closing

    proto, closing = run(loop, main(), TIMEOUT)
    assert proto.errors, "no error_received"
    assert all(isinstance(e, ConnectionRefusedError) for e in proto.errors)
    assert closing is False


def test_close_sends_every_reply_before_connection_lost(loop):
    """close() right after replies in the same callback: all of them have arrived when
    connection_lost(None) runs."""
    peer = peer_socket()
    order = []

    def replies(transport, data, addr):
        for i in range(10):
            transport.sendto(b"%d" % i, addr)
        transport.close()
        order.append(("closed", transport.is_closing(), transport.get_write_buffer_size()))

    async def main():
        transport, proto = await loop.create_datagram_endpoint(
            lambda: Sender(loop, replies), local_addr=("127.0.0.1", 0)
        )
        proto.lost.add_done_callback(lambda _: order.append(("lost", drain(peer))))
        peer.sendto(b"go", transport.get_extra_info("sockname"))
        return await proto.lost

    try:
        exc = run(loop, main(), TIMEOUT)
    finally:
        peer.close()
    assert exc is None
    assert order == [("closed", True, 0), ("lost", [b"%d" % i for i in range(10)])]


def test_abort_after_replies_keeps_what_was_sent(loop):
    """abort() drops only what waits for a blocked socket; replies that sendto had sent
    (asyncio sends at once on a writable socket) are not taken back, and a sendto after
    abort() on an unconnected socket still sends (the socket stays open until
    connection_lost)."""
    peer = peer_socket()

    def replies(transport, data, addr):
        transport.sendto(b"one", addr)
        transport.sendto(b"two", addr)
        transport.abort()
        transport.sendto(b"after-abort", addr)

    async def main():
        transport, proto = await loop.create_datagram_endpoint(
            lambda: Sender(loop, replies), local_addr=("127.0.0.1", 0)
        )
        peer.sendto(b"go", transport.get_extra_info("sockname"))
        exc = await proto.lost
        return exc, transport.get_write_buffer_size()

    try:
        exc, size = run(loop, main(), TIMEOUT)
        got = drain(peer)
    finally:
        peer.close()
    assert exc is None
    assert size == 0
    assert got == [b"one", b"two", b"after-abort"]


def test_reply_outside_the_running_loop_is_sent_at_once(loop):
    """Between run_until_complete calls nothing would send a held-back datagram: a reply made
    there goes out inside sendto."""
    peer = peer_socket()
    transport, proto = run(loop, serve_once(loop, peer, None), TIMEOUT)
    try:
        transport.sendto(b"now", proto.addrs[0])
        assert peer.recv(100) == b"now"
    finally:
        peer.close()
        transport.close()
        run(loop, proto.lost, TIMEOUT)


def test_exception_in_error_received_goes_to_the_exception_handler(loop):
    """error_received raising for a failed datagram: the loop's exception handler gets the
    exception, and the endpoint goes on replying."""
    caught = []

    class Raising(Sender):
        def error_received(self, exc):
            super().error_received(exc)
            raise ZeroDivisionError("from error_received")

    def replies(transport, data, addr):
        transport.sendto(b"first", addr)
        transport.sendto(b"bad", ("127.0.0.1", 0))

    async def reply_again(transport, proto):
        transport.sendto(b"still-open", proto.addrs[0])
        await asyncio.sleep(0.01)

    loop.set_exception_handler(lambda _loop, context: caught.append(context["exception"]))
    proto, got = reply_and_close(loop, replies, Raising, then=reply_again)
    assert [type(e) for e in caught] == [ZeroDivisionError]
    assert len(proto.errors) == 1
    assert got == [b"first", b"still-open"]
