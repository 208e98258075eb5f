r"""Echo load generator for the ``sock_echo`` workloads (standard library only).

Opens ``--conns`` TCP connections to a loopback echo server and, on each one,
plays ping-pong: send one ``--size``-byte message, wait until exactly
``--size`` bytes have come back, send the next.  One process, one thread,
non-blocking sockets multiplexed with :mod:`selectors` (epoll on Linux), no
asyncio — so the client is the same whatever loop the server runs.

After ``--warmup`` seconds (counted from the moment every connection is
established) completed requests are counted for ``--duration`` seconds; then
every connection is closed and one line is printed::

    @@CLIENT {"requests": ..., "window_s": ..., "rps": ..., "lat_p50_us": ...,
              "lat_p99_us": ..., "client_cpu_pct": ..., "total_requests": ...}

(the same line and keys as the compiled ``loadgen echo`` client, so the
workload parses either).  Exit status 1 with a message on stderr on any error:
connection refused, an echo longer than the message, a server that closes
early, or no progress at all for ``STALL_SECONDS``.

Usage::

    python3 bench/echo_client.py echo --addr 127.0.0.1:PORT --conns 10 --size 1024 \
        --warmup 0.5 --duration 2
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import resource
import selectors
import socket
import sys
import time
from typing import Any

RESULT_PREFIX = "@@CLIENT "

#: Largest single ``recv``; echoes of bigger messages arrive in several reads.
RECV_CHUNK = 256 * 1024

#: Fail when no socket became ready for this long (a hung server).
STALL_SECONDS = 10.0

#: Upper bound of one ``select`` wait, so the clock is looked at regularly.
POLL_SECONDS = 0.05


class Connection:
    """Ping-pong state of one client connection."""

    __slots__ = ("bytes_received", "bytes_sent", "message_started", "sock")

    def __init__(self, sock: socket.socket) -> None:
        """Wrap a connected non-blocking socket; no message is in flight yet."""
        self.sock = sock
        self.bytes_sent = 0
        self.bytes_received = 0
        self.message_started = 0.0


class EchoClient:
    """Drives ``--conns`` ping-pong connections and counts completed requests."""

    def __init__(self, connections: list[socket.socket], size: int) -> None:
        """Set up the selector for already connected sockets and an ``size``-byte message."""
        self.size = size
        self.payload = memoryview(b"\x5a" * size)
        self.selector = selectors.DefaultSelector()
        self.connections = [Connection(sock) for sock in connections]
        self.counting = False
        self.window_requests = 0
        self.total_requests = 0
        self.latencies: list[float] = []
        for connection in self.connections:
            self.selector.register(connection.sock, selectors.EVENT_READ, connection)

    def start_message(self, connection: Connection, now: float) -> None:
        """Begin sending the next message on ``connection``."""
        connection.bytes_sent = 0
        connection.bytes_received = 0
        connection.message_started = now
        self.send_more(connection)

    def send_more(self, connection: Connection) -> None:
        """Send as much of the current message as the socket takes without blocking."""
        while connection.bytes_sent < self.size:
            try:
                connection.bytes_sent += connection.sock.send(self.payload[connection.bytes_sent :])
            except BlockingIOError:
                self.selector.modify(
                    connection.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, connection
                )
                return
        self.selector.modify(connection.sock, selectors.EVENT_READ, connection)

    def receive(self, connection: Connection, now: float) -> None:
        """Read the echo; on a complete one, count it and start the next message."""
        try:
            data = connection.sock.recv(RECV_CHUNK)
        except BlockingIOError:
            return
        if not data:
            raise ConnectionError("the server closed a connection during the run")
        connection.bytes_received += len(data)
        if connection.bytes_received > connection.bytes_sent:
            raise ConnectionError(
                f"echo longer than what was sent ({connection.bytes_received} > "
                f"{connection.bytes_sent} bytes)"
            )
        if connection.bytes_received < self.size:
            return
        self.total_requests += 1
        if self.counting:
            self.window_requests += 1
            self.latencies.append(now - connection.message_started)
        self.start_message(connection, now)

    def run(self, warmup: float, duration: float) -> dict[str, Any]:
        """Run warm-up and measured window; return the result dictionary."""
        started = time.perf_counter()
        window_start = started + warmup
        window_end = window_start + duration
        cpu_at_window_start = 0.0
        last_progress = started
        for connection in self.connections:
            self.start_message(connection, started)
        now = started
        while now < window_end:
            events = self.selector.select(POLL_SECONDS)
            now = time.perf_counter()
            if not self.counting and now >= window_start:
                self.counting = True
                window_start = now
                window_end = window_start + duration
                cpu_at_window_start = cpu_seconds()
            if not events:
                if now - last_progress > STALL_SECONDS:
                    raise TimeoutError(f"no progress for {STALL_SECONDS:g} s")
                continue
            last_progress = now
            for key, mask in events:
                connection = key.data
                if mask & selectors.EVENT_WRITE:
                    self.send_more(connection)
                if mask & selectors.EVENT_READ:
                    self.receive(connection, now)
        window = max(now - window_start, 1e-9)
        cpu_in_window = cpu_seconds() - cpu_at_window_start
        self.latencies.sort()
        return {
            "requests": self.window_requests,
            "window_s": window,
            "rps": self.window_requests / window,
            "lat_p50_us": percentile_us(self.latencies, 50.0),
            "lat_p99_us": percentile_us(self.latencies, 99.0),
            "client_cpu_pct": 100.0 * cpu_in_window / window,
            "total_requests": self.total_requests,
        }

    def close(self) -> None:
        """Close every connection and the selector."""
        for connection in self.connections:
            self.selector.unregister(connection.sock)
            connection.sock.close()
        self.selector.close()


def cpu_seconds() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile_us(sorted_seconds: list[float], percent: float) -> float | None:
    """Nearest-rank percentile in microseconds, ``None`` without samples."""
    if not sorted_seconds:
        return None
    rank = max(1, math.ceil(percent / 100.0 * len(sorted_seconds)))
    return sorted_seconds[min(rank, len(sorted_seconds)) - 1] * 1e6


def loopback_address(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT``; refuse anything that is not a loopback address."""
    host, separator, port = text.rpartition(":")
    if not separator:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    if not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
        raise argparse.ArgumentTypeError(f"{host} is not a loopback address")
    return host, int(port)


def connect_all(address: tuple[str, int], count: int) -> list[socket.socket]:
    """Open ``count`` TCP connections with TCP_NODELAY, then make them non-blocking."""
    connections = []
    for _ in range(count):
        sock = socket.create_connection(address, timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        connections.append(sock)
    return connections


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Parse the command line (the options ``loadgen echo`` accepts for TCP)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("echo",))
    parser.add_argument("--addr", type=loopback_address, required=True, help="HOST:PORT")
    parser.add_argument("--conns", type=int, default=10, help="connections (default 10)")
    parser.add_argument("--size", type=int, default=1024, help="message bytes (default 1024)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before counting")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds counted")
    arguments = parser.parse_args(argv)
    if arguments.conns < 1 or arguments.size < 1:
        parser.error("--conns and --size must be at least 1")
    return arguments


def main(argv: list[str]) -> int:
    """Entry point; returns the exit status."""
    arguments = parse_arguments(argv)
    try:
        client = EchoClient(connect_all(arguments.addr, arguments.conns), arguments.size)
        try:
            result = client.run(arguments.warmup, arguments.duration)
        finally:
            client.close()
    except (OSError, TimeoutError) as error:
        print(f"echo_client: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
