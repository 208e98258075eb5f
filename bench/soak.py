"""Soak under churn: many concurrent TCP connections, opened and closed continuously.

One process per loop (``--loop asyncio|uvloop|ferroloop``). An echo server and its clients
share the loop. ``--connections`` clients are kept alive at all times; each one connects, then
does a few echo round trips of random sizes (some with the reader paused for a while, some
writes larger than the socket buffer, so partial), and ends in one of four ways: the client
closes, the server closes, the client resets (SO_LINGER 0), or the client aborts mid-transfer;
a new client replaces it at once. ``--tls-share`` of the connections (by default a tenth) go
through TLS (CPython's test certificates, from its ``test`` package). Every ``--sample``
seconds the process's RSS and open descriptor count are printed; at the end every client is
stopped, the servers closed, and the script checks that no task is left and that the descriptor
count is back to its baseline; then
``--cycles`` plain connect/close cycles, after which the descriptor count must be back at the
baseline again.

Prints one JSON line per sample and a final JSON summary (``flat``: RSS and descriptors grew by
at most ``--tolerance`` between the second sample and the last). A sample also gives the malloc
heap (glibc's mallinfo2), the thread count and the bytes the transports and StreamReaders
buffer, KiB; ``--trace-top N`` prints tracemalloc's N largest allocation sites at the second
sample. Clients still running after the churn are listed every 30 s; after
``--drain-timeout`` seconds they are described, aborted and counted as ``stalled``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import ssl
import struct
import sys
import time

from loops import load_loop_factory, parse_loop_spec


def rss_kib() -> int:
    """Resident set size of this process, KiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def open_fds() -> int:
    """Open descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def malloc_kib() -> dict:
    """Return the C heap as glibc sees it (mallinfo2, all arenas), KiB: in use, free but kept."""
    try:
        import ctypes

        class MallInfo2(ctypes.Structure):
            _fields_ = [
                (name, ctypes.c_size_t)
                for name in (
                    "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                    "fsmblks", "uordblks", "fordblks", "keepcost",
                )
            ]  # fmt: skip

        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {
        "heap_in_use": (info.uordblks + info.hblkhd) // 1024,
        "heap_free": info.fordblks // 1024,
        "threads": len(os.listdir("/proc/self/task")),
    }


LIVE_SERVER: set = set()
LIVE_CLIENTS: dict = {}
HELD_CHUNK: dict = {}


def buffered_kib() -> dict:
    """Bytes the program holds in buffers: transports' write buffers and StreamReaders', KiB."""
    server_w = sum(p.transport.get_write_buffer_size() for p in list(LIVE_SERVER))
    client_w = client_r = 0
    for reader, writer in list(LIVE_CLIENTS.values()):
        with contextlib.suppress(Exception):
            client_w += writer.transport.get_write_buffer_size()
        client_r += len(getattr(reader, "_buffer", b""))
    return {
        "server_wbuf": server_w // 1024,
        "client_wbuf": client_w // 1024,
        "client_rbuf": client_r // 1024,
        "client_held_chunks": sum(HELD_CHUNK.values()) // 1024,
        "live_server": len(LIVE_SERVER),
        "live_clients": len(LIVE_CLIENTS),
    }


class EchoServer(asyncio.Protocol):
    """Echoes; closes the connection itself when the client asks (a first byte of b"C")."""

    def connection_made(self, transport):
        """Keep the transport."""
        self.transport = transport
        LIVE_SERVER.add(self)

    def connection_lost(self, exc):
        """Forget it."""
        LIVE_SERVER.discard(self)

    def data_received(self, data):
        """Echo, or close on request."""
        if data[:1] == b"C":
            self.transport.close()
            return
        self.transport.write(data)

    def eof_received(self):
        """Close on the client's EOF."""
        return False


class Stats:
    """Counters of what the clients did."""

    def __init__(self) -> None:
        """Start at zero."""
        self.connections = 0
        self.tls_connections = 0
        self.endings = {"client_close": 0, "server_close": 0, "reset": 0, "abort": 0}
        self.bytes = 0
        self.errors = 0


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and client contexts over CPython's own test certificates."""
    from test.test_asyncio import utils

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(utils.SIGNED_CERTFILE)
    client = ssl.create_default_context(cafile=utils.SIGNING_CA)
    return server, client


