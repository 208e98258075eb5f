"""Instructions per TLS echo request on the server (callgrind), split by shared object.

The server is the handler of ``transport_echo.tls_*`` (the workload's own ``streams_handler``:
``asyncio.start_server(ssl=...)``, ``reader.read(102400)`` / ``writer.write`` / ``drain``) with
the certificate of
``workloads/_tls.py``, run under ``valgrind --tool=callgrind`` on the named loop; the client is
another process (stock asyncio streams over TLS, not traced; started by this script, not by the
server): ``--connections`` connections (default 4; the bench row has 20), each sending
``--size`` bytes and reading the echo back, ``--rounds`` times.  The server runs once with
``--rounds`` and once with a third of them; the difference of the two totals divided by the
difference of the requests is the cost of one request (start-up, handshakes and imports cancel
out).  The same split is printed per shared object (libcrypto, libssl, libc, libpython, the
loop's own library, ...), read from the ``ob=`` records of the callgrind output.

``--plain`` runs the same handler and client without TLS (``ssl=None`` on both sides): the
server's cost that is not TLS.  ``--strace`` runs the server under ``strace -c -f`` instead and
prints system calls per request (the client is not traced).  ``--keep DIR`` keeps the two
output files (for ``callgrind_annotate --inclusive=yes``: the ``_ssl`` entry points' costs).

Usage (``--loop``: asyncio, uvloop or ferroloop, importable by ``--python``)::

    python bench/callgrind_tls.py --python PY --loop ferroloop --size 65536 --rounds 300
    python bench/callgrind_tls.py --python PY --loop uvloop --size 1024 --rounds 600 \
        --connections 20 [--plain] [--strace]

Malloc is pinned as in ``run.py`` (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

from callgrind_rows import new_loop
from run import PINNED_MALLOC_ENVIRONMENT
from workloads import _tls
from workloads.sock_echo import ByteCounter
from workloads.transport_echo import CLOSED_BY_TLS_CLIENT, streams_handler


async def serve(size: int, connections: int, plain: bool, port_file: str, scratch: str) -> None:
    """Serve `connections` echo connections (TLS unless `plain`) until all of them have ended.

    The port goes to `port_file` (written whole, then renamed) for the process that starts the
    client, so that a tracer following this process's children never sees the client.
    """
    found = _tls.certificates(scratch)
    inner = streams_handler(ByteCounter(), CLOSED_BY_TLS_CLIENT)
    ended = 0
    finished = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal ended
        try:
            await inner(reader, writer)
        finally:
            ended += 1
            if ended == connections and not finished.done():
                finished.set_result(None)

    context = None if plain else _tls.server_context(found)
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    with open(port_file + ".tmp", "w") as out:
        out.write(f"{port} {found.cafile}")
    os.rename(port_file + ".tmp", port_file)
    await finished
    server.close()
    await server.wait_closed()


async def client(
    port: int, size: int, rounds: int, cafile: str, connections: int, plain: bool
) -> None:
    """Open `connections` connections; on each, send `size` bytes and await the echo."""
    context = None if plain else ssl.create_default_context(cafile=cafile)

    async def one() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=None if plain else _tls.SERVER_NAME
        )
        message = b"x" * size
        for _ in range(rounds):
            writer.write(message)
            await writer.drain()
            await reader.readexactly(size)
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()

    await asyncio.gather(*(one() for _ in range(connections)))


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


def measure(python: str, args: argparse.Namespace, rounds: int, scratch: str) -> str:
    """Run the server under callgrind (or strace) and the client beside it; return the output."""
    tool = "strace" if args.strace else "cg"
    mode = "plain" if args.plain else "tls"
    out = os.path.join(scratch, f"{tool}.{args.loop}.{mode}.{args.size}.{rounds}.out")
    port_file = os.path.join(scratch, f"port.{rounds}")
    if args.strace:
        tracer = ["strace", "-c", "-f", "-o", out]
    else:
        tracer = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    worker = [python, os.path.abspath(__file__), "--worker", "--loop", args.loop]
    worker += ["--size", str(args.size), "--connections", str(args.connections)]
    worker += ["--port-file", port_file] + (["--plain"] if args.plain else [])
    env = {**os.environ, **PINNED_MALLOC_ENVIRONMENT, "PYTHONHASHSEED": "0"}
    server = subprocess.Popen(
        tracer + worker, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while not os.path.exists(port_file):
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        time.sleep(0.05)
    with open(port_file) as lines:
        port, cafile = lines.read().split(" ", 1)
    client = [python, os.path.abspath(__file__), "--client", "--port", port, "--cafile", cafile]
    client += ["--size", str(args.size), "--rounds", str(rounds)]
    client += ["--connections", str(args.connections)] + (["--plain"] if args.plain else [])
    subprocess.run(client, check=True)
    if server.wait() != 0:
        raise SystemExit(f"the server exited with status {server.returncode}")
    return out


def system_calls(path: str) -> collections.Counter[str]:
    """System calls by name from a `strace -c` summary."""
    calls: collections.Counter[str] = collections.Counter()
    with open(path) as lines:
        for line in lines:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls[parts[-1]] += int(parts[3])
    return calls


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
    parser.add_argument("--connections", type=int, default=4, help="client connections")
    parser.add_argument("--plain", action="store_true", help="the same server without TLS")
    parser.add_argument("--strace", action="store_true", help="system calls, not instructions")
    parser.add_argument("--keep", help="copy the two output files into this directory")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    parser.add_argument("--cafile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(
            client(args.port, args.size, args.rounds, args.cafile, args.connections, args.plain)
        )
        return
    with tempfile.TemporaryDirectory() as scratch:
        if args.worker:
            loop = new_loop(args.loop)
            try:
                loop.run_until_complete(
                    serve(args.size, args.connections, args.plain, args.port_file, scratch)
                )
            finally:
                loop.close()
            return
        few = args.rounds // 3
        count = system_calls if args.strace else by_object
        outputs = [measure(args.python, args, rounds, scratch) for rounds in (few, args.rounds)]
        low, high = (count(path) for path in outputs)
        if args.keep:
            for path in outputs:
                shutil.copy(path, args.keep)
    requests = args.connections * (args.rounds - few)
    per = {name: (high[name] - low[name]) / requests for name in set(low) | set(high)}
    total = sum(per.values())
    what = "system calls" if args.strace else "instructions"
    mode = "plain" if args.plain else "tls"
    print(f"{args.loop} {mode} {args.size} B: {total:,.2f} {what} per request")
    for name, value in sorted(per.items(), key=lambda item: -item[1]):
        if abs(value) >= 0.001 * total:
            print(f"  {value:12,.2f}  {short(name)}")


if __name__ == "__main__":
    main()
