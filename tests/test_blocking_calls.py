"""No blocking ``os`` call from the loop's Python glue on the loop's thread.

Blocking-call detectors (blockbuster, which aiohttp's own test suite switches on for every
test) wrap ``os.sendfile``, ``os.stat``, ``os.unlink``... and raise when one is called on a
thread running an event loop, unless the call comes from asyncio's own modules. So a loop may
make those system calls, but not through the ``os`` module from its own Python code:
ferroloop makes them in Rust. The detector here works the same way: it wraps the functions
and records every call made while a loop runs on this thread whose caller is neither asyncio
nor the interpreter's import machinery.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys

import pytest
from support import run

#: The ``os`` functions blockbuster refuses on a loop's thread (and ``fstat``/``lseek``,
#: which a sendfile implementation needs).
WATCHED = ("sendfile", "stat", "fstat", "lseek", "unlink", "remove", "read", "write")
ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: several sendfile(2) calls


@pytest.fixture
def offenders(monkeypatch) -> list[tuple[str, str]]:
    """(function, caller's file) of each watched call made from outside asyncio while a loop
    runs on this thread."""
    found: list[tuple[str, str]] = []

    def wrap(name, real):
        def watched(*args, **kwargs):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return real(*args, **kwargs)
            caller = sys._getframe(1).f_code.co_filename
            if not (caller.startswith(ASYNCIO_DIR) or caller.startswith("<frozen")):
                found.append((name, caller))
            return real(*args, **kwargs)

        return watched

    for name in WATCHED:
        monkeypatch.setattr(os, name, wrap(name, getattr(os, name)))
    return found


class _Collect(asyncio.Protocol):
    def __init__(self, done: asyncio.Future, size: int) -> None:
        self.data = bytearray()
        self.done = done
        self.size = size

    def data_received(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.size and not self.done.done():
            self.done.set_result(bytes(self.data))


def test_transport_sendfile_makes_no_os_call(loop, offenders, tmp_path):
    """loop.sendfile over a TCP transport sends the whole file (zero-copy) without calling
    os.sendfile/os.fstat/os.lseek from outside asyncio."""
    path = tmp_path / "payload.bin"
    path.write_bytes(PAYLOAD)

    async def scenario():
        done = loop.create_future()
        server = await loop.create_server(lambda: _Collect(done, len(PAYLOAD)), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        with open(path, "rb") as f:
            sent = await loop.sendfile(transport, f, fallback=False)
            position = f.tell()
        received = await asyncio.wait_for(done, 10)
        transport.close()
        server.close()
        await server.wait_closed()
        return sent, position, received

    sent, position, received = run(loop, scenario())
    assert (sent, position) == (len(PAYLOAD), len(PAYLOAD))
    assert received == PAYLOAD
    assert offenders == []


def test_sock_sendfile_offset_makes_no_os_call(loop, offenders, tmp_path):
    """sock_sendfile with an offset and a count: the right bytes, the file positioned after
    them, and no watched os call from outside asyncio."""
    path = tmp_path / "payload.bin"
    path.write_bytes(PAYLOAD)
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def receive(size):
        data = bytearray()
        while len(data) < size:
            data += await loop.sock_recv(b, 65536)
        return bytes(data)

    async def scenario():
        receiver = loop.create_task(receive(300_000))
        with open(path, "rb") as f:
            sent = await loop.sock_sendfile(a, f, 1000, 300_000, fallback=False)
            position = f.tell()
        return sent, position, await receiver

    try:
        sent, position, received = run(loop, scenario())
    finally:
        a.close()
        b.close()
    assert (sent, position) == (300_000, 301_000)
    assert received == PAYLOAD[1000:301_000]
    assert offenders == []


def test_unix_server_over_stale_socket_makes_no_os_call(loop, offenders, unix_path):
    """create_unix_server replaces a socket file an earlier server left behind, without
    os.stat/os.unlink from outside asyncio, and a client can then connect."""
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(unix_path)
    stale.close()  # the file stays

    async def scenario():
        server = await loop.create_unix_server(asyncio.Protocol, unix_path)
        _, writer = await asyncio.open_unix_connection(unix_path)
        writer.close()
        server.close()
        await server.wait_closed()

    run(loop, scenario())
    assert offenders == []


def test_unix_server_leaves_other_files_alone(loop, unix_path):
    """A path that holds a regular file is not removed: binding fails with EADDRINUSE and
    the file is still there."""
    with open(unix_path, "w") as f:
        f.write("keep me")

    async def scenario():
        try:
            await loop.create_unix_server(asyncio.Protocol, unix_path)
        except OSError as exc:
            return exc.errno
        return None

    assert run(loop, scenario()) == errno.EADDRINUSE
    with open(unix_path) as f:
        assert f.read() == "keep me"


@pytest.mark.ferroloop_only
def test_serve_inspector_makes_no_os_call(loop, offenders, monkeypatch, tmp_path):
    """serve_inspector() on the running loop prepares its private directory, removes stale
    sockets and binds its socket without os.mkdir/chmod/lstat/listdir/stat/unlink from Python;
    the socket file is gone after close()."""
    import tempfile

    # serve_inspector() imports the inspector module on first use; imported here first, so
    # that the test watches serve_inspector's own calls, not an import hook's (pytest's
    # assertion rewriter stats and makes __pycache__ when no .pyc exists yet: seen on a fresh
    # 3.14 debug venv).
    import ferroloop._inspector  # noqa: F401

    found = offenders
    for name in ("mkdir", "chmod", "lstat", "listdir"):
        real = getattr(os, name)

        def watched(*args, _name=name, _real=real, **kwargs):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return _real(*args, **kwargs)
            caller = sys._getframe(1).f_code.co_filename
            if not (caller.startswith(ASYNCIO_DIR) or caller.startswith("<frozen")):
                found.append((_name, caller))
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, watched)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    stale = tmp_path / f"ferroloop-{os.getuid()}"
    stale.mkdir(mode=0o755)
    (stale / "ferroloop-999999999.sock").write_bytes(b"")  # a process that ended
    paths: list[str] = []

    async def scenario():
        paths.append(loop.serve_inspector())
        await asyncio.sleep(0.01)

    run(loop, scenario())
    path = paths[0]
    mode = os.stat(path).st_mode
    directory_mode = os.stat(stale).st_mode
    loop.close()
    assert found == []
    assert path == str(stale / f"ferroloop-{os.getpid()}.sock")
    assert mode & 0o777 == 0o600 and directory_mode & 0o777 == 0o700
    assert not (stale / "ferroloop-999999999.sock").exists()
    assert not os.path.exists(path)
