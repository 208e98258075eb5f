"""Echo servers on the high-level APIs: Protocol/transport, streams, Unix sockets, UDP.

The counterparts of ``sock_echo`` for the APIs most applications use (the
flavours of uvloop's vmbench ``asyncioecho.py`` besides ``sock_*``):

* ``transport_echo.tcp_{1k,64k}``: ``loop.create_server`` with an
  ``asyncio.Protocol`` whose ``data_received`` calls ``transport.write(data)``.
* ``transport_echo.streams_{1k,64k}``: ``asyncio.start_server``; one handler
  task per connection looping ``data = await reader.read(102400)`` /
  ``writer.write(data)`` / ``await writer.drain()``.
* ``transport_echo.unix_1k``: the Protocol server on a Unix stream socket
  (``loop.create_unix_server``).
* ``transport_echo.udp_1k``: ``loop.create_datagram_endpoint`` with a
  ``DatagramProtocol`` whose ``datagram_received`` calls
  ``transport.sendto(data, addr)``.
* ``transport_echo.tls_{1k,64k}``: the streams server over TLS,
  ``asyncio.start_server(..., ssl=context)`` with the standard library's
  ``ssl`` module (certificates: ``workloads/_tls.py``).  The client is always
  ``bench/echo_client.py --tls-ca`` (``loadgen`` has no TLS): non-blocking
  ``ssl`` sockets on one thread, each verifying the server's certificate;
  every handshake is done before the window starts.

Each server listens on a socket the workload binds itself (passed as
``sock=``), on loopback or in a private temporary directory.  Accepted TCP
connections get TCP_NODELAY (asyncio and uvloop set it anyway).  The client is
the same separate process as for ``sock_echo`` (``bench/echo_client.py``, or
``$BENCH_LOADGEN``): ``CONNECTIONS`` connections (UDP: connected sockets) each
with one message in flight, ping-pong.  For UDP every datagram carries a
sequence number; one unanswered for 0.5 s counts as lost on the client
(``client_lost`` in the JSON) and is replaced.

Measured window, as in ``sock_echo``: from ``WARMUP_S`` after the last client
connected (UDP: after datagrams came from ``CONNECTIONS`` distinct addresses)
for ``WINDOW_S`` seconds, timed by the server with ``loop.call_later``;
``getrusage(RUSAGE_SELF)`` and the count of echoed bytes are read at both ends
(the worker process is the server).  Reported: requests/s and server CPU µs
per request.  The server keeps serving until the client process has exited.

A loop that leaves the API to ``AbstractEventLoop``'s stub, or raises
``NotImplementedError`` when it is called, is reported unavailable for that
case (for TLS: ``start_server(ssl=...)`` raising it, as rloop 0.5.0 does).

Native floor (``tcp_1k``, ``tcp_64k``, ``unix_1k``): the same client, window
and message size against ``native-echo``, a single-threaded Rust echo server
on mio (epoll) without Python, shown as the pseudo-loop ``native``.  It cannot
time its own window, so the worker does: it watches the server's descriptors
until ``CONNECTIONS`` clients are connected, sleeps ``WARMUP_S``, reads the
server's CPU time from ``/proc`` (schedstat: the same user + system total that
``getrusage`` gives), sleeps ``WINDOW_S`` and reads it again.  It counts no
bytes either, so requests/s is the client's figure (over its own window, which
starts when its connections are up and encloses the worker's), and server CPU
µs/request = server CPU seconds per second in the window / requests/s.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import Workload, _tls
from ._common import lacks_feature, require_loop_methods
from ._native_server import NativeEchoServer
from .sock_echo import (
    CLIENT_KEYS,
    REQUEST_RATE,
    SERVER_CPU,
    ByteCounter,
    Mark,
    client_process,
    echo_metrics,
    load_generator,
    load_options,
    parse_client_output,
)

CONNECTIONS = 20
#: ``reader.read`` size of the streams server (vmbench's).
RECV_BYTES = 102_400
WARMUP_S = 0.5
WINDOW_S = 2.0
#: The client keeps sending this long past the server's window.
CLIENT_TAIL_S = 0.3
#: Seconds the server waits for all clients to show up.
CONNECT_TIMEOUT_S = 10.0
#: Extra seconds on top of warm-up + window before the server gives up.
SERVER_GRACE_S = 30.0
#: How often the server looks whether the client process has exited.
CLIENT_POLL_S = 0.05
#: Seconds before the UDP client counts an unanswered datagram as lost.
UDP_TIMEOUT_S = 0.5


class WindowClock:
    """Schedules the two window marks once every client has shown up."""

    def __init__(
        self,
        loop,
        counter: ByteCounter,
        warmup: float,
        window: float,
        expected_clients: int = CONNECTIONS,
    ) -> None:
        """Nothing is scheduled until :meth:`client_arrived` ran ``expected_clients`` times."""
        self.loop = loop
        self.counter = counter
        self.warmup = warmup
        self.window = window
        self.expected_clients = expected_clients
        self.clients = 0
        self.marks: dict[str, Mark] = {}
        self.all_arrived = loop.create_future()

    def client_arrived(self) -> None:
        """Count one client; with the last one, schedule the start and stop marks."""
        self.clients += 1
        if self.clients == self.expected_clients:
            self.loop.call_later(self.warmup, self.mark, "start")
            self.loop.call_later(self.warmup + self.window, self.mark, "stop")
            if not self.all_arrived.done():
                self.all_arrived.set_result(None)

    def mark(self, name: str) -> None:
        """Take the readings of one end of the window."""
        self.marks.setdefault(name, Mark.now(self.counter))


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Set TCP_NODELAY on a TCP transport's socket (already set by most loops)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class EchoProtocol(asyncio.Protocol):
    """Echo every chunk back with ``transport.write``."""

    def __init__(self, clock: WindowClock, tcp: bool) -> None:
        """Remember the window clock; ``tcp`` says whether to set TCP_NODELAY."""
        self.clock = clock
        self.counter = clock.counter
        self.tcp = tcp
        self.transport: Any = None

    def connection_made(self, transport) -> None:
        """Keep the transport and count the client."""
        self.transport = transport
        if self.tcp:
            set_nodelay(transport)
        self.clock.client_arrived()

    def data_received(self, data: bytes) -> None:
        """Echo ``data``."""
        self.transport.write(data)
        self.counter.echoed += len(data)


class DatagramEchoProtocol(asyncio.DatagramProtocol):
    """Echo every datagram back to its sender with ``transport.sendto``."""

    def __init__(self, clock: WindowClock) -> None:
        """Remember the window clock; clients are counted by distinct source address."""
        self.clock = clock
        self.counter = clock.counter
        self.senders: set[Any] | None = set()
        self.transport: Any = None

    def connection_made(self, transport) -> None:
        """Keep the transport."""
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        """Echo ``data`` to ``addr``."""
        self.transport.sendto(data, addr)
        self.counter.echoed += len(data)
        if self.senders is not None and addr not in self.senders:
            self.senders.add(addr)
            self.clock.client_arrived()
            if len(self.senders) == CONNECTIONS:
                self.senders = None  # every client seen: no more bookkeeping per datagram


#: Errors that end a streams connection quietly: the client closed with an echo in flight.
CLOSED_BY_CLIENT: tuple[type[BaseException], ...] = (ConnectionResetError, BrokenPipeError)
#: Over TLS the client closes without a close_notify, which may also surface as an SSLError.
CLOSED_BY_TLS_CLIENT = (ConnectionError, ssl.SSLError)


def streams_handler(
    counter: ByteCounter, closed_by_client: tuple[type[BaseException], ...] = CLOSED_BY_CLIENT
) -> Callable[..., Awaitable[None]]:
    """Return the ``start_server`` callback: echo with read / write / drain until EOF."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(RECV_BYTES)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                counter.echoed += len(data)
        except closed_by_client:
            pass  # the client closed with an echo still in flight: the run is over
        finally:
            writer.close()

    return handle


