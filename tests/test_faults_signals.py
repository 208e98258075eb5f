"""EINTR storms (issue #11, item 3): ITIMER_REAL fires SIGALRM every 100 µs, with a Python
handler, while the loop sleeps in its poll, runs timers, and moves megabytes through
transports. Every interrupted system call must be retried (or its result kept): the data
arrives whole and in order, timers fire in order and not early, nothing is reported, the
handler keeps running while the loop waits, and the loop is usable afterwards.

The suite's time limit also uses ITIMER_REAL (conftest); the storm saves it and puts back
what was left of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

from support import open_fds, raw_pair, run

PERIOD = 0.0001  # 100 µs


@contextlib.contextmanager
def alarm_storm():
    """SIGALRM every 100 µs counted by a Python handler; yields the one-item count list."""
    count = [0]

    def on_alarm(signum, frame):
        count[0] += 1

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    left, interval = signal.setitimer(signal.ITIMER_REAL, PERIOD, PERIOD)
    started = time.monotonic()
    try:
        yield count
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if left:
            spent = time.monotonic() - started
            signal.setitimer(signal.ITIMER_REAL, max(left - spent, 0.001), interval)


class Sink(asyncio.Protocol):
    """Collects what it receives; ``done`` resolves at EOF."""

    def __init__(self, loop) -> None:
        self.data = bytearray()
        self.done = loop.create_future()

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.done.set_result(None)


def test_idle_poll_under_a_signal_storm(loop, handler_calls):
    """A 0.2 s sleep and three timers under the storm: the handler runs while the loop
    waits, the sleep ends neither early nor very late, the timers fire in order."""
    fired: list[tuple[int, float]] = []

    async def main():
        start = loop.time()
        for index, delay in enumerate((0.15, 0.05, 0.1)):
            loop.call_later(delay, lambda i=index: fired.append((i, loop.time() - start)))
        await asyncio.sleep(0.2)
        return loop.time() - start

    with alarm_storm() as count:
        elapsed = run(loop, main())
        handled = count[0]
    assert handled > 20
    assert 0.2 <= elapsed < 2.0
    assert [index for index, _ in fired] == [1, 2, 0]
    assert all(when >= delay for (_, when), delay in zip(fired, (0.05, 0.1, 0.15), strict=True))
    assert handler_calls == []


def test_transport_traffic_under_a_signal_storm(loop, kind, handler_calls):
    """16 MiB through a transport to a protocol on the same loop (both ends on the loop),
    plus sock_sendall / sock_recv in the other direction, under the storm: every byte
    arrives in order, nothing is reported, no descriptor is left."""
    payload = bytes(range(256)) * 4096 * 16  # 16 MiB
    reply = bytes(range(255, -1, -1)) * 4096 * 4  # 4 MiB
    baseline = open_fds()

    async def main():
        a, b = raw_pair(kind)
        sink = Sink(loop)
        writer, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock=a)
        reader, _ = await loop.connect_accepted_socket(lambda: sink, sock=b)
        c, d = raw_pair(kind)

        async def side_channel():
            await loop.sock_sendall(c, reply)
            c.close()

        async def drain():
            got = bytearray()
            while chunk := await loop.sock_recv(d, 65536):
                got += chunk
            d.close()
            return bytes(got)

        side = asyncio.ensure_future(side_channel())
        received = asyncio.ensure_future(drain())
        for offset in range(0, len(payload), 1 << 20):
            writer.write(payload[offset : offset + (1 << 20)])
            await asyncio.sleep(0)
        writer.write_eof()
        await sink.done
        await side
        back = await received
        writer.close()
        reader.close()
        await asyncio.sleep(0.01)
        return bytes(sink.data), back

    with alarm_storm() as count:
        data, back = run(loop, main(), timeout=30)
        handled = count[0]
    assert handled > 20
    assert data == payload
    assert back == reply
    assert handler_calls == []
    assert open_fds() == baseline
    # the loop works after the storm
    assert run(loop, asyncio.sleep(0.01, "after")) == "after"
