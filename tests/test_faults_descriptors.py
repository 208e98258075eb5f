"""Descriptor faults (issue #11, item 3), the same outcome on both loops: the process out of
descriptors (EMFILE) when connecting and when a loop creates its own kernel objects (epoll and
its wake-up channel: a socketpair in asyncio), and a descriptor closed behind the loop's back
whose number a new socket takes before the loop notices. (EMFILE on accept is in
``test_transport_faults.py``; a receive pending on a closed socket in
``test_closed_behind_loop.py``.)

The descriptor limit is lowered in this process and restored before the test ends; every test
counts /proc/self/fd at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import socket

import pytest
from support import (
    assert_failed_loop_left_nothing,
    connect_under_fault,
    new_loop_under_fault,
    open_fds,
    run,
)


@contextlib.contextmanager
def descriptors_exhausted(spare: int = 0):
    """Every descriptor number below a lowered RLIMIT_NOFILE taken, except ``spare`` of them.

    Yields nothing; on exit the hogs are closed and the limit restored.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 32, hard))
    hogs: list[int] = []
    try:
        try:
            while True:
                hogs.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE
        for _ in range(spare):
            os.close(hogs.pop())
        yield
    finally:
        for fd in hogs:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_emfile_on_connect_raises_and_leaks_nothing(loop, listener):
    """create_connection with no descriptor left: OSError(EMFILE) from create_connection,
    the protocol factory never called; once descriptors are free the same call works."""
    seen = connect_under_fault(loop, listener.getsockname(), descriptors_exhausted)
    assert isinstance(seen.error, OSError)
    assert seen.error.errno == errno.EMFILE
    assert seen.made_under_fault == []
    assert seen.leaked == 0
    assert seen.made_after == ["protocol"]


# Stock asyncio's half-built loop fails in __del__ (no _ssock): an unraisable warning only.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("spare", [0, 1, 2, 3])
def test_emfile_creating_a_loop_raises_and_leaks_nothing(new_loop, loop_kind, spare):
    """new_event_loop() with 0-3 descriptors free: either OSError(EMFILE) or a loop that
    works; whatever it made before failing is closed, at the latest when collected (asyncio
    needs epoll and a socketpair, ferroloop epoll and an eventfd: how many descriptors
    suffice differs, not the outcome)."""
    baseline = open_fds()
    made, error = new_loop_under_fault(new_loop, lambda: descriptors_exhausted(spare))
    if made is None:
        assert error is not None and error.errno == errno.EMFILE
    else:
        assert run(made, asyncio.sleep(0, "works")) == "works"
        made.close()
    if spare == 0:
        assert error is not None
    assert_failed_loop_left_nothing(loop_kind, baseline)


def test_emfile_socketpair_for_a_transport(loop):
    """socket.socketpair() failing with EMFILE inside a coroutine: the error reaches the
    coroutine; the loop keeps working and nothing leaks."""
    run(loop, asyncio.sleep(0))
    baseline = open_fds()

    async def pair():
        try:
            socket.socketpair()
        except OSError as exc:
            return exc.errno
        return None

    with descriptors_exhausted(spare=1):
        result = run(loop, pair())
    assert result == errno.EMFILE
    assert open_fds() == baseline


def test_descriptor_closed_behind_the_loop_and_reused(loop):
    """A reader's socket closed with os.close (the loop not told) and its number taken by a
    new socket: the stale reader never fires for the newcomer's data; remove_reader(fd)
    reports it was registered; a reader added for the new socket then fires."""
    stale_calls: list[bytes] = []
    fresh_calls: list[bytes] = []
    a, a_peer = socket.socketpair()
    a.setblocking(False)
    number = a.fileno()
    loop.add_reader(number, stale_calls.append, b"stale")
    run(loop, asyncio.sleep(0.01))
    baseline = open_fds()

    os.close(a.detach())  # behind the loop's back
    b, b_peer = socket.socketpair()  # takes the lowest free number: the one just closed
    b.setblocking(False)
    reused = b.fileno() == number
    b_peer.send(b"for b")

    run(loop, asyncio.sleep(0.05))
    stale_after_reuse = list(stale_calls)
    removed = loop.remove_reader(number)

    def on_fresh():
        fresh_calls.append(b.recv(100))

    loop.add_reader(b, on_fresh)

    async def wait_fresh():
        while not fresh_calls:
            await asyncio.sleep(0.005)

    run(loop, wait_fresh())
    removed_again = loop.remove_reader(b)
    for sock in (a_peer, b, b_peer):
        sock.close()
    assert reused is True
    assert stale_after_reuse == []
    assert removed is True
    assert fresh_calls == [b"for b"]
    assert removed_again is True
    assert open_fds() == baseline - 2


def test_transport_socket_closed_behind_the_loop_and_reused(loop):
    """A transport's socket closed behind the loop's back and its number taken by a new
    socket: neither loop can tell, so abort() closes that number, the newcomer's (asyncio
    closes the socket object it holds). Both loops: connection_lost(None) once, no error
    reported, the newcomer's peer sees EOF, and no descriptor is left open."""
    lost: list = []
    reported: list = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    class Recorder(asyncio.Protocol):
        def connection_lost(self, exc):
            lost.append(exc)

    run(loop, asyncio.sleep(0))
    baseline = open_fds()

    async def main():
        ours, peer = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(Recorder, sock=ours)
        number = ours.fileno()
        await asyncio.sleep(0.01)
        os.close(number)  # behind the loop's back (the socket object still holds the number)
        b, b_peer = socket.socketpair()
        reused = b.fileno() == number
        b_peer.setblocking(False)
        transport.abort()
        await asyncio.sleep(0.02)
        seen_by_b_peer = await loop.sock_recv(b_peer, 100)
        b.detach()  # its number was closed by abort()
        b_peer.close()
        peer.close()
        return reused, seen_by_b_peer

    reused, seen_by_b_peer = run(loop, main())
    assert reused is True
    assert seen_by_b_peer == b""
    assert lost == [None]
    assert reported == []
    assert open_fds() == baseline
