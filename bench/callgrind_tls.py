"""Instructions per TLS echo request on the server (callgrind), split by shared object.

The server is the handler of ``transport_echo.tls_*`` (the workload's own ``streams_handler``:
``asyncio.start_server(ssl=...)``, ``reader.read(102400)`` / ``writer.write`` / ``drain``) with
the certificate of
``workloads/_tls.py``, run under ``valgrind --tool=callgrind`` on the named loop; the client is
another process (stock asyncio streams over TLS, not traced): 4 connections, each sending
``--size`` bytes and reading the echo back, ``--rounds`` times.  The server runs once with
``--rounds`` and once with a third of them; the difference of the two totals divided by the
difference of the requests is the cost of one request (start-up, handshakes and imports cancel
out).  The same split is printed per shared object (libcrypto, libssl, libc, libpython, the
loop's own library, ...), read from the ``ob=`` records of the callgrind output.

Usage (``--loop``: asyncio, uvloop or ferroloop, importable by ``--python``)::

    python bench/callgrind_tls.py --python PY --loop ferroloop --size 65536 --rounds 300

Malloc is pinned as in ``run.py`` (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import ssl
import subprocess
import sys
import tempfile

from workloads import _tls
from workloads.sock_echo import ByteCounter
from workloads.transport_echo import CLOSED_BY_TLS_CLIENT, streams_handler

#: Connections the client keeps (each one request in flight).
CONNECTIONS = 4
#: Malloc settings of ``run.py``'s pinned mode.
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "67108864"}


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """Return a new loop of the named kind."""
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    module = __import__(name)
    return module.new_event_loop()


async def serve(size: int, rounds: int, scratch: str) -> None:
    """Serve one client process doing `rounds` echoes of `size` bytes per connection."""
    found = _tls.certificates(scratch)
    handle = streams_handler(ByteCounter(), CLOSED_BY_TLS_CLIENT)
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=_tls.server_context(found))
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        os.path.abspath(__file__),
        "--client",
        "--port",
        str(port),
        "--size",
        str(size),
        "--rounds",
        str(rounds),
        "--cafile",
        found.cafile,
    )
    await client.wait()
    server.close()
    await server.wait_closed()


async def client(port: int, size: int, rounds: int, cafile: str) -> None:
    """Open `CONNECTIONS` TLS connections; on each, send `size` bytes and await the echo."""
    context = ssl.create_default_context(cafile=cafile)

    async def one() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=_tls.SERVER_NAME
        )
        message = b"x" * size
        for _ in range(rounds):
            writer.write(message)
            await writer.drain()
            await reader.readexactly(size)
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()

    await asyncio.gather(*(one() for _ in range(CONNECTIONS)))


def by_object(path: str) -> collections.Counter[str]:
    """Instructions per shared object (`ob=`) of a callgrind output file (self costs)."""
    names: dict[str, str] = {}
    cost: collections.Counter[str] = collections.Counter()
    current = "???"
    skip_next = False
    with open(path) as lines:
        for line in lines:
            if line.startswith(("ob=", "cob=", "fl=", "fi=", "fe=", "fn=", "cfi=", "cfl=", "cfn=")):
                key, _, value = line.rstrip("\n").partition("=")
                found = re.match(r"\((\d+)\)(?: (.*))?", value)
                if key in ("ob", "cob") and found:
                    if found.group(2) is not None:
                        names[found.group(1)] = found.group(2)
                    if key == "ob":
                        current = names.get(found.group(1), "???")
                elif key == "ob":
                    current = value
                continue
            if line.startswith("calls="):
                skip_next = True  # the next cost line is the call's inclusive cost
                continue
            if line[:1].isdigit() or line[:1] in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    cost[current] += int(parts[1])
    return cost


def measure(python: str, loop_name: str, size: int, rounds: int, scratch: str) -> str:
    """Run the server under callgrind; return the output file's path."""
    out = os.path.join(scratch, f"cg.{loop_name}.{size}.{rounds}.out")
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            python,
            os.path.abspath(__file__),
            "--worker",
            "--loop",
            loop_name,
            "--size",
            str(size),
            "--rounds",
            str(rounds),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **PINNED_MALLOC, "PYTHONHASHSEED": "0"},
        check=True,
    )
    return out


def short(name: str) -> str:
    """Return a shared object's file name without its directory and ABI suffix."""
    return os.path.basename(name).split(".cpython-")[0]


def main() -> None:
    """Measure (or run as the traced server, or as the client)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--loop", default="ferroloop")
    parser.add_argument("--size", type=int, default=65536)
    parser.add_argument("--rounds", type=int, default=300, help="rounds per connection")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cafile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client(args.port, args.size, args.rounds, args.cafile))
        return
    with tempfile.TemporaryDirectory() as scratch:
        if args.worker:
            loop = new_loop(args.loop)
            try:
                loop.run_until_complete(serve(args.size, args.rounds, scratch))
            finally:
                loop.close()
            return
        few = args.rounds // 3
        low = by_object(measure(args.python, args.loop, args.size, few, scratch))
        high = by_object(measure(args.python, args.loop, args.size, args.rounds, scratch))
    requests = CONNECTIONS * (args.rounds - few)
    per = {name: (high[name] - low[name]) / requests for name in set(low) | set(high)}
    total = sum(per.values())
    print(f"{args.loop} tls {args.size} B: {total:,.0f} instructions per request")
    for name, value in sorted(per.items(), key=lambda item: -item[1]):
        if abs(value) >= 0.001 * total:
            print(f"  {value:12,.0f}  {short(name)}")


if __name__ == "__main__":
    main()
