"""TCP echo server on the low-level socket API (uvloop's vmbench "sockets" flavour).

The server runs in the worker on the loop under test, written the way vmbench's
``asyncioecho.py`` writes it: a listening socket, ``await loop.sock_accept``,
and one task per connection doing ``data = await loop.sock_recv(conn, 102400)``
then ``await loop.sock_sendall(conn, data)`` until EOF.  Unlike vmbench, the
server really sets TCP_NODELAY on accepted sockets (vmbench's
``sock.setsockopt`` names the wrong variable, and the NameError it swallows
leaves Nagle's algorithm on for the server's sends).

The client is a separate process on loopback: ``bench/echo_client.py``
(standard library, epoll, one thread) or, when ``$BENCH_LOADGEN`` names it, the
compiled ``loadgen echo`` client (same options and output).  It opens
``CONNECTIONS`` connections and plays ping-pong on each: one message of the
case's size, wait for the whole echo, send the next.

Measured window: from ``WARMUP_S`` after the last connection was accepted, for
``WINDOW_S`` seconds, timed by the server itself with ``loop.call_later``.  At
both ends it reads ``getrusage(RUSAGE_SELF)`` — the worker process *is* the
server, the client runs elsewhere — and the number of bytes echoed so far.
Reported: requests/s (bytes echoed in the window / message size / window
seconds) and server CPU µs per request (user + system CPU in the window /
requests).  The client keeps the load on past the window, then closes.  The
marks are timer callbacks, so they can run late when the echo tasks do not
yield (``sock_recv`` returns without suspending when data is already queued);
both marks read the clock and the counters when they actually run, so the
rates stay right, over a slightly shifted window.

A loop that does not implement ``sock_accept``/``sock_recv``/``sock_sendall``
(the ``AbstractEventLoop`` stub, or a ``NotImplementedError`` at run time) is
reported unavailable for these cases.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import Metric, Workload, WorkloadUnavailable
from ._common import require_loop_methods

CONNECTIONS = 10
MESSAGE_SIZES = {"1k": 1024, "10k": 10 * 1024, "100k": 100 * 1024}
#: vmbench's ``sock_recv`` size.
RECV_BYTES = 102_400
WARMUP_S = 0.5
WINDOW_S = 2.0
#: The client keeps sending this long past the server's window (its clock
#: starts slightly earlier than the server's: when its connects return).
CLIENT_TAIL_S = 0.3
#: Seconds the server waits for each client connection (a client that failed
#: to start is reported this long after the start, not at the deadline).
ACCEPT_TIMEOUT_S = 10.0
#: Extra seconds on top of warm-up + window before the server gives up.
SERVER_GRACE_S = 30.0
REQUIRED_METHODS = ("sock_accept", "sock_recv", "sock_sendall")
#: Names the compiled client (run.py's ``--loadgen`` sets it for the workers).
LOADGEN_ENVIRONMENT_VARIABLE = "BENCH_LOADGEN"
CLIENT_RESULT_PREFIX = "@@CLIENT "
PYTHON_CLIENT = Path(__file__).resolve().parent.parent / "echo_client.py"
#: Keys of the client's result line kept in the JSON, and their names there.
CLIENT_KEYS = {
    "rps": "client_requests_per_s",
    "lat_p50_us": "client_latency_p50_us",
    "lat_p99_us": "client_latency_p99_us",
    "client_cpu_pct": "client_cpu_pct",
}

REQUEST_RATE = Metric("requests_per_s", "requests/s", "", higher_is_better=True)
SERVER_CPU = Metric("server_cpu_us_per_request", "server CPU/request", "µs", higher_is_better=False)


class ByteCounter:
    """Bytes echoed by all connections (a plain attribute: cheap to bump)."""

    __slots__ = ("echoed",)

    def __init__(self) -> None:
        """Start at zero."""
        self.echoed = 0


@dataclass
class Mark:
    """Server-side readings at one end of the measured window."""

    time: float
    user_cpu: float
    system_cpu: float
    minor_faults: int
    echoed: int

    @classmethod
    def now(cls, counter: ByteCounter) -> Mark:
        """Read the clock, this process's CPU times and page faults, and the echoed bytes."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            time.perf_counter(), usage.ru_utime, usage.ru_stime, usage.ru_minflt, counter.echoed
        )


