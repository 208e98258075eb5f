"""What Python 3.12 and 3.13 added to asyncio, on the loop under test: the eager task factory
(3.12), Server.close_clients()/abort_clients() (3.13) and the loop-facing parts of
Queue.shutdown() and as_completed() as an async iterator (3.13). CPython's own suites of those
versions check the same through the conformance run (expected_pass-3.12/-3.13.txt); these run
with the pytest suite on every Python (skipped where the feature does not exist)."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import weakref

import pytest

needs_312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="new in Python 3.12")
needs_313 = pytest.mark.skipif(sys.version_info < (3, 13), reason="new in Python 3.13")


@needs_312
def test_eager_task_factory_runs_the_first_step_in_create_task(loop):
    """With asyncio.eager_task_factory, create_task() runs the coroutine up to its first
    suspension before returning; a coroutine that never suspends is done at once, and the
    loop's callbacks keep their order around it."""
    order = []

    async def finishes_at_once():
        order.append("done-body")
        return 1

    async def suspends():
        order.append("suspends-start")
        await asyncio.sleep(0)
        order.append("suspends-end")
        return 2

    async def main():
        loop.set_task_factory(asyncio.eager_task_factory)
        loop.call_soon(order.append, "callback")
        done = loop.create_task(finishes_at_once())
        order.append(("created", done.done()))
        pending = loop.create_task(suspends())
        order.append(("created", pending.done()))
        results = await asyncio.gather(done, pending)
        return results, loop.get_task_factory() is asyncio.eager_task_factory

    results, factory_kept = loop.run_until_complete(main())
    loop.set_task_factory(None)
    assert results == [1, 2]
    assert factory_kept
    assert order == [
        "done-body",
        ("created", True),
        "suspends-start",
        ("created", False),
        "callback",
        "suspends-end",
    ]


@needs_312
def test_eager_task_registers_current_task_and_all_tasks(loop):
    """An eagerly started task is the current task during its first step and is in
    all_tasks() while it is pending (asyncio's task bookkeeping, on the loop under test)."""
    seen = {}

    async def body():
        seen["current_in_first_step"] = asyncio.current_task()
        await asyncio.sleep(0.01)

    async def main():
        loop.set_task_factory(asyncio.create_eager_task_factory(asyncio.Task))
        outer = asyncio.current_task()
        task = loop.create_task(body())
        seen["current_in_first_step"] = seen["current_in_first_step"] is task
        seen["current_after"] = asyncio.current_task() is outer
        seen["in_all_tasks"] = task in asyncio.all_tasks()
        await task
        seen["after"] = task in asyncio.all_tasks()

    loop.run_until_complete(main())
    loop.set_task_factory(None)
    assert seen == {
        "current_in_first_step": True,
        "current_after": True,
        "in_all_tasks": True,
        "after": False,
    }


