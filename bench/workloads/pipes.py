"""Pipe transport throughput, inside one process.

* ``pipes.throughput_64k`` — 100 MB written in 64 KiB ``bytes`` through a write pipe
  transport (``loop.connect_write_pipe``) into a read pipe transport
  (``loop.connect_read_pipe``) on the other end of the same ``os.pipe()``, with asyncio's
  flow control (the writer waits for ``resume_writing`` whenever the transport paused it).
  Reports MB/s and the process's CPU time per MB (both ends run on the one loop, so this is
  the whole cost of moving the data through the loop and back).
* ``pipes.throughput_4k`` — the same with 4 KiB writes (more calls per byte).

No child process: what is measured is the loop and its pipe transports, not a program at
the other end (a subprocess benchmark adds the spawn and the child's own costs).
"""

from __future__ import annotations

import asyncio
import os
import time

from . import Metric, Workload, WorkloadUnavailable, scaled

MEGABYTE = 1_000_000
TOTAL_BYTES = 100 * MEGABYTE


class _Sink(asyncio.Protocol):
    """Counts what arrives; resolves ``done`` with the count at connection_lost."""

    def __init__(self, done: asyncio.Future) -> None:
        self.received = 0
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.received += len(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_result(self.received)


class _Source(asyncio.Protocol):
    """Write side: remembers pause_writing, wakes the producer at resume_writing."""

    def __init__(self) -> None:
        self.paused = False
        self.resumed: asyncio.Future | None = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)


async def _transfer(loop, total: int, chunk_size: int) -> int:
    """Move ``total`` bytes through a pipe; return how many arrived."""
    read_fd, write_fd = os.pipe()
    done = loop.create_future()
    # The transports own the pipe objects: connection_lost closes them.
    read_pipe = open(read_fd, "rb", buffering=0)  # noqa: SIM115
    write_pipe = open(write_fd, "wb", buffering=0)  # noqa: SIM115
    await loop.connect_read_pipe(lambda: _Sink(done), read_pipe)
    transport, source = await loop.connect_write_pipe(_Source, write_pipe)
    chunk = b"x" * chunk_size
    sent = 0
    while sent < total:
        transport.write(chunk)
        sent += chunk_size
        if source.paused:
            source.resumed = loop.create_future()
            await source.resumed
    transport.close()
    return await done


def _measure(chunk_size: int):
    def measure(loop, scale: float) -> dict[str, float]:
        if not hasattr(loop, "connect_read_pipe"):
            raise WorkloadUnavailable("the loop has no connect_read_pipe")
        total = scaled(TOTAL_BYTES // chunk_size, scale) * chunk_size
        try:
            loop.run_until_complete(_transfer(loop, total // 20 or chunk_size, chunk_size))
        except NotImplementedError as exc:
            raise WorkloadUnavailable("the loop has no pipe transports") from exc
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        received = loop.run_until_complete(_transfer(loop, total, chunk_size))
        wall = time.perf_counter() - wall_start
        cpu = time.process_time() - cpu_start
        if received != total:
            raise RuntimeError(f"received {received} bytes of {total}")
        megabytes = total / MEGABYTE
        return {"mb_per_s": megabytes / wall, "cpu_ms_per_mb": 1e3 * cpu / megabytes}

    return measure


_METRICS = (
    Metric("mb_per_s", "MB/s", "MB/s"),
    Metric("cpu_ms_per_mb", "CPU/MB", "ms", higher_is_better=False),
)

WORKLOADS = [
    Workload(
        "pipes.throughput_64k",
        "100 MB through os.pipe(): write pipe transport -> read pipe transport, 64 KiB writes",
        _METRICS,
        _measure(64 * 1024),
    ),
    Workload(
        "pipes.throughput_4k",
        "100 MB through os.pipe(): write pipe transport -> read pipe transport, 4 KiB writes",
        _METRICS,
        _measure(4 * 1024),
    ),
]
