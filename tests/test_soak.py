"""Short soak: many connections opened and closed through streams (plain and TLS) must leave
no descriptor, task or Python object behind. Both loops."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import struct

import pytest
from support import open_fds

try:
    from test.test_asyncio import utils as cpython_test_utils
except ImportError:  # pragma: no cover - an interpreter without its test package
    cpython_test_utils = None


async def echo_once(reader, writer):
    data = await reader.read(100)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def churn(rounds, per_round, server_ssl=None, client_ssl=None):
    """Returns (descriptors, tracked objects, tasks) after each round."""
    baseline_tasks = len(asyncio.all_tasks())
    server = await asyncio.start_server(echo_once, "127.0.0.1", 0, ssl=server_ssl)
    port = server.sockets[0].getsockname()[1]
    samples = []
    for _ in range(rounds):
        for _ in range(per_round):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=client_ssl,
                server_hostname="localhost" if client_ssl else None,
            )
            writer.write(b"ping")
            assert await reader.read(100) == b"ping"
            writer.close()
            await writer.wait_closed()
        # Let the server side finish its last connections (a TLS close takes a few rounds).
        for _ in range(200):
            if len(asyncio.all_tasks()) <= baseline_tasks:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)
        gc.collect()
        samples.append((open_fds(), len(gc.get_objects()), len(asyncio.all_tasks())))
    server.close()
    await server.wait_closed()
    return samples


def assert_flat(samples, per_round):
    """After a warm-up round, descriptors and tasks do not grow at all, and tracked objects
    grow by far less than one per connection (a leak costs several per connection)."""
    first_fds, first_objects, first_tasks = samples[1]
    for fds, objects, tasks in samples[2:]:
        assert fds <= first_fds
        assert tasks <= first_tasks
        assert objects <= first_objects + per_round // 4, samples


def test_plain_connections_leak_nothing(loop):
    samples = loop.run_until_complete(asyncio.wait_for(churn(4, 300), 60))
    assert_flat(samples, 300)


@pytest.mark.skipif(cpython_test_utils is None, reason="needs CPython's test certificates")
def test_tls_connections_leak_nothing(loop):
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cpython_test_utils.SIGNED_CERTFILE)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(cpython_test_utils.SIGNING_CA)
    samples = loop.run_until_complete(
        asyncio.wait_for(churn(4, 200, server_context, client_context), 60)
    )
    assert_flat(samples, 200)


def test_connect_close_cycles_return_descriptors_to_baseline(loop):
    """2,000 connect/close cycles against a server of the loop under test (the soak's last
    phase, shortened): a plain close by the client, a reset (SO_LINGER 0) or a close by the
    server, in turn; once the server has seen every connection lost, the process has its
    baseline descriptors plus the listening socket, and its baseline after the server closes."""
    cycles = 2000
    made: list[int] = []
    lost: list[int] = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            made.append(1)
            self.transport = transport

        def data_received(self, data):
            self.transport.close()  # the client asked the server to close

        def connection_lost(self, exc):
            lost.append(1)

    async def main():
        await asyncio.sleep(0)
        baseline = open_fds()
        server = await loop.create_server(Server, "127.0.0.1", 0, backlog=1024)
        address = server.sockets[0].getsockname()
        for n in range(cycles):
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            if n % 3 == 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif n % 3 == 2:
                await loop.sock_sendall(sock, b"C")
                await loop.sock_recv(sock, 1)  # the server's EOF
            sock.close()
        for _ in range(1000):
            if len(lost) == cycles:
                break
            await asyncio.sleep(0.01)
        with_server = open_fds()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)
        return baseline, with_server, open_fds()

    baseline, with_server, after = loop.run_until_complete(asyncio.wait_for(main(), 120))
    assert (len(made), len(lost)) == (cycles, cycles)
    assert with_server == baseline + 1
    assert after == baseline
