"""Client connections' errors (create_connection), against CPython's selector loop: a refused
connection, several addresses all failing (one combined OSError), the same error twice not
combined, argument errors. Echo through client connections is in ``test_transports.py``.
"""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest
from support import (
    closed_port,
    run,
)


def test_create_connection_refused(loop):
    port = closed_port()

    async def main():
        with pytest.raises(ConnectionRefusedError) as info:
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        return info.value

    exc = run(loop, main())
    assert exc.errno == errno.ECONNREFUSED
    assert f"Connect call failed ('127.0.0.1', {port})" in str(exc)


def test_create_connection_several_addresses_all_failing(loop):
    """Every resolved address is tried; different errors combine into one OSError."""
    port1, port2 = closed_port(), closed_port()
    while port2 == port1:
        port2 = closed_port()
    lookups = []

    async def fake_getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        lookups.append((host, port))
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port1)),
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port2)),
        ]

    loop.getaddrinfo = fake_getaddrinfo

    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_connection(asyncio.Protocol, "two.example.invalid", 80)
        return info.value

    exc = run(loop, main())
    assert lookups == [("two.example.invalid", 80)]
    assert type(exc) is OSError
    message = str(exc)
    assert message.startswith("Multiple exceptions: ")
    assert f"Connect call failed ('127.0.0.1', {port1})" in message
    assert f"Connect call failed ('127.0.0.1', {port2})" in message
    assert message.index(str(port1)) < message.index(str(port2))


def test_create_connection_same_error_twice_is_not_combined(loop):
    """Identical errors for every address: the first one is raised as it is."""
    port = closed_port()

    async def fake_getaddrinfo(host, port_, *, family=0, type=0, proto=0, flags=0):
        info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))
        return [info, info]

    loop.getaddrinfo = fake_getaddrinfo

    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_connection(asyncio.Protocol, "twice.example.invalid", 80)
        return info.value

    exc = run(loop, main())
    assert type(exc) is ConnectionRefusedError
    assert not str(exc).startswith("Multiple exceptions")


def test_create_connection_argument_errors(loop):
    async def main():
        with pytest.raises(ValueError, match="host and port was not specified and no sock"):
            await loop.create_connection(asyncio.Protocol)
        with socket.socket() as sock:
            with pytest.raises(ValueError, match="host/port and sock can not be specified"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, sock=sock)
        with socket.socket(type=socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError, match="A Stream Socket was expected"):
                await loop.create_connection(asyncio.Protocol, sock=sock)

    run(loop, main())
