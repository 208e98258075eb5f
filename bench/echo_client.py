r"""Echo load generator for the echo workloads (standard library only).

``echo`` mode opens ``--conns`` stream connections to a loopback echo server
(TCP, or a Unix socket with ``--family unix --addr PATH``) and, on each one,
plays ping-pong: send one ``--size``-byte message, wait until exactly
``--size`` bytes have come back, send the next.  One process, one thread,
non-blocking sockets multiplexed with :mod:`selectors` (epoll on Linux), no
asyncio — so the client is the same whatever loop the server runs.

With ``--tls-ca CAFILE`` (``echo`` mode over TCP) every connection speaks TLS
with the standard library's :mod:`ssl`: a default client context that trusts
CAFILE and checks the certificate's host name (``--tls-server-name``, default
``localhost``); each connection's handshake is done, blocking, before the
ping-pong starts, then the ``ssl`` sockets are made non-blocking and
multiplexed the same way.  (The compiled ``loadgen`` has no TLS.)

``udp`` mode opens ``--conns`` connected UDP sockets to a loopback datagram
echo server and keeps one ``--size``-byte datagram in flight on each; the
datagram starts with a sequence number (8 bytes, big-endian), and an echo
counts only when it carries the number last sent on that socket.  A datagram
unanswered after ``--udp-timeout`` seconds is counted in ``lost`` and replaced
by the next number (as ``loadgen udp`` does).

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
    python3 bench/echo_client.py echo --family unix --addr /tmp/echo.sock --conns 20
    python3 bench/echo_client.py echo --addr 127.0.0.1:PORT --tls-ca ca.pem --size 65536
    python3 bench/echo_client.py udp --addr 127.0.0.1:PORT --conns 20 --size 1024
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import math
import resource
import selectors
import socket
import ssl
import struct
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

#: UDP: the sequence number at the start of every datagram.
SEQUENCE = struct.Struct("!Q")

#: UDP: at most this many datagrams are read from one socket per readiness event.
UDP_READS_PER_EVENT = 1024


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


class TlsEchoClient(EchoClient):
    """:class:`EchoClient` over non-blocking ``ssl`` sockets.

    An ``SSLSocket.send`` either takes the whole message (the retry after
    ``SSLWantWriteError`` must pass the same bytes, which ``send_more`` does) or
    raises; ``recv`` returns at most one TLS record (16 KiB), so ``receive``
    reads until the echo is complete or the socket has nothing more, instead of
    waiting for the selector between the records of one echo.
    """

    def __init__(self, connections: list[socket.socket], size: int) -> None:
        """As :class:`EchoClient`; also tracks the sockets waiting to be writable."""
        super().__init__(connections, size)
        self.waiting_to_write: set[Connection] = set()

    def send_more(self, connection: Connection) -> None:
        """Send the message; on ``SSLWantWriteError`` wait for the socket to be writable."""
        try:
            connection.bytes_sent += connection.sock.send(self.payload[connection.bytes_sent :])
        except ssl.SSLWantWriteError:
            if connection not in self.waiting_to_write:
                self.waiting_to_write.add(connection)
                self.selector.modify(
                    connection.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, connection
                )
            return
        if connection in self.waiting_to_write:
            self.waiting_to_write.discard(connection)
            self.selector.modify(connection.sock, selectors.EVENT_READ, connection)

    def receive(self, connection: Connection, now: float) -> None:
        """Read records until the echo is complete (count it, send the next) or none is left."""
        sock = connection.sock
        while True:
            try:
                data = sock.recv(RECV_CHUNK)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            if not data:
                raise ConnectionError("the server closed a connection during the run")
            connection.bytes_received += len(data)
            if connection.bytes_received >= self.size:
                break
        if connection.bytes_received > connection.bytes_sent:
            raise ConnectionError(
                f"echo longer than what was sent ({connection.bytes_received} > "
                f"{connection.bytes_sent} bytes)"
            )
        self.total_requests += 1
        if self.counting:
            self.window_requests += 1
            self.latencies.append(now - connection.message_started)
        self.start_message(connection, now)


class DatagramSocket:
    """One connected UDP socket with one datagram in flight."""

    __slots__ = ("sent_at", "sequence", "sock")

    def __init__(self, sock: socket.socket) -> None:
        """Wrap a connected non-blocking UDP socket; nothing is in flight yet."""
        self.sock = sock
        self.sequence = -1
        self.sent_at = 0.0


class DatagramClient:
    """Keeps one numbered datagram in flight per socket and counts matching echoes."""

    def __init__(self, sockets: list[socket.socket], size: int, timeout: float) -> None:
        """Set up the selector for connected UDP sockets and ``size``-byte datagrams."""
        self.size = size
        self.timeout = timeout
        self.datagram = bytearray(b"\x5a" * size)
        self.next_sequence = 0
        self.selector = selectors.DefaultSelector()
        self.sockets = [DatagramSocket(sock) for sock in sockets]
        self.counting = False
        self.window_requests = 0
        self.total_requests = 0
        self.lost = 0
        self.latencies: list[float] = []
        for entry in self.sockets:
            self.selector.register(entry.sock, selectors.EVENT_READ, entry)

    def send_next(self, entry: DatagramSocket, now: float) -> None:
        """Send the next numbered datagram on ``entry``."""
        entry.sequence = self.next_sequence
        entry.sent_at = now
        self.next_sequence += 1
        SEQUENCE.pack_into(self.datagram, 0, entry.sequence)
        # A full socket buffer drops the datagram: it counts as lost after the timeout.
        with contextlib.suppress(BlockingIOError):
            entry.sock.send(self.datagram)

    def receive(self, entry: DatagramSocket, now: float) -> None:
        """Read the echoes queued on ``entry``; on the expected one, count it and send on."""
        for _ in range(UDP_READS_PER_EVENT):
            try:
                data = entry.sock.recv(RECV_CHUNK)
            except BlockingIOError:
                return
            except ConnectionRefusedError as error:
                raise ConnectionError("UDP server unreachable (ICMP refused)") from error
            if len(data) != self.size:
                raise ConnectionError(f"echoed datagram of {len(data)} bytes, sent {self.size}")
            if SEQUENCE.unpack_from(data)[0] != entry.sequence:
                continue  # a late echo of a datagram already counted as lost
            self.total_requests += 1
            if self.counting:
                self.window_requests += 1
                self.latencies.append(now - entry.sent_at)
            self.send_next(entry, now)

    def run(self, warmup: float, duration: float) -> dict[str, Any]:
        """Run warm-up and measured window; return the result dictionary."""
        started = time.perf_counter()
        window_start = started + warmup
        window_end = window_start + duration
        cpu_at_window_start = 0.0
        last_progress = started
        last_loss_check = started
        for entry in self.sockets:
            self.send_next(entry, started)
        now = started
        while now < window_end:
            events = self.selector.select(POLL_SECONDS)
            now = time.perf_counter()
            if not self.counting and now >= window_start:
                self.counting = True
                window_start = now
                window_end = window_start + duration
                cpu_at_window_start = cpu_seconds()
            if events:
                last_progress = now
                for key, _ in events:
                    self.receive(key.data, now)
            elif now - last_progress > STALL_SECONDS:
                raise TimeoutError(f"no progress for {STALL_SECONDS:g} s")
            if now - last_loss_check > POLL_SECONDS:
                last_loss_check = now
                for entry in self.sockets:
                    if now - entry.sent_at > self.timeout:
                        self.lost += 1
                        self.send_next(entry, now)
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
            "lost": self.lost,
        }

    def close(self) -> None:
        """Close every socket and the selector."""
        for entry in self.sockets:
            self.selector.unregister(entry.sock)
            entry.sock.close()
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


def connect_all(address: tuple[str, int] | str, count: int) -> list[socket.socket]:
    """Open ``count`` stream connections, then make them non-blocking.

    ``address`` is ``(host, port)`` for TCP (the connections get TCP_NODELAY)
    or a path for a Unix socket.
    """
    connections = []
    for _ in range(count):
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(address)
        else:
            sock = socket.create_connection(address, timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        connections.append(sock)
    return connections


def tls_wrap_all(
    connections: list[socket.socket], cafile: str, server_name: str
) -> list[socket.socket]:
    """Do every connection's TLS handshake (blocking); return non-blocking ``ssl`` sockets."""
    context = ssl.create_default_context(cafile=cafile)
    wrapped = []
    try:
        for sock in connections:
            sock.setblocking(True)
            sock.settimeout(10)
            wrapped.append(context.wrap_socket(sock, server_hostname=server_name))
            wrapped[-1].setblocking(False)
    except BaseException:
        for sock in connections[len(wrapped) :]:
            sock.close()
        for sock in wrapped:
            sock.close()
        raise
    return wrapped


