"""Fork safety: a child forked from a process running a loop gets a usable fresh state, and
the parent's loop is undisturbed.

The forked child always leaves with ``os._exit`` (never returning into pytest); its verdict
is its exit status, checked in the parent.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import traceback
import warnings

import pytest


def _factory(kind: str):
    """``new_event_loop`` of the implementation under test."""
    if kind == "asyncio":
        return asyncio.new_event_loop
    import ferroloop

    return ferroloop.new_event_loop


def _child_work(factory) -> int:
    """What a forked child does with a brand-new loop: a timer and a subprocess."""

    async def main():
        await asyncio.sleep(0.01)
        proc = await asyncio.create_subprocess_exec("echo", "child", stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        return out

    loop = factory()
    try:
        out = loop.run_until_complete(main())
    finally:
        loop.close()
    return 0 if out == b"child\n" else 3


def _run_in_fork(body) -> int:
    """Forks; the child runs ``body()`` and exits with its result (2 on an exception)."""
    with warnings.catch_warnings():
        # 3.12+ warns when forking a process that has threads (executors of earlier tests).
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 2
        try:
            code = body()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


@pytest.mark.timeout(60)
def test_fork_inside_running_loop_new_loop_in_child(loop, loop_kind):
    factory = _factory(loop_kind)
    reader, writer = socket.socketpair()
    received: list[bytes] = []
    loop.add_reader(reader, lambda: received.append(reader.recv(100)))

    async def main():
        pid = _run_in_fork(lambda: _child_work(factory))
        _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
        writer.send(b"after-fork")
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.01)
        # The parent's loop still spawns and reaps its own children.
        proc = await asyncio.create_subprocess_exec("true")
        return os.waitstatus_to_exitcode(status), await proc.wait()

    try:
        child_code, own_code = loop.run_until_complete(main())
    finally:
        loop.remove_reader(reader)
        reader.close()
        writer.close()
    assert child_code == 0
    assert own_code == 0
    assert received == [b"after-fork"]


def _mp_target(queue, factory_name: str) -> None:
    queue.put(_child_work(_factory(factory_name)))


@pytest.mark.timeout(60)
def test_multiprocessing_fork_start_method(loop, loop_kind):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.SimpleQueue()

    async def main():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            process = ctx.Process(target=_mp_target, args=(queue, loop_kind))
            process.start()
        await loop.run_in_executor(None, process.join, 30)
        await asyncio.sleep(0.01)  # the parent's loop keeps running
        return process.exitcode, queue.get()

    assert loop.run_until_complete(main()) == (0, 0)


@pytest.mark.ferroloop_only
def test_inherited_loop_in_child_does_not_touch_the_parents(loop):
    """The child may close, unregister from, or even run the loop it inherited: the parent's
    registrations stay (stock asyncio shares its epoll instance with the child and loses them)."""
    reader, writer = socket.socketpair()
    received: list[bytes] = []

    def on_readable():
        received.append(reader.recv(100))
        loop.stop()

    loop.add_reader(reader, on_readable)

    def child() -> int:
        loop.remove_reader(reader)
        return _child_work(lambda: loop)  # runs the inherited loop, then closes it

    pid = _run_in_fork(child)
    _, status = os.waitpid(pid, 0)
    writer.send(b"parent")
    watchdog = loop.call_later(5, loop.stop)
    loop.run_forever()
    watchdog.cancel()
    loop.remove_reader(reader)
    reader.close()
    writer.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert received == [b"parent"]


@pytest.mark.ferroloop_only
def test_inherited_loop_gets_new_kernel_objects(loop):
    """In the child, the inherited loop's epoll/eventfd/signal pipe are new descriptions."""
    parent_wakeup = loop._signal_wakeup_fd()
    parent_inode = os.fstat(parent_wakeup).st_ino
    read_end, write_end = os.pipe()

    def child() -> int:
        new_fd = loop._signal_wakeup_fd()
        os.write(write_end, b"%d" % os.fstat(new_fd).st_ino)
        return 0

    pid = _run_in_fork(child)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    child_inode = int(os.read(read_end, 100))
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_inode != parent_inode
    assert os.fstat(loop._signal_wakeup_fd()).st_ino == parent_inode
    assert sys.platform.startswith("linux")
