"""The system-wide file table full (ENFILE, issue #11 item 3) on accept, connect and the
socketpair/eventfd a new loop makes: the same outcome on both loops.

ENFILE cannot be produced honestly on this machine: lowering ``/proc/sys/fs/file-max`` would
starve every other process, and root is exempt from it. So the failing call is simulated where
each loop makes it, with the same errno and message the kernel gives:

* accept: stock asyncio calls ``socket.socket.accept`` (patched here); ferroloop calls
  ``accept4`` in Rust, made to fail by the test-only hook ``_ferroloop._inject_fault("accept",
  ENFILE)`` (``src/core/fault_inject.rs``: compiled in, inert unless armed);
* connect: both loops create the connecting socket with ``socket.socket(...)`` from Python, so
  the same patch of ``socket.socket`` serves both;
* a new loop: stock asyncio's self-pipe is a ``socket.socketpair()`` (patched); ferroloop's
  wake-up channel is an eventfd, made after epoll (hook ``"waker"``).

The patches and hooks are undone before each test ends (the hooks also by a fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket

import pytest
from support import (
    assert_failed_loop_left_nothing,
    connect_under_fault,
    new_loop_under_fault,
    open_fds,
    run,
)

ENFILE_ERROR = (errno.ENFILE, os.strerror(errno.ENFILE))
#: The listening backlog of the accept test: asyncio makes that many accept attempts per
#: readiness event.
BACKLOG = 8


def _file_table_full(*args, **kwargs):
    raise OSError(*ENFILE_ERROR)


class FileTable:
    """Makes the calls at one site fail with ENFILE until lifted; counts the failed calls."""

    def __init__(self, loop_kind: str, monkeypatch) -> None:
        self.loop_kind = loop_kind
        self.monkeypatch = monkeypatch
        self.failed = 0
        self.failed_while_full = 0

    def _stock_patch(self, owner, name):
        def failing(*args, **kwargs):
            self.failed += 1
            _file_table_full()

        self.monkeypatch.setattr(owner, name, failing)

    def fill(self, site: str) -> None:
        """From now on the site's calls fail: ``"accept"`` or ``"new_loop"``."""
        self.failed = 0
        if self.loop_kind == "ferroloop":
            from ferroloop import _ferroloop

            _ferroloop._inject_fault({"accept": "accept", "new_loop": "waker"}[site], errno.ENFILE)
        elif site == "accept":
            self._stock_patch(socket.socket, "accept")
        else:
            self._stock_patch(socket, "socketpair")

    def lift(self, site: str) -> int:
        """The calls succeed again; returns how many failed meanwhile."""
        if self.loop_kind == "ferroloop":
            from ferroloop import _ferroloop

            return _ferroloop._inject_fault({"accept": "accept", "new_loop": "waker"}[site], 0)
        self.monkeypatch.undo()
        return self.failed

    @contextlib.contextmanager
    def full(self, site: str):
        """``fill(site)`` for the ``with`` block; then ``failed_while_full`` is what ``lift``
        returned."""
        self.fill(site)
        try:
            yield
        finally:
            self.failed_while_full = self.lift(site)


@pytest.fixture
def file_table(loop_kind, monkeypatch):
    """A ``FileTable`` for the loop under test; every hook disarmed at teardown."""
    yield FileTable(loop_kind, monkeypatch)
    if loop_kind == "ferroloop":
        from ferroloop import _ferroloop

        _ferroloop._inject_fault("accept", 0)
        _ferroloop._inject_fault("waker", 0)


def test_enfile_on_accept_reports_pauses_and_resumes(loop, file_table):
    """accept failing with ENFILE: reported ('socket.accept() out of system resource', the
    OSError(ENFILE) and the listening socket) once per attempt of the readiness event, which
    makes ``backlog`` attempts as asyncio does (8 here); then no attempt while the table stays
    full (accepting paused), and about a second later, the table freed, the waiting client is
    served, by one accept."""
    reports: list[tuple] = []
    made: list[float] = []

    def handler(_loop, context):
        exc = context.get("exception")
        reports.append(
            (
                loop.time(),
                context["message"],
                type(exc),
                getattr(exc, "errno", None),
                sorted(context),
            )
        )

    loop.set_exception_handler(handler)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            made.append(loop.time())
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    run(loop, asyncio.sleep(0))
    baseline = open_fds()

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=BACKLOG)
        client = socket.socket()
        client.setblocking(False)
        file_table.fill("accept")
        await loop.sock_connect(client, server.sockets[0].getsockname())  # the backlog takes it
        await asyncio.sleep(0.5)
        failed_while_full = file_table.lift("accept")
        seen_while_full = (list(reports), list(made))
        await loop.sock_sendall(client, b"ping")
        answer = await loop.sock_recv(client, 10)
        client.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)
        return failed_while_full, seen_while_full, answer

    failed_while_full, (reports_while_full, made_while_full), answer = run(loop, main())
    assert failed_while_full == BACKLOG
    assert made_while_full == []
    assert [report[1:] for report in reports_while_full] == [
        (
            "socket.accept() out of system resource",
            OSError,
            errno.ENFILE,
            ["exception", "message", "socket"],
        )
    ] * BACKLOG
    assert answer == b"ping"
    assert len(reports) == BACKLOG
    assert len(made) == 1
    # Accepting resumed by the retry timer (asyncio's one second), not before.
    assert 0.9 <= made[0] - reports[0][0] < 3.0
    assert open_fds() == baseline


def test_enfile_on_connect_raises_and_leaks_nothing(loop, listener):
    """create_connection when the connecting socket cannot be made (ENFILE): that OSError
    from create_connection, the protocol factory never called, nothing left open; once the
    table has room the same call works."""

    class NoRoomInFileTable(socket.socket):
        def __init__(self, *args, **kwargs):
            _file_table_full()

    @contextlib.contextmanager
    def file_table_full():
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(socket, "socket", NoRoomInFileTable)
            yield

    seen = connect_under_fault(loop, listener.getsockname(), file_table_full)
    assert type(seen.error) is OSError
    assert (seen.error.errno, seen.error.strerror) == ENFILE_ERROR
    assert seen.made_under_fault == []
    assert seen.leaked == 0
    assert seen.made_after == ["protocol"]


# Stock asyncio's half-built loop fails in __del__ (no _ssock): an unraisable warning only.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_enfile_creating_a_loop_raises_and_leaks_nothing(new_loop, loop_kind, file_table):
    """new_event_loop() when its wake-up channel cannot be made (stock: the self-pipe
    socketpair; ferroloop: the eventfd): OSError(ENFILE) from new_event_loop(), one failed
    call, the epoll instance made before it closed; the next loop works."""
    baseline = open_fds()
    made, error = new_loop_under_fault(new_loop, lambda: file_table.full("new_loop"))
    assert made is None
    assert error == (OSError, *ENFILE_ERROR)
    assert file_table.failed_while_full == 1
    assert_failed_loop_left_nothing(loop_kind, baseline)
    made = new_loop()
    assert run(made, asyncio.sleep(0, "works")) == "works"
    made.close()
