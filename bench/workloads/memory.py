"""Memory footprint of idle connections.

``memory.idle_conns_5k``: the server runs in the worker on the loop under
test: ``loop.create_server`` (on a loopback socket the workload binds itself)
with an ``asyncio.Protocol`` that stores its transport and is kept in a set,
the way an application holds its connections.  A client process
(``bench/hold_client.py``, standard library) opens 5,000 TCP connections to it
and holds them idle: no byte is sent either way.

The client's pipes are unbuffered (``bufsize=0``), so that no pipe buffer of the harness
lands in the reading.  Measured: the server process's resident set (``VmRSS`` in
``/proc/self/status``) right before the client starts, with the server already
listening, and once all 5,000 connections have been accepted (counted in
``connection_made``); each reading follows ``SETTLE_S`` of the loop running
idle and a ``gc.collect()``.  Reported: the increase in MiB (lower is better):
the loop's transports and their registrations, the protocol objects, the
sockets' Python objects, and whatever the loop allocates per connection (read
buffers included).  Kernel socket memory is not in the RSS.  The JSON also
keeps bytes per connection, the baseline RSS, the peak (``VmHWM``) and how
long accepting took.

Both processes raise their RLIMIT_NOFILE soft limit to the hard limit; the
workload is unavailable when the hard limit is too low for 5,000 connections.
After the reading the server aborts its transports, then the client resets
its side of the connections and exits.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import Metric, Workload, WorkloadUnavailable, scaled
from .sock_echo import parse_client_output
from .transport_echo import require_methods

CONNECTIONS = 5_000
#: Descriptors needed on top of the connections (interpreter, listener, pipes).
SPARE_DESCRIPTORS = 256
#: Seconds the loop runs idle before each RSS reading.
SETTLE_S = 0.5
#: Seconds allowed for all connections to be accepted.
ACCEPT_TIMEOUT_S = 60.0
#: Seconds allowed for the connections to close, and the client to exit, at the end.
CLOSE_TIMEOUT_S = 10.0
POLL_S = 0.02
BACKLOG = 4096
HOLD_CLIENT = Path(__file__).resolve().parent.parent / "hold_client.py"

RSS_INCREASE = Metric("rss_increase_mib", "RSS increase", "MiB", higher_is_better=False)


class Connections:
    """The server's live protocols and its accept/close counts."""

    def __init__(self) -> None:
        """Start empty."""
        self.live: set[IdleProtocol] = set()
        self.made = 0
        self.lost = 0


class IdleProtocol(asyncio.Protocol):
    """Keeps its transport and registers itself; ignores data (none is sent)."""

    def __init__(self, connections: Connections) -> None:
        """Remember where to register."""
        self.connections = connections
        self.transport: Any = None

    def connection_made(self, transport) -> None:
        """Store the transport, register, count."""
        self.transport = transport
        self.connections.live.add(self)
        self.connections.made += 1

    def data_received(self, data: bytes) -> None:
        """Ignore data."""

    def connection_lost(self, exc: Exception | None) -> None:
        """Unregister and count."""
        self.connections.live.discard(self)
        self.connections.lost += 1
        self.transport = None