async def wait_for_exit(client: subprocess.Popen) -> None:
    """Keep the loop serving until the client process has exited."""
    while client.poll() is None:
        await asyncio.sleep(CLIENT_POLL_S)


async def start_tls_server(
    loop, on_connection: Callable[..., Any], listener: socket.socket, context: ssl.SSLContext
) -> asyncio.Server:
    """``asyncio.start_server`` with TLS; WorkloadUnavailable if the loop has no TLS."""
    try:
        return await asyncio.start_server(on_connection, sock=listener, ssl=context)
    except NotImplementedError as error:
        raise lacks_feature(loop, "TLS", "start_server(ssl=...)", error) from error


async def serve(
    loop,
    kind: str,
    listener: socket.socket,
    client: subprocess.Popen,
    clock: WindowClock,
    tls_context: ssl.SSLContext | None = None,
) -> None:
    """Start the ``kind`` server on ``listener``, serve until the client exits, close it."""
    if kind in ("streams", "tls"):
        if kind == "tls":
            handle = streams_handler(clock.counter, CLOSED_BY_TLS_CLIENT)
        else:
            handle = streams_handler(clock.counter)

        def on_connection(reader, writer):
            clock.client_arrived()
            return handle(reader, writer)

        if tls_context is not None:
            server = await start_tls_server(loop, on_connection, listener, tls_context)
        else:
            server = await asyncio.start_server(on_connection, sock=listener)
    elif kind == "tcp":
        server = await loop.create_server(lambda: EchoProtocol(clock, tcp=True), sock=listener)
    elif kind == "unix":
        server = await loop.create_unix_server(
            lambda: EchoProtocol(clock, tcp=False), sock=listener
        )
    else:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: DatagramEchoProtocol(clock), sock=listener
        )
        try:
            await wait_for_exit(client)
        finally:
            transport.close()
        return
    try:
        await wait_for_exit(client)
    finally:
        server.close()