async def _serve_two_clients(loop):
    """A server with two connected clients; returns (server, client sockets, transports)."""
    transports = []
    made = asyncio.Event()

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            transports.append(transport)
            if len(transports) == 2:
                made.set()

    server = await loop.create_server(Proto, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()
    clients = [socket.create_connection(address) for _ in range(2)]
    await asyncio.wait_for(made.wait(), 5)
    return server, clients, transports


def _read_until_closed(client: socket.socket) -> bytes | str:
    """What the peer's close looks like from the client: b"" (FIN) or "reset"."""
    client.settimeout(5)
    try:
        data = bytearray()
        while chunk := client.recv(1 << 16):
            data += chunk
        return bytes(data)
    except ConnectionResetError:
        return "reset"


#: More than a loopback socket's send and receive buffers hold together.
BIG = b"x" * (16 * 1024 * 1024)


@needs_313
def test_server_close_clients_closes_every_connection_after_its_buffer(loop):
    """close_clients() closes each connected transport (what is still buffered is sent
    first); wait_closed() then returns once the server is closed too."""

    async def main():
        server, clients, transports = await _serve_two_clients(loop)
        transports[0].write(BIG)
        server.close()
        server.close_clients()
        closing = [t.is_closing() for t in transports]
        ends = [await asyncio.to_thread(_read_until_closed, c) for c in clients]
        await asyncio.wait_for(server.wait_closed(), 5)
        for client in clients:
            client.close()
        return closing, sorted(ends, key=repr)

    closing, ends = loop.run_until_complete(main())
    assert closing == [True, True]
    assert sorted(len(end) for end in ends) == [0, len(BIG)]


@needs_313
def test_server_abort_clients_resets_every_connection(loop):
    """abort_clients() aborts each connected transport at once: what is still buffered in
    the transport is dropped (close_clients() would have sent it first)."""

    async def main():
        server, clients, transports = await _serve_two_clients(loop)
        transports[0].write(BIG)  # more than the socket buffers take: the rest stays queued
        queued = transports[0].get_write_buffer_size()
        server.close()
        server.abort_clients()
        closing = [t.is_closing() for t in transports]
        ends = [await asyncio.to_thread(_read_until_closed, c) for c in clients]
        await asyncio.wait_for(server.wait_closed(), 5)
        for client in clients:
            client.close()
        return queued, closing, ends

    queued, closing, ends = loop.run_until_complete(main())
    assert queued > 0
    assert closing == [True, True]
    assert ends[1] in (b"", "reset")
    assert ends[0] == "reset" or len(ends[0]) < len(BIG)


class _EqualToAll:
    """A member that claims equality with everything: membership must still be identity."""

    def __eq__(self, other):
        return True

    def __hash__(self):
        return 0


@pytest.mark.ferroloop_only
def test_server_clients_set_is_by_identity_and_collectable():
    """ferroloop's Server._clients (a native set, to keep 5,000 connections' table small):
    members by identity, add/discard idempotent, snapshot is a copy, and a cycle through it
    (transport -> server -> clients -> transport) is collected."""
    from ferroloop._ferroloop import ServerClients

    clients = ServerClients()
    first, second = _EqualToAll(), _EqualToAll()
    clients.add(first)
    clients.add(second)
    clients.add(first)
    sizes = [len(clients)]
    members = [first in clients, second in clients]
    snapshot = clients.snapshot()
    clients.discard(first)
    clients.discard(first)
    sizes.append(len(clients))
    members += [first in clients, second in clients]
    after = clients.snapshot()

    holder = _EqualToAll()
    holder.clients = ServerClients()
    holder.clients.add(holder)
    collected = weakref.ref(holder)
    del holder
    gc.collect()

    assert sizes == [2, 1]
    assert members == [True, True, False, True]
    assert sorted(map(id, snapshot)) == sorted([id(first), id(second)])
    assert len(after) == 1 and after[0] is second
    assert collected() is None


@needs_312
def test_server_wait_closed_waits_for_connections(loop):
    """From 3.12, Server.wait_closed() returns only after the server is closed and its last
    connection is gone (3.11's returned at once)."""

    async def main():
        server, clients, transports = await _serve_two_clients(loop)
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.05)
        early = waiter.done()
        for transport in transports:
            transport.close()
        await asyncio.wait_for(waiter, 5)
        for client in clients:
            client.close()
        return early

    assert loop.run_until_complete(main()) is False


@needs_313
def test_queue_shutdown_wakes_getters_and_putters(loop):
    """Queue.shutdown(immediate=True) wakes a blocked getter and a blocked putter on the loop
    under test with QueueShutDown."""

    async def main():
        empty = asyncio.Queue()
        full = asyncio.Queue(maxsize=1)
        full.put_nowait(0)
        getter = asyncio.ensure_future(empty.get())
        putter = asyncio.ensure_future(full.put(1))
        await asyncio.sleep(0)
        empty.shutdown(immediate=True)
        full.shutdown(immediate=True)
        outcomes = await asyncio.gather(getter, putter, return_exceptions=True)
        return [type(outcome).__name__ for outcome in outcomes]

    assert loop.run_until_complete(main()) == ["QueueShutDown", "QueueShutDown"]


@needs_313
def test_as_completed_async_iterator_yields_the_original_tasks(loop):
    """``async for t in as_completed(...)`` yields the tasks themselves in completion order
    (timers of the loop under test decide the order)."""

    async def after(delay, value):
        await asyncio.sleep(delay)
        return value

    async def main():
        tasks = [asyncio.ensure_future(after(d, v)) for d, v in ((0.06, "c"), (0.0, "a"))]
        tasks.append(asyncio.ensure_future(after(0.03, "b")))
        seen = []
        async for done in asyncio.as_completed(tasks):
            seen.append((done in tasks, await done))
        return seen

    assert loop.run_until_complete(main()) == [(True, "a"), (True, "b"), (True, "c")]
