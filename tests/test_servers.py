"""Servers (create_server, create_unix_server, the Server object), against CPython's selector
loop: create_server's host forms (None, "", a list), port 0 and socket options, sock=,
argument errors, address in use; start_serving later, serve_forever cancelled, close and
wait_closed with and without connections, ``async with``; create_unix_server over a stale
socket file and over a regular file; a failing protocol factory does not stop the server and
is reported. The transports of accepted connections are in
``test_server_accepted_transports.py``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from asyncio import trsock

import pytest
from support import (
    Recorder,
    ipv6_available,
    run,
)


def families_of(server) -> set:
    return {sock.family for sock in server.sockets}


@pytest.mark.parametrize("host", [None, ""])
def test_create_server_all_interfaces(loop, host):
    """host None or '': a listening socket per family, on the wildcard address."""

    async def main():
        server = await loop.create_server(asyncio.Protocol, host, 0)
        try:
            socks = server.sockets
            names = [(sock.family, sock.getsockname()) for sock in socks]
            listening = [sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for sock in socks]
            v4_port = next(name[1] for family, name in names if family == socket.AF_INET)
            # connecting to the IPv4 socket works
            client = socket.socket()
            client.setblocking(False)
            await loop.sock_connect(client, ("127.0.0.1", v4_port))
            client.close()
        finally:
            server.close()
            await server.wait_closed()
        return names, listening

    names, listening = run(loop, main())
    families = {family for family, _ in names}
    assert socket.AF_INET in families
    assert families <= {socket.AF_INET, socket.AF_INET6}
    assert len(names) == len(families)
    for family, name in names:
        assert name[0] == ("0.0.0.0" if family == socket.AF_INET else "::")
        assert name[1] != 0
    assert all(listening)


def test_create_server_host_list(loop):
    """A list of hosts: one socket per distinct address."""
    hosts = ["127.0.0.1", "127.0.0.1"] + (["::1"] if ipv6_available() else [])

    async def main():
        server = await loop.create_server(asyncio.Protocol, hosts, 0)
        try:
            return sorted((sock.family, sock.getsockname()[0]) for sock in server.sockets)
        finally:
            server.close()
            await server.wait_closed()

    expected = [(socket.AF_INET, "127.0.0.1")]
    if ipv6_available():
        expected.append((socket.AF_INET6, "::1"))
    assert run(loop, main()) == sorted(expected)


def test_create_server_port_zero_and_socket_options(loop):
    """Port 0 picks a free port; SO_REUSEADDR by default; SO_REUSEPORT only when asked."""

    async def main():
        options = []
        for kwargs in ({}, {"reuse_port": True}):
            server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, **kwargs)
            assert type(server.sockets) is tuple
            (sock,) = server.sockets
            assert isinstance(sock, trsock.TransportSocket)
            options.append(
                (
                    sock.getsockname()[1],
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR),
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT),
                )
            )
            server.close()
            await server.wait_closed()
        return options

    (port, reuse_addr, reuse_port), (port2, _, reuse_port2) = run(loop, main())
    assert port != 0 and port2 != 0
    assert reuse_addr != 0
    assert reuse_port == 0
    assert reuse_port2 != 0


def test_create_server_sock(loop):
    """create_server(sock=...) serves on the given (bound, not yet listening) socket."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    address = sock.getsockname()
    protos: list[Recorder] = []

    def factory():
        protos.append(Recorder(loop, echo=True))
        return protos[-1]

    async def main():
        server = await loop.create_server(factory, sock=sock)
        (served,) = server.sockets
        assert served.fileno() == sock.fileno()
        assert served.getsockname() == address
        transport, client = await loop.create_connection(lambda: Recorder(loop), *address)
        transport.write(b"via sock")
        await client.received_any
        transport.close()
        await client.lost
        server.close()
        await server.wait_closed()
        return client

    client = run(loop, main())
    assert bytes(client.data) == b"via sock"
    assert len(protos) == 1


def test_create_server_argument_errors(loop):
    async def main():
        with pytest.raises(ValueError, match="Neither host/port nor sock were specified"):
            await loop.create_server(asyncio.Protocol)
        with socket.socket() as sock:
            with pytest.raises(ValueError, match="host/port and sock can not be specified"):
                await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, sock=sock)
        with socket.socket(type=socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError, match="A Stream Socket was expected"):
                await loop.create_server(asyncio.Protocol, sock=sock)

    run(loop, main())


def test_create_server_address_in_use(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(OSError) as info:
                await loop.create_server(asyncio.Protocol, "127.0.0.1", port)
        finally:
            server.close()
            await server.wait_closed()
        return info.value, port

    exc, port = run(loop, main())
    assert exc.errno == errno.EADDRINUSE
    assert f"('127.0.0.1', {port})" in str(exc)


def test_server_start_serving_later(loop):
    protos: list[Recorder] = []

    def factory():
        protos.append(Recorder(loop))
        return protos[-1]

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0, start_serving=False)
        assert server.get_loop() is loop
        assert not server.is_serving()
        assert len(server.sockets) == 1
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()  # already serving: no error
        transport, client = await loop.create_connection(
            lambda: Recorder(loop), *server.sockets[0].getsockname()
        )
        while not protos:
            await asyncio.sleep(0.01)
        await protos[0].made
        transport.close()
        await protos[0].lost
        server.close()
        await server.wait_closed()
        assert not server.is_serving()

    run(loop, main())
    assert len(protos) == 1


