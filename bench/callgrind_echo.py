r"""Instructions per request of a ferroloop echo server, for callgrind A/B of two builds.

The server (this process, run under ``valgrind --tool=callgrind``) echoes requests of one
client process (not under valgrind) that sends N sequential requests, 1 ms apart, so the
server blocks in the poll before each one.  Run it twice with different N; the difference of
the two instruction totals divided by the difference of N is the server's cost per request,
start-up and imports cancelled out (bench/RESULTS.md, before/after of issue #18)::

    PYTHONHASHSEED=0 PYTHONPATH=BUILD/python valgrind --tool=callgrind \
        python3.12 bench/callgrind_echo.py 4500 --family unix --size 1024

``--family udp`` serves a datagram endpoint (``datagram_received`` -> ``sendto``) instead,
``--clients K`` datagrams in flight (K client sockets, as transport_echo.udp_1k's 20);
``--loop rloop`` / ``uvloop`` / ``asyncio`` measure another loop the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile

from callgrind_rows import new_loop

CLIENT = r"""
import socket, sys, time
address, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if address.startswith("/"):
    connection = socket.socket(socket.AF_UNIX)
    connection.connect(address)
else:
    connection = socket.create_connection(("127.0.0.1", int(address)))
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
message = b"x" * size
for _ in range(count):
    time.sleep(0.001)
    connection.sendall(message)
    received = 0
    while received < size:
        data = connection.recv(65536)
        if not data:
            raise SystemExit("server closed the connection")
        received += len(data)
connection.close()
"""


UDP_CLIENT = r"""
import socket, sys, time
port, count, size, clients = (int(value) for value in sys.argv[1:5])
sockets = []
for _ in range(clients):
    connection = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    connection.connect(("127.0.0.1", port))
    sockets.append(connection)
message = b"x" * size
for _ in range(count // clients):
    time.sleep(0.001)
    for connection in sockets:
        connection.send(message)
    for connection in sockets:
        connection.recv(65536)
"""


class DatagramEcho(asyncio.DatagramProtocol):
    """Sends each datagram back; resolves ``finished`` after ``count`` of them."""

    def __init__(self, finished: asyncio.Future[None], count: int) -> None:
        """Remember the future to resolve and how many datagrams to expect."""
        self.finished = finished
        self.left = count

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Echo the datagram to its sender (as bench/workloads' udp_1k server does)."""
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]
        self.left -= 1
        if self.left == 0 and not self.finished.done():
            self.finished.set_result(None)


class Echo(asyncio.Protocol):
    """Writes back what it receives; resolves ``finished`` when the client leaves."""

    def __init__(self, finished: asyncio.Future[None], nodelay: bool) -> None:
        """Remember the future to resolve and whether to set TCP_NODELAY."""
        self.finished = finished
        self.nodelay = nodelay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (TCP_NODELAY on, as a latency-bound server would)."""
        self.transport = transport
        if self.nodelay:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        """Echo the bytes."""
        self.transport.write(data)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        """End the run: the client left."""
        if not self.finished.done():
            self.finished.set_result(None)


async def serve(count: int, family: str, size: int, clients: int = 1) -> None:
    """Serve one client of ``count`` requests of ``size`` bytes, then return."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    with tempfile.TemporaryDirectory() as directory:
        server: asyncio.AbstractServer | None = None
        endpoint: asyncio.BaseTransport | None = None
        if family == "udp":
            endpoint, _ = await loop.create_datagram_endpoint(
                lambda: DatagramEcho(finished, count), local_addr=("127.0.0.1", 0)
            )
            port = str(endpoint.get_extra_info("sockname")[1])
            command = [UDP_CLIENT, port, str(count), str(size), str(clients)]
        else:
            if family == "unix":
                address = os.path.join(directory, "echo.sock")
                server = await loop.create_unix_server(lambda: Echo(finished, False), address)
            else:
                server = await loop.create_server(lambda: Echo(finished, True), "127.0.0.1", 0)
                address = str(server.sockets[0].getsockname()[1])
            command = [CLIENT, address, str(count), str(size)]
        client = subprocess.Popen(["/usr/bin/python3", "-c", *command])
        await finished
        if endpoint is not None:
            endpoint.close()
        if server is not None:
            server.close()
            await server.wait_closed()
        while client.poll() is None:
            await asyncio.sleep(0.01)


def main() -> None:
    """Parse the command line; a warm-up of 200 requests, then the measured ones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, help="requests of the measured client")
    parser.add_argument("--family", choices=("tcp", "unix", "udp"), default="tcp")
    parser.add_argument("--size", type=int, default=1024, help="bytes per request")
    parser.add_argument(
        "--clients", type=int, default=1, help="udp: datagrams in flight at once (count divides)"
    )
    parser.add_argument("--loop", default="ferroloop", help="ferroloop, rloop, uvloop or asyncio")
    arguments = parser.parse_args()
    loop = new_loop(arguments.loop)
    try:
        loop.run_until_complete(serve(200, arguments.family, arguments.size, arguments.clients))
        loop.run_until_complete(
            serve(arguments.count, arguments.family, arguments.size, arguments.clients)
        )
    finally:
        loop.close()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