def read_status_kib(field: str) -> int:
    """Value of ``field`` (e.g. ``VmRSS``) in /proc/self/status, in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


async def settled_rss_kib() -> int:
    """Let the loop run idle for SETTLE_S, collect garbage, then read VmRSS."""
    await asyncio.sleep(SETTLE_S)
    gc.collect()
    return read_status_kib("VmRSS")


def file_limit_reason(count: int = CONNECTIONS) -> str | None:
    """Why ``count`` connections cannot be held here (None when the hard limit allows it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = count + SPARE_DESCRIPTORS
    if hard != resource.RLIM_INFINITY and hard < needed:
        return f"RLIMIT_NOFILE hard limit {hard} < {needed} (raise it: ulimit -Hn)"
    return None


def raise_file_limit(count: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit, or report the workload unavailable."""
    reason = file_limit_reason(count)
    if reason:
        raise WorkloadUnavailable(reason)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def wait_until(condition, timeout: float, client: subprocess.Popen | None = None) -> bool:
    """Poll ``condition()`` every POLL_S; False on timeout or when ``client`` exited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or (client is not None and client.poll() is not None):
            return False
        await asyncio.sleep(POLL_S)
    return True


async def hold_connections(loop, listener: socket.socket, count: int) -> dict[str, float]:
    """Serve on ``listener``; measure RSS before and after ``count`` idle connections."""
    connections = Connections()
    host, port = listener.getsockname()  # before create_server: some loops detach the socket
    server = await loop.create_server(
        lambda: IdleProtocol(connections), sock=listener, backlog=BACKLOG
    )
    client = None
    try:
        before = await settled_rss_kib()
        client = subprocess.Popen(
            [
                sys.executable,
                str(HOLD_CLIENT),
                "--addr",
                f"{host}:{port}",
                "--conns",
                str(count),
                "--connect-timeout",
                repr(ACCEPT_TIMEOUT_S),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Unbuffered pipe objects: the harness's own memory stays out of the reading.
            # Buffered, CPython 3.14 gives each of the three a 128 KiB buffer (3.12: 4 KiB):
            # 384 KiB of glibc heap; ferroloop's 3.14 row measured 3.20 -> 3.15 MiB without
            # them (bench/RESULTS.md, branch mem314).
            bufsize=0,
        )
        started = time.monotonic()
        if not await wait_until(lambda: connections.made >= count, ACCEPT_TIMEOUT_S, client):
            status = client.poll()
            stderr = b""
            if status is not None:
                stderr = client.communicate()[1]
            raise RuntimeError(
                f"only {connections.made} of {count} connections accepted "
                f"(client status {status}: {stderr.decode().strip()[-300:] or 'running'})"
            )
        accept_seconds = time.monotonic() - started
        after = await settled_rss_kib()
        peak = read_status_kib("VmHWM")
        held = len(connections.live)

        # The server closes first (abort: not every loop notices a peer's reset promptly),
        # then the client resets its side and exits.
        for protocol in list(connections.live):
            protocol.transport.abort()
        await wait_until(lambda: not connections.live, CLOSE_TIMEOUT_S)
        client.stdin.close()
        client.stdin = None  # so communicate() does not flush the closed pipe
        await wait_until(lambda: client.poll() is not None, CLOSE_TIMEOUT_S)
    finally:
        server.close()
        for protocol in list(connections.live):
            if protocol.transport is not None:
                protocol.transport.abort()
        if client is not None and client.poll() is None:
            client.kill()
    stdout, stderr = client.communicate()
    if client.returncode != 0:
        raise RuntimeError(f"hold_client.py exited with {client.returncode}: {stderr.decode()}")
    client_result = parse_client_output(stdout.decode())
    return {
        "rss_increase_mib": (after - before) / 1024,
        "bytes_per_connection": (after - before) * 1024 / count,
        "baseline_rss_mib": before / 1024,
        "rss_mib": after / 1024,
        "peak_rss_mib": peak / 1024,
        "connections": float(count),
        "held": float(held),
        "accept_s": accept_seconds,
        "client_connect_s": float(client_result.get("connect_s", float("nan"))),
        "closed_seen": float(connections.lost),
    }


def measure_idle_connections(loop, scale: float) -> dict[str, float]:
    """Hold ``CONNECTIONS`` (scaled) idle connections; return the server's RSS increase."""
    require_methods(loop, "tcp")
    count = scaled(CONNECTIONS, scale, minimum=50)
    raise_file_limit(count)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(BACKLOG)
        listener.setblocking(False)
        try:
            return loop.run_until_complete(hold_connections(loop, listener, count))
        except NotImplementedError as error:
            raise WorkloadUnavailable(f"NotImplementedError: {error}") from error


WORKLOADS = [
    Workload(
        name="memory.idle_conns_5k",
        description=(
            f"server RSS increase holding {CONNECTIONS:,} idle TCP connections "
            "(create_server + asyncio.Protocol keeping its transport)"
        ),
        metrics=(RSS_INCREASE,),
        run=measure_idle_connections,
        unavailable_reason=file_limit_reason,
        cpu_bound=False,
        timing_sensitive=False,
    )
]
