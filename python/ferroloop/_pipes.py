"""The loop's pipe API: ``connect_read_pipe`` and ``connect_write_pipe``.

The transports are native (``src/transport/pipe_read.rs``, ``pipe_write.rs``): they check the
pipe's file type, make it non-blocking, and read or write it with ``read(2)``/``write(2)`` in
Rust, so nothing here makes a system call on the loop's thread. Behaviour follows asyncio's
unix pipe transports (the same in CPython 3.11 to 3.13): ``connection_made`` is scheduled
first, then reading (or, for a write pipe, watching for the reader going away), then the
waiter these coroutines await. The loop notes each pipe transport (weakly) for
``ferroloop.inspect_transports()`` and ``stats()``: pipes are not in its transport registry,
which asyncio's ``add_reader`` check consults (asyncio lets a pipe's descriptor be watched).
"""

from __future__ import annotations

import logging
from typing import Any

from ._ferroloop import ReadPipeTransport, WritePipeTransport

logger = logging.getLogger("asyncio")


class PipeAPI:
    """``connect_read_pipe`` / ``connect_write_pipe``, mixed into ``ferroloop.EventLoop``."""

    def _make_read_pipe_transport(
        self, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> ReadPipeTransport:
        """A read pipe transport: ``connection_made``, reading, then ``waiter`` resolved, on
        the next iterations (the name asyncio's subprocess code looks for)."""
        transport = ReadPipeTransport(self, pipe, protocol, extra)
        transport._start(waiter)
        self._note_pipe_transport(transport)  # type: ignore[attr-defined]
        return transport

    def _make_write_pipe_transport(
        self, pipe: Any, protocol: Any, waiter: Any = None, extra: Any = None
    ) -> WritePipeTransport:
        """A write pipe transport: ``connection_made``, the watch for a closed read end (pipes,
        FIFOs, sockets), then ``waiter`` resolved, on the next iterations."""
        transport = WritePipeTransport(self, pipe, protocol, extra)
        transport._start(waiter)
        self._note_pipe_transport(transport)  # type: ignore[attr-defined]
        return transport

    async def connect_read_pipe(self, protocol_factory: Any, pipe: Any) -> tuple[Any, Any]:
        """Reads ``pipe`` (a file object over a pipe, FIFO, socket or character device) into
        ``protocol_factory()``; returns ``(transport, protocol)``."""
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_read_pipe_transport(pipe, protocol, waiter)
        return await self._pipe_connected("Read", pipe, transport, protocol, waiter)

    async def connect_write_pipe(self, protocol_factory: Any, pipe: Any) -> tuple[Any, Any]:
        """Writes to ``pipe`` (a file object over a pipe, FIFO, socket or character device)
        through a transport speaking to ``protocol_factory()``; returns ``(transport,
        protocol)``."""
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_write_pipe_transport(pipe, protocol, waiter)
        return await self._pipe_connected("Write", pipe, transport, protocol, waiter)

    async def _pipe_connected(
        self, kind: str, pipe: Any, transport: Any, protocol: Any, waiter: Any
    ) -> tuple[Any, Any]:
        """Waits until ``connection_made`` ran; a failure or cancellation meanwhile closes the
        transport."""
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self.get_debug():
            logger.debug("%s pipe %r connected: (%r, %r)", kind, pipe.fileno(), transport, protocol)
        return transport, protocol


__all__ = ["PipeAPI", "ReadPipeTransport", "WritePipeTransport"]