async def client(ports, rng: random.Random, stats: Stats, tls_share: float, tls) -> None:
    """One connection's life, ending in one of the four ways."""
    if tls is not None and rng.random() < tls_share:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", ports[1], ssl=tls, server_hostname="localhost"
        )
        stats.tls_connections += 1
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[0])
    stats.connections += 1
    me = asyncio.current_task()
    LIVE_CLIENTS[me] = (reader, writer)
    HELD_CHUNK[me] = 0
    try:
        for _ in range(rng.randint(1, 4)):
            size = rng.choice((10, 1000, 64 * 1024, 512 * 1024))
            writer.write(b"x" * size)
            if rng.random() < 0.2:
                # A paused reader: the transport's buffer fills, the server's writes wait.
                writer.transport.pause_reading()
                await asyncio.sleep(rng.uniform(0.01, 0.2))
                writer.transport.resume_reading()
            await writer.drain()
            got = 0
            while got < size:
                chunk = await reader.read(size - got)
                if not chunk:
                    raise ConnectionError("early EOF")
                got += len(chunk)
            HELD_CHUNK[me] = len(chunk)  # this frame keeps the last chunk until the next read
            stats.bytes += got
            await asyncio.sleep(rng.uniform(0, 0.5))
        ending = rng.choice(tuple(stats.endings))
        stats.endings[ending] += 1
        if ending == "server_close":
            writer.write(b"C")
            await reader.read()  # the server's EOF
            writer.close()
        elif ending == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif ending == "abort":
            writer.write(b"y" * 256 * 1024)
            writer.transport.abort()
        else:
            writer.close()
        await writer.wait_closed()
    except (ConnectionError, OSError):
        stats.errors += 1
        writer.transport.abort()
    finally:
        LIVE_CLIENTS.pop(me, None)
        HELD_CHUNK.pop(me, None)


def describe_stalled(workers) -> list:
    """Describe what each client still running waits on (its transport and reader state)."""
    out = []
    for task in workers:
        if task.done():
            continue
        pair = None
        for client_task, each in LIVE_CLIENTS.items():
            if client_task is task:
                pair = each
        if pair is None:
            out.append({"slot": task.get_name(), "client": None})
            continue
        reader, writer = pair
        transport = writer.transport
        sock = transport.get_extra_info("socket")
        out.append(
            {
                "slot": task.get_name(),
                "local": sock.getsockname() if sock is not None else None,
                "reading": transport.is_reading() if hasattr(transport, "is_reading") else None,
                "wbuf": transport.get_write_buffer_size(),
                "reader_buf": len(reader._buffer),
                "reader_paused": getattr(reader, "_paused", None),
                "closing": transport.is_closing(),
            }
        )
    return out


async def keep_alive(ports, seed: int, stats: Stats, stop: asyncio.Event, share, tls) -> None:
    """One slot of the concurrent set: a client after another until stopped."""
    rng = random.Random(seed)
    while not stop.is_set():
        await client(ports, rng, stats, share, tls)


