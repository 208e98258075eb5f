"""``loop.sendfile``: a file over a stream transport.

Zero-copy ``os.sendfile`` on the transport's socket when possible (through
``sock_sendfile``, whose system calls run natively); otherwise, with ``fallback``, chunks
read in the executor and written with flow control. A TLS transport always copies, with a
stand-in protocol catching its flow-control calls while the file is written.
"""

from __future__ import annotations

import asyncio
from asyncio import constants

from ._transports import StreamTransport


class _FlowControlStandIn(asyncio.Protocol):
    """Takes a transport's protocol seat during a copying sendfile: records pause_writing /
    resume_writing so the sender can wait, passes connection_lost on to the real protocol,
    and gives the seat back (reading and writing state included) at the end."""

    def __init__(self, loop, transport):
        self._loop = loop
        self._transport = transport
        self._protocol = transport.get_protocol()
        self._resume_reading = transport.is_reading()
        self._paused_before = bool(getattr(transport, "_protocol_paused", False))
        self._writable_again = loop.create_future() if self._paused_before else None
        transport.pause_reading()
        transport.set_protocol(self)

    async def writable(self) -> None:
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        if self._writable_again is not None:
            await self._writable_again

    def pause_writing(self) -> None:
        if self._writable_again is None:
            self._writable_again = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable_again is not None:
            self._writable_again.set_result(None)
            self._writable_again = None

    def connection_lost(self, exc) -> None:
        if self._writable_again is not None and not self._writable_again.done():
            self._writable_again.set_exception(
                exc if exc is not None else ConnectionError("Connection is closed by peer")
            )
        self._protocol.connection_lost(exc)

    def data_received(self, data) -> None:
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self):
        raise RuntimeError("Invalid state: reading should be paused")

    def restore(self) -> None:
        self._transport.set_protocol(self._protocol)
        if self._resume_reading:
            self._transport.resume_reading()
        if self._writable_again is not None:
            self._writable_again.cancel()
        if self._paused_before:
            self._protocol.resume_writing()


class SendfileAPI:
    """Mixin of ``ferroloop.EventLoop``: ``sendfile`` over stream transports."""

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        """Sends ``file`` over a stream transport: zero-copy ``os.sendfile`` on its socket
        when possible, else (with ``fallback``) reads and writes with flow control."""
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        if not isinstance(transport, StreamTransport):
            # A TLS transport: data must go through it (asyncio's FALLBACK mode).
            mode = getattr(transport, "_sendfile_compatible", constants._SendfileMode.UNSUPPORTED)
            if mode is not constants._SendfileMode.FALLBACK:
                raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
            if not fallback:
                raise RuntimeError(
                    "fallback is disabled and native sendfile is not supported "
                    f"for transport {transport!r}"
                )
            return await self._sendfile_through_protocol_swap(transport, file, offset, count)
        raw = transport._sock
        try:
            transport.pause_reading()
            await transport._wait_buffer_empty()
            try:
                return await self.sock_sendfile(raw, file, offset, count, fallback=False)
            finally:
                transport._end_sendfile()
                transport.resume_reading()
        except asyncio.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sendfile_through_transport(transport, file, offset, count)

    async def _sendfile_through_protocol_swap(self, transport, file, offset, count) -> int:
        """The copying path for a transport that is not ours (TLS): while the file is
        written, a stand-in protocol takes the transport's flow-control calls, so that writing
        waits whenever the transport asks its protocol to pause."""
        stand_in = _FlowControlStandIn(self, transport)
        try:
            return await self._sendfile_copy(transport, file, offset, count, stand_in.writable)
        finally:
            stand_in.restore()

    async def _sendfile_through_transport(self, transport, file, offset, count) -> int:
        """The copying path over a native transport: between chunks, wait for its buffer to
        drain below the high-water mark."""

        async def below_high_water():
            while transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
                if transport.is_closing():
                    raise ConnectionError("Connection closed by peer")
                await transport._wait_buffer_empty()
                transport._end_sendfile()
            if transport.is_closing():
                raise ConnectionError("Connection closed by peer")

        return await self._sendfile_copy(transport, file, offset, count, below_high_water)

    async def _sendfile_copy(self, transport, file, offset, count, writable) -> int:
        """File chunks read in the executor and written to ``transport``, awaiting
        ``writable()`` before each write; the file is left positioned after what was sent."""
        if offset:
            file.seek(offset)
        size = min(count, 16384) if count else 16384
        buffer = bytearray(size)
        sent = 0
        try:
            while True:
                if count:
                    size = min(count - sent, size)
                    if size <= 0:
                        return sent
                view = memoryview(buffer)[:size]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    return sent
                await writable()
                transport.write(bytes(view[:read]))
                sent += read
        finally:
            if sent > 0 and hasattr(file, "seek"):
                file.seek(offset + sent)
