"""Real database clients on the loop under test: asyncpg against PostgreSQL, redis-py against Redis.

* ``services.asyncpg_select1`` — ``CONNECTIONS`` asyncpg connections, each a task that runs
  ``await conn.fetchval("SELECT 1")`` back to back (one round trip to the server each).
* ``services.redis_getset`` — ``CONNECTIONS`` redis-py asyncio clients (one connection each),
  each a task that alternates ``await r.set(key, value)`` and ``await r.get(key)`` (one round
  trip each; a GET/SET pair counts as two).

The servers are real ones from Debian's packages (``postgresql``, ``redis-server``), started once
per run by ``bench/run.py`` with ``scripts/downstream_services.py`` (the helper the downstream
suites use: PostgreSQL as its own ``postgres`` user in a temporary cluster on a free loopback
port, Redis on another) and reached through what that helper exports (``PGHOST``/``PGPORT``/
``PGUSER``, ``FERROLOOP_REDIS_URL``).  The worker process is the *client*: the servers run in
other processes on the same 2 cores, so the round-trip rate is bounded by them too.

The timed window (``WINDOW_S`` after ``WARMUP_S`` of load) is marked by timer callbacks that read
``getrusage(RUSAGE_SELF)`` and the count of completed round trips.  Reported: round trips/s over
the window and the client's CPU µs per round trip (user + system CPU of the worker in the window /
round trips).  The second is the loop's share: the client library's own Python code (asyncpg's
protocol is Cython; redis-py's parser is pure Python) costs the same on every loop.

The run-queue disturbance check is off for these two (``timing_sensitive=False``): the servers
are other processes on the same cores, so the client always waits for a CPU now and then; that is
part of what is measured, alike for every loop (the repetitions are interleaved).

Unavailable when the client library is not installed in the worker's Python (``pip install
asyncpg redis``, see ``bench/requirements.txt``) or when the run did not start the server.
"""

from __future__ import annotations

import asyncio
import glob
import importlib
import os
import resource
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import Metric, Workload, WorkloadUnavailable

#: Concurrent client connections (each one task with one request in flight).
CONNECTIONS = 8
WARMUP_S = 0.5
WINDOW_S = 2.0

ROUND_TRIPS = Metric("round_trips_per_s", "round trips/s", "", higher_is_better=True)
CLIENT_CPU = Metric(
    "client_cpu_us_per_request", "client CPU/round trip", "µs", higher_is_better=False
)


class Counter:
    """Round trips completed by all clients (a plain attribute: cheap to bump)."""

    __slots__ = ("done", "stop")

    def __init__(self) -> None:
        """Start at zero, running."""
        self.done = 0
        self.stop = False


@dataclass
class Mark:
    """Client readings at one end of the measured window."""

    time: float
    cpu: float
    done: int

    @classmethod
    def now(cls, counter: Counter) -> Mark:
        """Read the clock, this process's CPU time and the round trips so far."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(time.perf_counter(), usage.ru_utime + usage.ru_stime, counter.done)


async def drive(
    clients: list[Callable[[Counter], Awaitable[None]]], scale: float
) -> dict[str, float]:
    """Run every client until the window is over; return the window's figures."""
    loop = asyncio.get_running_loop()
    counter = Counter()
    marks: list[Mark] = []
    warmup = WARMUP_S * max(scale, 0.1)
    window = WINDOW_S * max(scale, 0.1)
    loop.call_later(warmup, lambda: marks.append(Mark.now(counter)))
    loop.call_later(warmup + window, lambda: marks.append(Mark.now(counter)))
    tasks = [asyncio.ensure_future(client(counter)) for client in clients]
    await asyncio.sleep(warmup + window)
    while len(marks) < 2:  # the end mark is a timer: let it run
        await asyncio.sleep(0.01)
    counter.stop = True
    await asyncio.gather(*tasks)
    start, stop = marks
    requests = stop.done - start.done
    if requests <= 0:
        raise RuntimeError("no round trip completed in the window")
    seconds = stop.time - start.time
    return {
        ROUND_TRIPS.key: requests / seconds,
        CLIENT_CPU.key: (stop.cpu - start.cpu) / requests * 1e6,
        "window_s": seconds,
        "round_trips": float(requests),
        "connections": float(CONNECTIONS),
    }