def open_datagram_sockets(address: tuple[str, int], count: int) -> list[socket.socket]:
    """Open ``count`` non-blocking UDP sockets connected to ``address``."""
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(address)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Parse the command line (the options ``loadgen echo`` accepts for TCP)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("echo", "udp"))
    parser.add_argument("--addr", required=True, help="HOST:PORT, or a path with --family unix")
    parser.add_argument(
        "--family", choices=("tcp", "unix"), default="tcp", help="echo mode: stream family"
    )
    parser.add_argument(
        "--udp-timeout",
        type=float,
        default=0.5,
        help="udp mode: seconds before an unanswered datagram counts as lost (default 0.5)",
    )
    parser.add_argument(
        "--tls-ca",
        metavar="CAFILE",
        help="echo mode over TCP: speak TLS, verifying the server's certificate with CAFILE",
    )
    parser.add_argument(
        "--tls-server-name",
        default="localhost",
        help="with --tls-ca: the host name the certificate must be for (default localhost)",
    )
    parser.add_argument("--conns", type=int, default=10, help="connections (default 10)")
    parser.add_argument("--size", type=int, default=1024, help="message bytes (default 1024)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before counting")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds counted")
    arguments = parser.parse_args(argv)
    if arguments.conns < 1 or arguments.size < 1:
        parser.error("--conns and --size must be at least 1")
    if arguments.family == "unix":
        if arguments.mode == "udp":
            parser.error("udp mode takes HOST:PORT only")
    else:
        try:
            arguments.addr = loopback_address(arguments.addr)
        except (argparse.ArgumentTypeError, ValueError, OSError) as error:
            parser.error(f"--addr: {error}")
    if arguments.tls_ca is not None and (arguments.mode != "echo" or arguments.family != "tcp"):
        parser.error("--tls-ca is for echo mode over TCP only")
    if arguments.mode == "udp" and arguments.size < SEQUENCE.size:
        parser.error(f"udp mode needs --size of at least {SEQUENCE.size}")
    return arguments


def main(argv: list[str]) -> int:
    """Entry point; returns the exit status."""
    arguments = parse_arguments(argv)
    try:
        if arguments.mode == "udp":
            client: EchoClient | DatagramClient = DatagramClient(
                open_datagram_sockets(arguments.addr, arguments.conns),
                arguments.size,
                arguments.udp_timeout,
            )
        elif arguments.tls_ca is not None:
            client = TlsEchoClient(
                tls_wrap_all(
                    connect_all(arguments.addr, arguments.conns),
                    arguments.tls_ca,
                    arguments.tls_server_name,
                ),
                arguments.size,
            )
        else:
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
