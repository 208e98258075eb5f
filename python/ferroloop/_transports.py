"""Transports. Both are native (``src/transport/stream.rs``, ``src/transport/datagram.rs``):
this module only builds them and names the class their ``__class__`` reports.

Behaviour follows CPython 3.11's selector transports: callback order (connection_made →
data_received* / datagram_received* → eof_received → connection_lost), write buffering with
flow control (pause_writing / resume_writing at the high/low water marks), half-close,
BufferedProtocol, and errors reported through the loop's exception handler.
"""

from __future__ import annotations

import asyncio

from ._ferroloop import DatagramTransport as _NativeDatagramTransport
from ._ferroloop import StreamTransport


class DatagramTransportType(asyncio.DatagramTransport, asyncio.Transport):
    """What a native datagram transport reports as its ``__class__``: like asyncio's own
    datagram transport, it is both an ``asyncio.DatagramTransport`` and an
    ``asyncio.Transport`` (for the flow-control methods). Never instantiated."""

    __slots__ = ()


def SocketTransport(loop, sock, protocol, waiter=None, extra=None, server=None):  # noqa: N802
    """A stream transport over a connected non-blocking socket: ``connection_made`` and
    reading start on the next loop iteration; then ``waiter`` (a future) gets its result."""
    transport = StreamTransport(loop, sock, protocol, extra, server)
    transport._start(waiter)
    return transport


def DatagramTransport(loop, sock, protocol, address=None, waiter=None, extra=None):  # noqa: N802
    """A datagram transport over a non-blocking socket; ``address`` set means connected
    (sendto's address must then be None or equal to it)."""
    transport = _NativeDatagramTransport(loop, sock, protocol, address, extra)
    transport._start(waiter)
    return transport


__all__ = ["DatagramTransport", "DatagramTransportType", "SocketTransport", "StreamTransport"]