def print_top_allocations(count: int) -> None:
    """Print where the memory Python's allocators hold was allocated (tracemalloc), by line."""
    import tracemalloc

    snapshot = tracemalloc.take_snapshot()
    stats = snapshot.statistics("lineno")
    top = [
        {"kib": stat.size // 1024, "blocks": stat.count, "where": str(stat.traceback)}
        for stat in stats[:count]
    ]
    total = sum(stat.size for stat in stats) // 1024
    print(json.dumps({"traced_kib": total, "top": top}), flush=True)


async def soak(args) -> dict:
    """Run the whole soak and return its summary."""
    loop = asyncio.get_running_loop()
    baseline_fds = open_fds()
    server = await loop.create_server(EchoServer, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    servers = [server]
    ports = [port, port]
    client_tls = None
    if args.tls_share > 0:
        server_tls, client_tls = tls_contexts()
        servers.append(
            await loop.create_server(EchoServer, "127.0.0.1", 0, backlog=4096, ssl=server_tls)
        )
        ports[1] = servers[1].sockets[0].getsockname()[1]
    stats = Stats()
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(keep_alive(ports, n, stats, stop, args.tls_share, client_tls))
        for n in range(args.connections)
    ]
    samples = []
    start = time.monotonic()
    while time.monotonic() - start < args.duration:
        await asyncio.sleep(args.sample)
        sample = {
            "t": round(time.monotonic() - start),
            "rss_kib": rss_kib(),
            "fds": open_fds(),
            "tasks": len(asyncio.all_tasks()),
            "connections": stats.connections,
            "errors": stats.errors,
            **malloc_kib(),
            **buffered_kib(),
        }
        samples.append(sample)
        print(json.dumps(sample), flush=True)
        if args.trace_top and len(samples) == 2:
            print_top_allocations(args.trace_top)
    stop.set()
    # Wait for the clients to finish their last connection; report progress, and after
    # --drain-timeout describe and abort those still stuck (counted as "stalled").
    drain_start = time.monotonic()
    stalled = []
    while True:
        pending = [w for w in workers if not w.done()]
        if not pending:
            break
        waited = time.monotonic() - drain_start
        if waited > args.drain_timeout:
            stalled = describe_stalled(workers)
            print(json.dumps({"stalled": stalled}, default=str), flush=True)
            for _reader, writer in list(LIVE_CLIENTS.values()):
                writer.transport.abort()
            for each in pending:
                each.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            break
        print(json.dumps({"draining": len(pending), "waited_s": round(waited)}), flush=True)
        await asyncio.wait(pending, timeout=30)
    drain_s = round(time.monotonic() - drain_start, 1)
    for each in servers:
        each.close()
        await each.wait_closed()
    await asyncio.sleep(0.2)
    after_churn = {"fds": open_fds(), "tasks": len(asyncio.all_tasks()) - 1}
    cycles_start = time.monotonic()
    for _ in range(args.cycles):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            await loop.sock_connect(sock, ("127.0.0.1", port))
        sock.close()
    after_cycles = open_fds()
    cycles_s = round(time.monotonic() - cycles_start, 1)
    first, last = samples[min(1, len(samples) - 1)], samples[-1]

    def within(a, b):
        # Flat: no growth beyond the tolerance (a fall is memory given back, not a leak).
        return b - a <= args.tolerance * max(a, 1)

    return {
        "loop": args.loop,
        "connections": args.connections,
        "duration_s": args.duration,
        "connections_made": stats.connections,
        "tls_connections": stats.tls_connections,
        "endings": stats.endings,
        "errors": stats.errors,
        "bytes_echoed": stats.bytes,
        "rss_kib": [first["rss_kib"], last["rss_kib"]],
        "fds": [first["fds"], last["fds"]],
        "rss_drift_pct": round(100 * (last["rss_kib"] - first["rss_kib"]) / first["rss_kib"], 1),
        "fds_drift_pct": round(100 * (last["fds"] - first["fds"]) / first["fds"], 1),
        "drain_s": drain_s,
        "stalled": len(stalled),
        "flat": within(first["rss_kib"], last["rss_kib"]) and within(first["fds"], last["fds"]),
        "baseline_fds": baseline_fds,
        "fds_after_churn": after_churn["fds"],
        "tasks_left": after_churn["tasks"],
        "cycles": args.cycles,
        "fds_after_cycles": after_cycles,
        "cycles_s": cycles_s,
    }


def main() -> int:
    """Run the soak on the loop asked for; exit status 1 if something was left behind."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", default="ferroloop")
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--tls-share", type=float, default=0.1, help="fraction through TLS")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=600.0,
        help="seconds the clients get to finish after the churn stops; then they are aborted",
    )
    parser.add_argument(
        "--trace-top",
        type=int,
        default=0,
        help="trace allocations (tracemalloc, slow) and print the N largest at the 2nd sample",
    )
    args = parser.parse_args()
    if args.trace_top:
        import tracemalloc

        tracemalloc.start()
    spec = parse_loop_spec(args.loop)
    factory = load_loop_factory(spec.module, spec.factory)
    with asyncio.Runner(loop_factory=factory) as runner:
        summary = runner.run(soak(args))
    print(json.dumps(summary), flush=True)
    ok = (
        summary["tasks_left"] == 0
        and summary["stalled"] == 0
        and summary["fds_after_churn"] == summary["baseline_fds"]
        and summary["fds_after_cycles"] == summary["baseline_fds"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