def test_serve_forever_cancelled(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, start_serving=False)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        assert server.is_serving()
        with pytest.raises(RuntimeError, match=r"is already being awaited on serve_forever\(\)"):
            await server.serve_forever()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        assert server.sockets == ()
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()

    run(loop, main())


def test_server_close_keeps_connections_and_refuses_new_ones(loop):
    protos: list[Recorder] = []

    def factory():
        protos.append(Recorder(loop, echo=True))
        return protos[-1]

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        transport, client = await loop.create_connection(lambda: Recorder(loop), *address)
        while not protos:
            await asyncio.sleep(0.01)
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        server.close()  # a second close is a no-op
        # the accepted connection still works
        transport.write(b"still here")
        await client.received_any
        # the listening socket is gone
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, *address)
        transport.close()
        await client.lost
        await protos[0].lost
        # (before Python 3.12.1, wait_closed() after close() returns at once even while
        # connections are open; it is awaited once they are gone)
        await server.wait_closed()
        return client

    client = run(loop, main())
    assert bytes(client.data) == b"still here"


def test_wait_closed_waits_for_close_and_for_connections(loop):
    """wait_closed, awaited while serving, ends once the server is closed and its last
    connection is gone."""
    protos: list[Recorder] = []

    def factory():
        protos.append(Recorder(loop))
        return protos[-1]

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        waiting = asyncio.ensure_future(server.wait_closed())
        transport, client = await loop.create_connection(
            lambda: Recorder(loop), *server.sockets[0].getsockname()
        )
        while not protos:
            await asyncio.sleep(0.01)
        await protos[0].made
        await asyncio.sleep(0.01)
        assert not waiting.done(), "wait_closed ended while serving"
        server.close()
        await asyncio.sleep(0.01)
        assert not waiting.done(), "wait_closed ended with a connection still open"
        transport.close()
        await protos[0].lost
        await asyncio.wait_for(waiting, 1.0)
        await client.lost

    run(loop, main())


def test_wait_closed_without_connections(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        waiting = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        server.close()
        await asyncio.wait_for(waiting, 1.0)
        await asyncio.wait_for(server.wait_closed(), 1.0)  # after close: returns

    run(loop, main())


def test_server_async_with(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        async with server as entered:
            assert entered is server
            assert server.is_serving()
            port = server.sockets[0].getsockname()[1]
        assert not server.is_serving()
        assert server.sockets == ()
        return port

    port = run(loop, main())
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


def test_unix_server_replaces_stale_socket_file(loop, unix_path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(unix_path)
    stale.close()
    assert os.path.exists(unix_path)

    async def main():
        server = await loop.create_unix_server(lambda: Recorder(loop, echo=True), unix_path)
        transport, client = await loop.create_unix_connection(lambda: Recorder(loop), unix_path)
        transport.write(b"fresh")
        await client.received_any
        transport.close()
        await client.lost
        server.close()
        await server.wait_closed()
        return client

    assert bytes(run(loop, main()).data) == b"fresh"


def test_unix_server_on_a_regular_file_is_address_in_use(loop, unix_path):
    with open(unix_path, "w") as f:
        f.write("not a socket")

    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_unix_server(asyncio.Protocol, unix_path)
        return info.value

    exc = run(loop, main())
    assert exc.errno == errno.EADDRINUSE
    assert str(exc) == f"[Errno {errno.EADDRINUSE}] Address {unix_path!r} is already in use"
    with open(unix_path) as f:
        assert f.read() == "not a socket"


class FailingFactory:
    """A protocol factory whose first call raises; later calls make echoing Recorders."""

    def __init__(self, loop):
        self.loop = loop
        self.calls = 0
        self.error = LookupError("no protocol for you")
        self.protocols: list[Recorder] = []

    def __call__(self):
        self.calls += 1
        if self.calls == 1:
            raise self.error
        self.protocols.append(Recorder(self.loop, echo=True))
        return self.protocols[-1]


def serve_with_failing_factory(loop, factory: FailingFactory):
    """Connect twice to a server whose factory fails the first time; returns the second
    client's received data."""

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        first = socket.socket()
        first.setblocking(False)
        await loop.sock_connect(first, address)
        while factory.calls < 1:
            await asyncio.sleep(0.01)
        transport, client = await loop.create_connection(lambda: Recorder(loop), *address)
        transport.write(b"second")
        await client.received_any
        assert server.is_serving()
        transport.close()
        await client.lost
        first.close()
        server.close()
        await server.wait_closed()
        return bytes(client.data)

    return run(loop, main())


def test_failing_protocol_factory_server_keeps_serving(loop, handler_calls):
    factory = FailingFactory(loop)
    assert serve_with_failing_factory(loop, factory) == b"second"
    assert factory.calls == 2


@pytest.mark.ferroloop_only
def test_failing_protocol_factory_is_reported(loop, handler_calls):
    """ferroloop reports a failing protocol factory in every mode (stock asyncio only in
    debug mode)."""
    factory = FailingFactory(loop)
    assert serve_with_failing_factory(loop, factory) == b"second"
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["exception"] is factory.error
    assert context["message"] == "Error on transport creation for incoming connection"


def test_failing_protocol_factory_is_reported_in_debug_mode(loop, handler_calls):
    loop.set_debug(True)
    loop.slow_callback_duration = 10.0
    factory = FailingFactory(loop)
    assert serve_with_failing_factory(loop, factory) == b"second"
    reports = [c for c in handler_calls if c.get("exception") is factory.error]
    assert len(reports) == 1
    assert reports[0]["message"] == "Error on transport creation for incoming connection"