def _import(name: str) -> Any:
    """Import and return module ``name``; WorkloadUnavailable when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise WorkloadUnavailable(f"{name} is not installed in the worker's Python") from error


def measure_asyncpg(loop, scale: float) -> dict[str, float]:
    """Round trips/s and client CPU per round trip of ``SELECT 1`` over asyncpg."""
    asyncpg = _import("asyncpg")
    if "PGPORT" not in os.environ:
        raise WorkloadUnavailable("no PostgreSQL server (PGHOST/PGPORT unset)")

    async def main() -> dict[str, float]:
        try:
            connections = [await asyncpg.connect(database="postgres") for _ in range(CONNECTIONS)]
        except NotImplementedError as error:  # rloop: "TCPTransport protocol cannot be changed"
            raise WorkloadUnavailable(f"asyncpg cannot connect on this loop: {error}") from error

        def client_of(connection: Any) -> Callable[[Counter], Awaitable[None]]:
            async def client(counter: Counter) -> None:
                while not counter.stop:
                    if await connection.fetchval("SELECT 1") != 1:
                        raise RuntimeError("SELECT 1 did not return 1")
                    counter.done += 1

            return client

        try:
            return await drive([client_of(c) for c in connections], scale)
        finally:
            for connection in connections:
                await connection.close()

    return loop.run_until_complete(main())


def measure_redis(loop, scale: float) -> dict[str, float]:
    """Round trips/s and client CPU per round trip of alternating SET and GET over redis-py."""
    redis_asyncio = _import("redis.asyncio")

    url = os.environ.get("FERROLOOP_REDIS_URL")
    if not url:
        raise WorkloadUnavailable("no Redis server (FERROLOOP_REDIS_URL unset)")

    async def main() -> dict[str, float]:
        clients = [
            redis_asyncio.Redis.from_url(url, single_connection_client=True)
            for _ in range(CONNECTIONS)
        ]
        for client in clients:
            await client.ping()

        def client_of(index: int, connection: Any) -> Callable[[Counter], Awaitable[None]]:
            key = f"ferroloop-bench-{index}"
            value = b"x" * 64

            async def client(counter: Counter) -> None:
                while not counter.stop:
                    await connection.set(key, value)
                    if await connection.get(key) != value:
                        raise RuntimeError("GET did not return what SET stored")
                    counter.done += 2

            return client

        try:
            return await drive([client_of(i, c) for i, c in enumerate(clients)], scale)
        finally:
            for client in clients:
                await client.aclose()

    return loop.run_until_complete(main())


def _postgres_missing() -> str | None:
    if os.environ.get("PGPORT") or glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return None
    return "PostgreSQL is not installed (Debian: apt-get install postgresql)"


def _redis_missing() -> str | None:
    if os.environ.get("FERROLOOP_REDIS_URL") or shutil.which("redis-server"):
        return None
    return "redis-server is not installed (Debian: apt-get install redis-server)"


WORKLOADS = [
    Workload(
        name="services.asyncpg_select1",
        description=f"asyncpg SELECT 1 round trips, {CONNECTIONS} connections, real PostgreSQL",
        metrics=(ROUND_TRIPS, CLIENT_CPU),
        run=measure_asyncpg,
        unavailable_reason=_postgres_missing,
        cpu_bound=False,
        timing_sensitive=False,
        services=("postgres",),
    ),
    Workload(
        name="services.redis_getset",
        description=f"redis-py SET/GET round trips, {CONNECTIONS} connections, real redis-server",
        metrics=(ROUND_TRIPS, CLIENT_CPU),
        run=measure_redis,
        unavailable_reason=_redis_missing,
        cpu_bound=False,
        timing_sensitive=False,
        services=("redis",),
    ),
]