def require_socket_methods(loop) -> None:
    """Raise WorkloadUnavailable if the loop leaves a required method to the abstract stub."""
    require_loop_methods(loop, REQUIRED_METHODS)


async def echo_connection(loop, connection: socket.socket, counter: ByteCounter) -> None:
    """Echo everything received on ``connection`` until the client closes it."""
    with connection:
        try:
            while True:
                data = await loop.sock_recv(connection, RECV_BYTES)
                if not data:
                    break
                await loop.sock_sendall(connection, data)
                counter.echoed += len(data)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the client closed with an echo still in flight: the run is over


async def serve(
    loop, listener: socket.socket, warmup: float, window: float
) -> tuple[Mark | None, Mark | None]:
    """Accept CONNECTIONS clients, echo until they leave; return the window's end marks."""
    counter = ByteCounter()
    marks: dict[str, Mark] = {}
    tasks = []
    try:
        for _ in range(CONNECTIONS):
            connection, _ = await asyncio.wait_for(loop.sock_accept(listener), ACCEPT_TIMEOUT_S)
            connection.setblocking(False)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tasks.append(loop.create_task(echo_connection(loop, connection, counter)))
        loop.call_later(warmup, lambda: marks.setdefault("start", Mark.now(counter)))
        loop.call_later(warmup + window, lambda: marks.setdefault("stop", Mark.now(counter)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return marks.get("start"), marks.get("stop")


async def round_trip_check(loop) -> None:
    """One sock_sendall/sock_recv over a socket pair: fails fast on a stubbed loop."""
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        right.setblocking(False)
        await loop.sock_sendall(left, b"ping")
        received = b""
        while len(received) < 4:
            received += await loop.sock_recv(right, 4)


def load_options(connections: int, size: int, warmup: float, duration: float) -> list[str]:
    """Return the load generator's options every echo workload passes after the address."""
    return [
        "--conns",
        str(connections),
        "--size",
        str(size),
        "--warmup",
        repr(warmup),
        "--duration",
        repr(duration),
    ]


def load_generator(options: list[str], loadgen_allowed: bool = True) -> tuple[str, list[str]]:
    """Return (name, command line) of the load generator run with ``options``.

    That is $BENCH_LOADGEN if it is set and ``loadgen_allowed``, else echo_client.py.
    """
    loadgen = os.environ.get(LOADGEN_ENVIRONMENT_VARIABLE)
    if loadgen and loadgen_allowed:
        return "loadgen", [loadgen, *options]
    return "echo_client.py", [sys.executable, str(PYTHON_CLIENT), *options]


def client_command(
    address: tuple[str, int], size: int, warmup: float, duration: float
) -> tuple[str, list[str]]:
    """Command line of the load generator: $BENCH_LOADGEN if set, else echo_client.py."""
    options = ["echo", "--addr", f"{address[0]}:{address[1]}"]
    return load_generator(options + load_options(CONNECTIONS, size, warmup, duration))


def parse_client_output(stdout: str) -> dict[str, Any]:
    """Return the client's ``@@CLIENT`` JSON object ({} if it printed none)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(CLIENT_RESULT_PREFIX):
            return json.loads(line[len(CLIENT_RESULT_PREFIX) :])
    return {}


@contextmanager
def client_process(command: list[str], name: str) -> Iterator[subprocess.Popen]:
    """Run the load generator ``command`` (called ``name`` in errors) around the server.

    A loop that leaves a needed method abstract makes the workload unavailable; a server
    that times out reports what the client printed; the client never outlives the block.
    """
    client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield client
    except NotImplementedError as error:
        raise WorkloadUnavailable(f"NotImplementedError: {error}") from error
    except TimeoutError as error:
        client.kill()
        stderr = client.communicate()[1].strip() or "no output"
        raise RuntimeError(f"server timed out ({error}); {name}: {stderr}") from error
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


def window_metrics(start: Mark, stop: Mark, requests: float) -> dict[str, float]:
    """Return the server's CPU figures over the measured window, ``requests`` requests served."""
    seconds = stop.time - start.time
    user_cpu = stop.user_cpu - start.user_cpu
    system_cpu = stop.system_cpu - start.system_cpu
    cpu = user_cpu + system_cpu
    return {
        "server_cpu_us_per_request": cpu / requests * 1e6,
        "server_cpu_pct": 100.0 * cpu / seconds,
        "server_user_cpu_us_per_request": user_cpu / requests * 1e6,
        "server_system_cpu_us_per_request": system_cpu / requests * 1e6,
        "server_page_faults_per_request": (stop.minor_faults - start.minor_faults) / requests,
        "window_s": seconds,
        "requests": float(requests),
    }


def echo_metrics(
    start: Mark | None,
    stop: Mark | None,
    size: int,
    client_name: str,
    client_stdout: str,
    client_keys: dict[str, str],
) -> dict[str, float]:
    """Return rate and CPU per request of an echo server, plus the client's own figures.

    ``start``/``stop`` counted echoed bytes of ``size``-byte requests; ``client_keys`` maps
    keys of the client's result line to their names here.
    """
    if start is None or stop is None:
        raise RuntimeError(f"{client_name} ended before the server's measured window closed")
    seconds = stop.time - start.time
    requests = (stop.echoed - start.echoed) / size
    if requests <= 0:
        raise RuntimeError(
            f"no request completed in the measured window ({seconds:.3f} s; "
            f"{start.echoed} bytes echoed before it)"
        )
    result = {
        "requests_per_s": requests / seconds,
        "mb_per_s": (stop.echoed - start.echoed) / seconds / 1e6,
        **window_metrics(start, stop, requests),
        "client_is_loadgen": float(client_name == "loadgen"),
    }
    # The client's own view, over its (slightly longer) window: a cross-check, and
    # client_cpu_pct near 100 says the client, not the server, capped requests/s.
    client_result = parse_client_output(client_stdout)
    for client_key, key in client_keys.items():
        if isinstance(client_result.get(client_key), int | float):
            result[key] = float(client_result[client_key])
    return result


def measure_echo(loop, scale: float, size: int) -> dict[str, float]:
    """Run the echo server against one client run; return rate and CPU per request."""
    require_socket_methods(loop)
    warmup = max(0.05, WARMUP_S * scale)
    window = max(0.1, WINDOW_S * scale)
    deadline = warmup + window + SERVER_GRACE_S
    try:
        loop.run_until_complete(asyncio.wait_for(round_trip_check(loop), 10.0))
    except NotImplementedError as error:
        raise WorkloadUnavailable(f"NotImplementedError: {error}") from error

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(CONNECTIONS)
        listener.setblocking(False)
        client_name, command = client_command(
            listener.getsockname(), size, warmup, window + CLIENT_TAIL_S
        )
        with client_process(command, client_name) as client:
            start, stop = loop.run_until_complete(
                asyncio.wait_for(serve(loop, listener, warmup, window), deadline)
            )
            stdout, stderr = client.communicate(timeout=SERVER_GRACE_S)
    if client.returncode != 0:
        raise RuntimeError(f"{client_name} exited with {client.returncode}: {stderr.strip()}")
    return echo_metrics(start, stop, size, client_name, stdout, CLIENT_KEYS)


def make_workload(case: str, size: int) -> Workload:
    """Build the ``sock_echo.<case>`` workload for ``size``-byte messages."""
    return Workload(
        name=f"sock_echo.{case}",
        description=(
            f"sock_accept/sock_recv/sock_sendall echo server, {CONNECTIONS} connections, "
            f"{size} B ping-pong (client: another process)"
        ),
        metrics=(REQUEST_RATE, SERVER_CPU),
        run=lambda loop, scale: measure_echo(loop, scale, size),
        cpu_bound=False,
    )


WORKLOADS = [make_workload(case, size) for case, size in MESSAGE_SIZES.items()]