REQUIRED_METHODS = {
    "tcp": ("create_server",),
    "streams": ("create_server",),
    "tls": ("create_server",),
    "unix": ("create_unix_server",),
    "udp": ("create_datagram_endpoint",),
}


def require_methods(loop, kind: str) -> None:
    """Raise WorkloadUnavailable if the loop leaves a method ``kind`` needs to the stub."""
    require_loop_methods(loop, REQUIRED_METHODS[kind])


def client_command(
    kind: str,
    address: Any,
    size: int,
    warmup: float,
    duration: float,
    tls_cafile: str | None = None,
) -> tuple[str, list[str]]:
    """Command line of the load generator: $BENCH_LOADGEN if set, else echo_client.py.

    TLS (``kind == "tls"``, verified against ``tls_cafile``) always uses echo_client.py.
    """
    if kind == "unix":
        options = ["echo", "--family", "unix", "--addr", address]
    else:
        options = ["udp" if kind == "udp" else "echo", "--addr", f"{address[0]}:{address[1]}"]
    options += load_options(CONNECTIONS, size, warmup, duration)
    if kind == "udp":
        options += ["--udp-timeout", repr(UDP_TIMEOUT_S)]
    if kind == "tls":
        if tls_cafile is None:
            raise ValueError("the TLS client needs the CA file to verify the server with")
        options += ["--tls-ca", tls_cafile, "--tls-server-name", _tls.SERVER_NAME]
    return load_generator(options, loadgen_allowed=kind != "tls")


def make_listener(kind: str, directory: str) -> socket.socket:
    """Bind the server's socket: loopback TCP/UDP, or a Unix socket in ``directory``."""
    if kind == "unix":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.path.join(directory, "echo.sock"))
    elif kind == "udp":
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind(("127.0.0.1", 0))
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
    if kind != "udp":
        listener.listen(CONNECTIONS)
    listener.setblocking(False)
    return listener


