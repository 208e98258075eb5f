r"""Open many idle TCP connections to a loopback server and hold them (for ``memory.*``).

Standard library only, one thread.  Raises its RLIMIT_NOFILE soft limit to
the hard limit, then opens ``--conns`` non-blocking connections in batches
(``--batch`` connects in flight, completions seen with epoll), prints
``@@CLIENT {json}`` (``connected``, ``connect_s``) once every connection is
established, and holds them, sending nothing, until its standard input
reaches end of file (or ``--hold-timeout`` passes).  It then closes every
socket with SO_LINGER 0 (a reset, so no TIME_WAIT is left behind) and exits.

Usage::

    python bench/hold_client.py --addr 127.0.0.1:PORT --conns 5000 < pipe
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import select
import socket
import struct
import sys
import time

CLIENT_RESULT_PREFIX = "@@CLIENT "


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Parse the command line; only loopback addresses are accepted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="HOST:PORT of the server (loopback)")
    parser.add_argument("--conns", type=int, default=5000, help="connections to hold")
    parser.add_argument("--batch", type=int, default=500, help="connects in flight at once")
    parser.add_argument(
        "--connect-timeout", type=float, default=60.0, help="seconds to get all connections up"
    )
    parser.add_argument(
        "--hold-timeout", type=float, default=300.0, help="seconds to hold them at most"
    )
    arguments = parser.parse_args(argv)
    host, _, port = arguments.addr.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("only loopback addresses are accepted")
    arguments.addr = (host, int(port))
    return arguments


def raise_file_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; fail if that is still below ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} needed")


def connect_all(
    address: tuple[str, int], count: int, batch: int, timeout: float
) -> list[socket.socket]:
    """Open ``count`` connections to ``address``, at most ``batch`` connects in flight."""
    deadline = time.monotonic() + timeout
    connected: list[socket.socket] = []
    with select.epoll() as epoll:
        pending: dict[int, socket.socket] = {}
        while len(connected) < count:
            while len(pending) < batch and len(connected) + len(pending) < count:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                status = sock.connect_ex(address)
                if status not in (0, errno.EINPROGRESS):
                    raise OSError(status, f"connect: {errno.errorcode.get(status, status)}")
                pending[sock.fileno()] = sock
                epoll.register(sock.fileno(), select.EPOLLOUT)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"only {len(connected)} of {count} connections in {timeout} s")
            for descriptor, _ in epoll.poll(min(remaining, 1.0)):
                sock = pending.pop(descriptor)
                epoll.unregister(descriptor)
                status = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if status:
                    raise OSError(status, f"connect: {errno.errorcode.get(status, status)}")
                connected.append(sock)
    return connected


def hold_until_stdin_closes(timeout: float) -> None:
    """Block until standard input reaches end of file, or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sys.stdin], [], [], remaining)
        if readable and not sys.stdin.buffer.read1(4096):
            return


def main(argv: list[str]) -> int:
    """Entry point."""
    arguments = parse_arguments(argv)
    raise_file_limit(arguments.conns + 64)
    started = time.monotonic()
    sockets = connect_all(
        arguments.addr, arguments.conns, arguments.batch, arguments.connect_timeout
    )
    result = {"connected": len(sockets), "connect_s": time.monotonic() - started}
    print(CLIENT_RESULT_PREFIX + json.dumps(result), flush=True)
    hold_until_stdin_closes(arguments.hold_timeout)
    reset = struct.pack("ii", 1, 0)
    for sock in sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
