"""The ``transport_echo.tcp_*`` server as a standalone process, for ``measure.py``.

The same protocol as ``bench/workloads/transport_echo.py``'s ``EchoProtocol``
(``transport.write(data)`` and a byte count in ``data_received``, TCP_NODELAY on
each accepted socket), on the loop named by the first argument (``ferroloop``
or ``asyncio``).  Prints ``LISTEN host:port`` once bound, like ``native-echo``,
and serves until it is killed, so ``measure.py`` can read its CPU time from
``/proc`` exactly as it reads the native servers'.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any


class ByteCounter:
    """Bytes echoed by all connections (a plain attribute: cheap to bump)."""

    __slots__ = ("echoed",)

    def __init__(self) -> None:
        """Start at zero."""
        self.echoed = 0


class EchoProtocol(asyncio.Protocol):
    """Echo every chunk back with ``transport.write``."""

    def __init__(self, counter: ByteCounter) -> None:
        """Remember the shared byte counter."""
        self.counter = counter
        self.transport: Any = None

    def connection_made(self, transport) -> None:
        """Keep the transport and set TCP_NODELAY."""
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        """Echo ``data``."""
        self.transport.write(data)
        self.counter.echoed += len(data)


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """Return a fresh loop of the named kind."""
    if name == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop()
    if name == "asyncio":
        return asyncio.new_event_loop()
    raise SystemExit(f"unknown loop {name!r} (ferroloop or asyncio)")


def main() -> None:
    """Bind on loopback, print the address, serve forever."""
    loop = new_loop(sys.argv[1] if len(sys.argv) > 1 else "ferroloop")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    counter = ByteCounter()
    loop.run_until_complete(loop.create_server(lambda: EchoProtocol(counter), sock=listener))
    host, port = listener.getsockname()
    print(f"LISTEN {host}:{port}", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
