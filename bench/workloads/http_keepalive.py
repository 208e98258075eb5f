r"""A minimal HTTP/1.1 keep-alive server on ``asyncio.Protocol``, loaded by ``wrk``.

``http.keepalive``: the server runs in the worker on the loop under test
(``loop.create_server`` on a loopback socket the workload binds itself).  Its
protocol splits the byte stream on ``\r\n\r\n``, checks the request line
(``METHOD TARGET HTTP/1.x``), and answers every request with the same small
``200 OK`` with ``Content-Length``; the connection stays open (HTTP/1.1
default) unless the request says ``Connection: close`` or is HTTP/1.0 without
``Connection: keep-alive``.  Pipelined requests are answered with one
``transport.write``.  Requests with a body are not supported (wrk sends
``GET``); a malformed request line gets a 400 and the connection is closed.

Load: ``wrk -t1 -c50 -d<N>s --latency`` (one wrk thread, so that on 2 cores
the server keeps a core to itself) in another process.  wrk has no warm-up of
its own, so the server times a window inside the wrk run, as ``sock_echo``
does: from ``WARMUP_S`` after the 50th connection arrived, for ``WINDOW_S``
seconds (``loop.call_later``), reading ``getrusage(RUSAGE_SELF)`` and its count
of answered requests at both ends.  Reported: requests/s as wrk prints it
(``Requests/sec``, over wrk's whole run) and server CPU µs/request (user +
system CPU in the window / requests answered in the window).  The JSON keeps
the server's own requests/s over the window, wrk's latency p50/p99, non-2xx
responses and socket errors.

The workload is unavailable when ``wrk`` is not on PATH (Debian: ``apt-get
install wrk``).
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import socket
import subprocess
from typing import Any

from . import Workload, WorkloadUnavailable
from .sock_echo import REQUEST_RATE, SERVER_CPU, ByteCounter, client_process, window_metrics
from .transport_echo import WindowClock, require_methods, set_nodelay, wait_for_exit

CONNECTIONS = 50
WRK_THREADS = 1
WARMUP_S = 1.0
WINDOW_S = 3.0
#: wrk keeps running at least this long past the server's window (its -d is whole seconds).
WRK_TAIL_S = 0.5
#: Seconds the server waits for all of wrk's connections.
CONNECT_TIMEOUT_S = 10.0
#: Extra seconds on top of wrk's duration before the server gives up.
SERVER_GRACE_S = 30.0
#: A request head longer than this without its blank line closes the connection.
MAX_HEAD_BYTES = 64 * 1024
BACKLOG = 1024

BODY = b"Hello, World!"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 server protocol: a fixed 200 response to every bodiless request."""

    def __init__(self, clock: WindowClock) -> None:
        """Count the answered requests in ``clock.counter`` (its ``echoed`` attribute)."""
        self.clock = clock
        self.counter = clock.counter
        self.transport: Any = None
        self.buffer = b""

    def connection_made(self, transport) -> None:
        """Keep the transport and count the client."""
        self.transport = transport
        set_nodelay(transport)
        self.clock.client_arrived()

    def data_received(self, data: bytes) -> None:
        """Answer every complete request head in the buffer; keep the rest."""
        buffer = self.buffer + data if self.buffer else data
        answered, start, close = parse_requests(buffer)
        self.buffer = buffer[start:]
        if answered:
            self.transport.write(RESPONSE if answered == 1 else RESPONSE * answered)
            self.counter.echoed += answered
        if close is None and len(self.buffer) > MAX_HEAD_BYTES:
            close = BAD_REQUEST
        if close is not None:
            if close:
                self.transport.write(close)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the transport."""
        self.transport = None


def parse_requests(buffer: bytes) -> tuple[int, int, bytes | None]:
    """Parse the complete request heads at the start of ``buffer``.

    Returns ``(requests to answer with RESPONSE, offset of the unparsed rest,
    close)``, where ``close`` is None to keep the connection open, ``b""`` to
    close it after the responses, or ``BAD_REQUEST`` to send that, then close.
    """
    answered = 0
    start = 0
    while True:
        end = buffer.find(b"\r\n\r\n", start)
        if end < 0:
            return answered, start, None
        line_end = buffer.find(b"\r\n", start, end + 2)
        parts = buffer[start:line_end].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return answered, end + 4, BAD_REQUEST
        headers = buffer[line_end:end].lower()
        start = end + 4
        answered += 1
        if parts[2] == b"HTTP/1.0":
            if b"\r\nconnection: keep-alive" not in headers:
                return answered, start, b""
        elif b"\r\nconnection: close" in headers:
            return answered, start, b""


def wrk_unavailable_reason() -> str | None:
    """Why the workload cannot run here (None when ``wrk`` is on PATH)."""
    if shutil.which("wrk") is None:
        return "wrk not found on PATH (Debian: apt-get install wrk)"
    return None


_DURATION_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def parse_wrk_output(text: str) -> dict[str, float]:
    """Pick requests/s, request count, latency p50/p99, non-2xx and socket errors from wrk."""
    result: dict[str, float] = {}
    match = re.search(r"Requests/sec:\s*([\d.]+)", text)
    if match:
        result["requests_per_s"] = float(match.group(1))
    match = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text)
    if match:
        result["requests"] = float(match.group(1))
        result["duration_s"] = float(match.group(2)) * _DURATION_UNITS_US[match.group(3)] / 1e6
    for percent in ("50", "99"):
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
        if match:
            value = float(match.group(1)) * _DURATION_UNITS_US[match.group(2)]
            result[f"latency_p{percent}_us"] = value
    match = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    result["non_2xx"] = float(match.group(1)) if match else 0.0
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = [float(value) for value in match.groups()] if match else [0.0] * 4
    for name, value in zip(("connect", "read", "write", "timeout"), errors, strict=True):
        result[f"socket_errors_{name}"] = value
    return result


def run_server(
    loop, listener: socket.socket, wrk: subprocess.Popen, clock: WindowClock, deadline: float
) -> None:
    """Serve on ``listener`` until wrk exits; fail if its connections do not all arrive."""

    async def serve() -> None:
        server = await loop.create_server(
            lambda: HttpProtocol(clock), sock=listener, backlog=BACKLOG
        )
        try:
            await wait_for_exit(wrk)
        finally:
            server.close()

    async def main() -> None:
        task = loop.create_task(serve())
        done, _ = await asyncio.wait(
            [task, clock.all_arrived],
            timeout=CONNECT_TIMEOUT_S,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if task in done:
            task.result()  # raises the server's error
        if not clock.all_arrived.done():
            task.cancel()
            raise TimeoutError(f"only {clock.clients} of {CONNECTIONS} wrk connections arrived")
        await task

    loop.run_until_complete(asyncio.wait_for(main(), deadline))


def measure_http(loop, scale: float) -> dict[str, float]:
    """Serve wrk's keep-alive load; return wrk's requests/s and server CPU per request."""
    wrk_path = shutil.which("wrk")
    if wrk_path is None:
        raise WorkloadUnavailable(wrk_unavailable_reason())
    require_methods(loop, "tcp")
    warmup = max(0.05, WARMUP_S * scale)
    window = max(0.1, WINDOW_S * scale)
    # wrk connects first, then the server waits `warmup`: whole seconds covering both and a tail.
    duration = math.ceil(warmup + window + WRK_TAIL_S)
    clock = WindowClock(loop, ByteCounter(), warmup, window, expected_clients=CONNECTIONS)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(BACKLOG)
        listener.setblocking(False)
        host, port = listener.getsockname()
        command = [
            wrk_path,
            f"-t{WRK_THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{duration}s",
            "--latency",
            f"http://{host}:{port}/",
        ]
        with client_process(command, "wrk") as wrk:
            run_server(loop, listener, wrk, clock, duration + SERVER_GRACE_S)
            stdout, stderr = wrk.communicate(timeout=SERVER_GRACE_S)
    wrk_result = parse_wrk_output(stdout)
    if wrk.returncode != 0 or "requests_per_s" not in wrk_result:
        raise RuntimeError(f"wrk exited with {wrk.returncode}: {(stdout + stderr).strip()[-300:]}")
    if wrk_result["non_2xx"]:
        raise RuntimeError(f"wrk saw {wrk_result['non_2xx']:.0f} non-2xx responses")
    start, stop = clock.marks.get("start"), clock.marks.get("stop")
    if start is None or stop is None:
        raise RuntimeError("wrk ended before the server's measured window closed")

    seconds = stop.time - start.time
    requests = stop.echoed - start.echoed
    if requests <= 0:
        raise RuntimeError(f"no request answered in the measured window ({seconds:.3f} s)")
    result = {
        "requests_per_s": wrk_result["requests_per_s"],
        "server_requests_per_s": requests / seconds,
        **window_metrics(start, stop, requests),
        "wrk_duration_s": float(duration),
    }
    for key, value in wrk_result.items():
        if key != "requests_per_s":
            result[f"wrk_{key}"] = value
    return result


WORKLOADS = [
    Workload(
        name="http.keepalive",
        description=(
            f"HTTP/1.1 keep-alive server on asyncio.Protocol (fixed 200 response), "
            f"wrk -t{WRK_THREADS} -c{CONNECTIONS}"
        ),
        metrics=(REQUEST_RATE, SERVER_CPU),
        run=measure_http,
        unavailable_reason=wrk_unavailable_reason,
        cpu_bound=False,
    )
]
