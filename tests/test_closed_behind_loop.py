"""A socket closed behind the loop's back while a receive waits on it: epoll silently forgets
the descriptor, so stock asyncio waits forever. ferroloop fails the wait with EBADF instead
(its periodic sweep of pending receives) — an error, not a hang."""

from __future__ import annotations

import asyncio
import errno
import socket
import time

import pytest

pytestmark = pytest.mark.ferroloop_only


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into"])
def test_pending_receive_fails_when_socket_closed(loop, method):
    """The awaiting coroutine gets OSError(EBADF) within a second; the loop keeps running."""

    async def scenario():
        a, b = socket.socketpair()
        a.setblocking(False)
        argument = 10 if method == "sock_recv" else bytearray(10)
        waiting = asyncio.ensure_future(getattr(loop, method)(a, argument))
        await asyncio.sleep(0.01)
        a.close()
        started = time.monotonic()
        with pytest.raises(OSError) as caught:
            await asyncio.wait_for(waiting, 5)
        elapsed = time.monotonic() - started
        b.close()
        return caught.value, elapsed

    error, elapsed = loop.run_until_complete(scenario())
    assert error.errno == errno.EBADF
    assert elapsed < 1.0
    # The loop is still usable, and nothing is left watched.
    c, d = socket.socketpair()
    with c, d:
        c.setblocking(False)
        d.send(b"ok")
        assert loop.run_until_complete(loop.sock_recv(c, 10)) == b"ok"
        assert loop.remove_reader(c) is False