def run_server(
    loop,
    kind: str,
    listener: socket.socket,
    client: subprocess.Popen,
    clock: WindowClock,
    tls_context: ssl.SSLContext | None = None,
) -> None:
    """Serve until the client exits; fail if the clients do not all connect in time."""

    async def main() -> None:
        server = loop.create_task(serve(loop, kind, listener, client, clock, tls_context))
        done, _ = await asyncio.wait(
            [server, clock.all_arrived],
            timeout=CONNECT_TIMEOUT_S,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if server in done:
            server.result()  # raises the server's error (e.g. NotImplementedError)
        if not clock.all_arrived.done():
            server.cancel()
            raise TimeoutError(f"only {clock.clients} of {CONNECTIONS} clients arrived")
        await server

    loop.run_until_complete(asyncio.wait_for(main(), clock.warmup + clock.window + SERVER_GRACE_S))


def measure_transport_echo(loop, scale: float, kind: str, size: int) -> dict[str, float]:
    """Run the ``kind`` echo server against one client run; return rate and CPU per request."""
    require_methods(loop, kind)
    warmup = max(0.05, WARMUP_S * scale)
    window = max(0.1, WINDOW_S * scale)
    clock = WindowClock(loop, ByteCounter(), warmup, window)
    with tempfile.TemporaryDirectory(prefix="bench-echo-") as directory:
        tls_cafile = tls_context = None
        if kind == "tls":
            certificates = _tls.certificates(directory)
            tls_context = _tls.server_context(certificates)
            tls_cafile = certificates.cafile
        listener = make_listener(kind, directory)
        with listener:
            address = listener.getsockname()
            client_name, command = client_command(
                kind, address, size, warmup, window + CLIENT_TAIL_S, tls_cafile
            )
            with client_process(command, client_name) as client:
                run_server(loop, kind, listener, client, clock, tls_context)
                stdout, stderr = client.communicate(timeout=SERVER_GRACE_S)
    if client.returncode != 0:
        raise RuntimeError(f"{client_name} exited with {client.returncode}: {stderr.strip()}")
    return echo_metrics(
        clock.marks.get("start"),
        clock.marks.get("stop"),
        size,
        client_name,
        stdout,
        {**CLIENT_KEYS, "lost": "client_lost"},
    )


def measure_native_echo(
    binary: str, scale: float, kind: str, size: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Run ``native-echo`` against the same client as the loops; rate and CPU per request."""
    warmup = max(0.05, WARMUP_S * scale)
    window = max(0.1, WINDOW_S * scale)
    with tempfile.TemporaryDirectory(prefix="bench-native-echo-") as directory:
        argument = os.path.join(directory, "echo.sock") if kind == "unix" else "127.0.0.1:0"
        with NativeEchoServer(binary, argument) as server:
            address = server.address if kind == "unix" else server.tcp_address()
            client_name, command = client_command(
                kind, address, size, warmup, window + CLIENT_TAIL_S
            )
            client = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            try:
                server.wait_for_connections(CONNECTIONS, CONNECT_TIMEOUT_S, client)
                time.sleep(warmup)
                start = server.reading()
                time.sleep(window)
                stop = server.reading()
                stdout, stderr = client.communicate(timeout=SERVER_GRACE_S)
            except (RuntimeError, TimeoutError) as error:
                client.kill()
                stderr = client.communicate()[1].strip() or "no output"
                raise RuntimeError(f"{error}; {client_name}: {stderr}") from error
            finally:
                if client.poll() is None:
                    client.kill()
                    client.wait()
    if client.returncode != 0:
        raise RuntimeError(f"{client_name} exited with {client.returncode}: {stderr.strip()}")
    client_result = parse_client_output(stdout)
    rate = client_result.get("rps")
    if not isinstance(rate, int | float) or rate <= 0:
        raise RuntimeError(f"{client_name} reported no requests/s: {stdout.strip()[-300:]}")

    seconds = stop.time - start.time
    requests = rate * seconds  # the client's rate over the worker's window
    cpu = stop.cpu - start.cpu
    user_ticks = stop.user_cpu - start.user_cpu
    system_ticks = stop.system_cpu - start.system_cpu
    ticks = user_ticks + system_ticks
    result = {
        "requests_per_s": rate,
        "server_cpu_us_per_request": cpu / requests * 1e6,
        "mb_per_s": rate * size / 1e6,
        "server_cpu_pct": 100.0 * cpu / seconds,
        # /proc/PID/stat ticks only say how the total splits (10 ms resolution).
        "server_user_cpu_us_per_request": cpu * (user_ticks / ticks) / requests * 1e6
        if ticks
        else math.nan,
        "server_system_cpu_us_per_request": cpu * (system_ticks / ticks) / requests * 1e6
        if ticks
        else math.nan,
        "server_page_faults_per_request": (stop.minor_faults - start.minor_faults) / requests,
        "window_s": seconds,
        "requests": requests,
        "requests_counted_by_client": 1.0,
        "client_is_loadgen": float(client_name == "loadgen"),
    }
    for client_key, key in {**CLIENT_KEYS, "lost": "client_lost"}.items():
        if isinstance(client_result.get(client_key), int | float):
            result[key] = float(client_result[client_key])
    return result, server.costs()


DESCRIPTIONS = {
    "tcp": "create_server + asyncio.Protocol echo (transport.write)",
    "streams": "asyncio.start_server echo (reader.read / writer.write / drain)",
    "unix": "create_unix_server + asyncio.Protocol echo, Unix stream socket",
    "udp": "create_datagram_endpoint echo (sendto), one datagram in flight per client socket",
    "tls": "asyncio.start_server(ssl=...) echo over TLS (reader.read / writer.write / drain)",
}

CASES = [
    ("tcp", "1k", 1024),
    ("tcp", "64k", 64 * 1024),
    ("streams", "1k", 1024),
    ("streams", "64k", 64 * 1024),
    ("unix", "1k", 1024),
    ("udp", "1k", 1024),
    ("tls", "1k", 1024),
    ("tls", "64k", 64 * 1024),
]


#: Cases also measured against ``native-echo`` (the Protocol echo's Python-free floor).
NATIVE_CASES = {("tcp", "1k"), ("tcp", "64k"), ("unix", "1k")}


def make_workload(kind: str, case: str, size: int) -> Workload:
    """Build the ``transport_echo.<kind>_<case>`` workload."""
    native = None
    if (kind, case) in NATIVE_CASES:

        def native(binary: str, scale: float) -> tuple[dict[str, float], dict[str, Any]]:
            return measure_native_echo(binary, scale, kind, size)

    return Workload(
        name=f"transport_echo.{kind}_{case}",
        description=(
            f"{DESCRIPTIONS[kind]}, {CONNECTIONS} clients, {size} B ping-pong "
            "(client: another process)"
        ),
        metrics=(REQUEST_RATE, SERVER_CPU),
        run=lambda loop, scale: measure_transport_echo(loop, scale, kind, size),
        cpu_bound=False,
        native=native,
    )


WORKLOADS = [make_workload(kind, case, size) for kind, case, size in CASES]
