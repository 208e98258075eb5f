"""create_connection leaves no reference cycle behind its failed attempts: once the caller
lets go, the exceptions of the addresses that refused (and the frames their tracebacks hold)
are freed without the cycle collector, as asyncio arranges (anyio's
test_happy_eyeballs_refcycles, CPython gh-124859)."""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest


def _refused_errors_alive(marker: str) -> list[BaseException]:
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, ConnectionRefusedError) and marker in str(obj)
    ]


@pytest.fixture
def no_gc():
    """The cycle collector off for the test: whatever a cycle keeps alive stays findable."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.ferroloop_only
@pytest.mark.parametrize("happy_eyeballs_delay", [None, 0.05])
def test_failed_attempts_before_a_success_are_freed(loop, listener, no_gc, happy_eyeballs_delay):
    """Two addresses refuse (nothing listens on 127.0.0.2/3), the third accepts: after the
    connection is made, no exception of the refused attempts is still alive. (ferroloop only:
    stock asyncio 3.11-3.13 leaves these in cycles that only the collector frees.)"""
    port = listener.getsockname()[1]
    infos = [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))
        for host in ("127.0.0.2", "127.0.0.3", "127.0.0.1")
    ]

    async def fake_getaddrinfo(*args, **kwargs):
        return infos

    loop.getaddrinfo = fake_getaddrinfo

    async def main():
        transport, _ = await loop.create_connection(
            asyncio.Protocol, "example.invalid", port, happy_eyeballs_delay=happy_eyeballs_delay
        )
        peer = transport.get_extra_info("peername")
        transport.close()
        await asyncio.sleep(0)
        return peer

    peer = loop.run_until_complete(main())
    alive = _refused_errors_alive(f"{port})")
    assert peer == ("127.0.0.1", port)
    assert alive == []


def test_error_of_a_refused_connection_has_no_other_referrer(loop, no_gc):
    """A connection refused on its only address: the exception the caller catches is
    referenced by nothing else (no list of attempts, no future, no frame)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on the port now

    caught = []

    async def main():
        # The exception is handed out through a list, not as the task's result: on 3.12+ a
        # finished task can stay alive a little longer (a frame of run_until_complete holds
        # it), and its result would then be one more referrer on stock asyncio too.
        try:
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        except OSError as exc:
            caught.append(exc)

    loop.run_until_complete(main())
    assert len(caught) == 1
    referrers = [r for r in gc.get_referrers(caught[0]) if r is not caught]
    assert isinstance(caught[0], ConnectionRefusedError)
    assert [type(r).__name__ for r in referrers] == []
