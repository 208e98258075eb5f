"""Lifecycle and resource faults (issue #11, item 3), the same outcome on both loops:
``loop.close()`` while 8 threads keep posting call_soon_threadsafe, closing a loop that still
has open transports and pending tasks (asyncio's ResourceWarnings and "Task was destroyed but
it is pending!"), ``os.fork()`` from a plain callback, and MemoryError on a huge write.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import sys
import threading
import time
import warnings

import pytest
from support import open_fds, raw_pair, run


def test_close_while_eight_threads_post(loop):
    """8 threads call call_soon_threadsafe in a tight loop while the loop runs, then the
    loop is closed under them: each thread ends with RuntimeError('Event loop is closed'),
    no other error, no crash; callbacks that ran were all posted before the close."""
    ran = [0]
    outcomes: list[str] = []
    lock = threading.Lock()
    started = threading.Barrier(9)

    def bump():
        ran[0] += 1

    def poster():
        started.wait()
        posted = 0
        try:
            while True:
                loop.call_soon_threadsafe(bump)
                posted += 1
                if posted % 64 == 0:
                    time.sleep(0)
        except RuntimeError as exc:
            outcome = f"RuntimeError: {exc}"
        except BaseException as exc:  # recorded, asserted below
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=poster) for _ in range(8)]
    for thread in threads:
        thread.start()
    started.wait()
    run(loop, asyncio.sleep(0.1))
    ran_before_close = ran[0]
    loop.close()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert outcomes == ["RuntimeError: Event loop is closed"] * 8
    assert ran_before_close > 0
    assert ran[0] == ran_before_close  # nothing runs after close
    assert loop.is_closed()


def test_closing_a_loop_with_open_transports_and_pending_tasks(new_loop, loop_kind, kind):
    """loop.close() with a transport still open and a task still pending, then both dropped:
    one ResourceWarning 'unclosed transport', its socket closed (ferroloop warns when close()
    drops the transport, asyncio at the next collection: README, differences),
    'Task was destroyed but it is pending!' reported for the task, no descriptor left."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    baseline = open_fds()
    loop = new_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    peers: list[socket.socket] = []

    async def main():
        ours, peer = raw_pair(kind)
        peers.append(peer)
        await loop.connect_accepted_socket(asyncio.Protocol, sock=ours)
        asyncio.ensure_future(asyncio.sleep(3600))
        await asyncio.sleep(0.01)

    run(loop, main())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.close()
        loop = None  # drop the last reference
        for _ in range(3):
            gc.collect()
    resource = [
        str(w.message)
        for w in caught
        if issubclass(w.category, ResourceWarning) and "unclosed transport" in str(w.message)
    ]
    others = [str(w.message) for w in caught if "unclosed transport" not in str(w.message)]
    peers[0].setblocking(True)
    peer_sees = peers[0].recv(10)
    peers[0].close()
    assert len(resource) == 1
    # asyncio's transport sits in a reference cycle with its socket: the collector may
    # finalize the socket first, which then warns on its own ('unclosed <socket.socket ...>')
    assert all(m.startswith("unclosed <socket.socket") for m in others)
    if loop_kind == "ferroloop":
        assert others == []
    assert reported == ["Task was destroyed but it is pending!"]
    assert peer_sees == b""  # our end was closed
    assert open_fds() == baseline


class FirstData(asyncio.Protocol):
    """Resolves ``future`` with the first data received."""

    def __init__(self, future):
        self.future = future

    def data_received(self, data):
        if not self.future.done():
            self.future.set_result(data)


def test_fork_from_a_callback(loop, loop_kind):
    """os.fork() from a call_soon callback while the loop runs with an open transport: the
    child makes a new loop that moves data through a transport of its own and exits 0; the
    parent's transport carries data after the fork as before."""
    if loop_kind == "asyncio":
        factory = asyncio.new_event_loop
    else:
        import ferroloop

        factory = ferroloop.new_event_loop
    pids: list[int] = []

    def child_body() -> int:
        new = factory()
        try:

            async def echo():
                a, b = socket.socketpair()
                got = new.create_future()
                transport, _ = await new.connect_accepted_socket(lambda: FirstData(got), sock=a)
                b.send(b"child data")
                data = await asyncio.wait_for(got, 5)
                transport.close()
                b.close()
                return data

            return 0 if new.run_until_complete(echo()) == b"child data" else 3
        finally:
            new.close()

    def fork_now():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 2
            try:
                code = child_body()
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)

    async def main():
        ours, peer = raw_pair("unix")
        received = loop.create_future()
        transport, _ = await loop.connect_accepted_socket(lambda: FirstData(received), sock=ours)
        loop.call_soon(fork_now)
        while not pids:
            await asyncio.sleep(0.001)
        _, status = await loop.run_in_executor(None, os.waitpid, pids[0], 0)
        await loop.sock_sendall(peer, b"parent data")
        data = await received
        transport.close()
        peer.close()
        return os.waitstatus_to_exitcode(status), data

    child_code, parent_data = run(loop, main(), timeout=30)
    assert child_code == 0
    assert parent_data == b"parent data"


CHILD_HEAD = r"""
import asyncio, errno, json, os, resource, socket, sys
{prelude}

def limit_address_space():
    # Leaves about 64 MiB of address space to allocate (RLIMIT_AS).
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                vm_size = int(line.split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm_size + (64 << 20), resource.RLIM_INFINITY))

def lift_address_space_limit():
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

def raised_short_of_memory(call, *args):
    # call(*args) under limit_address_space(): the name of what it raised, or None.
    limit_address_space()
    try:
        call(*args)
    except BaseException as exc:
        return type(exc).__name__
    finally:
        lift_address_space_limit()
    return None
"""

CHILD_TAIL = r"""
loop = new_loop()
print(json.dumps(loop.run_until_complete(main())))
loop.close()
"""


def run_in_child(child, name: str, body: str, *args: str):
    """Runs ``body`` (which defines ``async def main()``, with ``limit_address_space()``,
    ``lift_address_space_limit()`` and ``raised_short_of_memory()`` at hand) in a child
    interpreter on the loop under test, with ``args`` as its arguments; returns what
    ``main()`` returned (printed as JSON)."""
    source = CHILD_HEAD.format(prelude=child.loop_prelude) + body + CHILD_TAIL
    script = child.script(name, source)
    proc = child.run([sys.executable, str(script), *args], timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


MEMORY_SCRIPT = r"""
transport_kind, payload_kind = sys.argv[1], sys.argv[2]

async def main():
    loop = asyncio.get_running_loop()
    lost = []

    class Recorder(asyncio.Protocol):
        def connection_lost(self, exc):
            lost.append(None if exc is None else type(exc).__name__)

    if transport_kind == "stream":
        ours, peer = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(Recorder, sock=ours)
    else:
        read_fd, write_fd = os.pipe()
        peer = open(read_fd, "rb", buffering=0)
        transport, _ = await loop.connect_write_pipe(Recorder, open(write_fd, "wb", buffering=0))
    data = (bytes if payload_kind == "bytes" else bytearray)(512 << 20)
    raised = raised_short_of_memory(transport.write, data)
    del data
    after = {"raised": raised, "closing": transport.is_closing()}
    if raised:
        after["buffered"] = transport.get_write_buffer_size()
    transport.abort()
    await asyncio.sleep(0.01)
    peer.close()
    after["lost"] = lost
    return after
"""


@pytest.mark.parametrize("payload", ["bytes", "bytearray"])
@pytest.mark.parametrize("transport_kind", ["stream", "pipe"])
def test_memory_error_on_a_huge_write(child, loop_kind, transport_kind, payload):
    """write() of 512 MiB with the address space nearly full (RLIMIT_AS), in a child. Where
    asyncio copies the unsent data (3.11's socket transport; the pipe transport always) the
    copy fails: MemoryError from write(), nothing buffered, the transport still open; where
    it keeps the object (3.12+'s socket transport) the write is taken. ferroloop keeps a
    `bytes` object by reference on every version (README: differences), so a bytes write
    never raises there. Never an abort of the process."""
    result = run_in_child(child, "huge_write.py", MEMORY_SCRIPT, transport_kind, payload)
    copies = transport_kind == "pipe" or sys.version_info < (3, 12)
    if payload == "bytes" and loop_kind == "ferroloop":
        copies = False
    if copies:
        assert result == {
            "raised": "MemoryError",
            "closing": False,
            "buffered": 0,
            "lost": [None],
        }
    else:
        assert result == {"raised": None, "closing": False, "lost": [None]}


FLUSH_SCRIPT = r"""
async def main():
    loop = asyncio.get_running_loop()
    reported = []
    loop.set_exception_handler(
        lambda _loop, c: reported.append([c["message"], type(c.get("exception")).__name__])
    )
    lost = loop.create_future()

    class Recorder(asyncio.Protocol):
        def connection_lost(self, exc):
            lost.set_result(None if exc is None else type(exc).__name__)

    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(Recorder, sock=ours)
    transport.write(b"x" * (4 << 20))  # fills the socket; the rest is buffered
    data = bytearray(512 << 20)
    limit_address_space()
    raised = None
    try:
        transport.write(data)  # queued behind the buffered bytes
    except BaseException as exc:
        raised = type(exc).__name__
    del data
    sink = bytearray(1 << 20)
    deadline = loop.time() + 20
    while raised is None and not lost.done() and loop.time() < deadline:
        try:
            peer.recv_into(sink)
        except BlockingIOError:
            await asyncio.sleep(0.001)
    lift_address_space_limit()
    transport.abort()
    await asyncio.sleep(0.01)
    peer.close()
    return {"raised": raised, "lost": await lost, "reported": reported}
"""


def test_memory_error_copying_the_rest_of_a_partly_sent_bytearray(child):
    """A 512 MiB bytearray written behind buffered data, then the address space nearly full
    (RLIMIT_AS) while the peer reads. 3.11 copies at write(): MemoryError from write(). 3.12+
    queues the bytearray itself and copies its unsent rest after a partial send: that copy
    fails, and the transport fails with it ('Fatal write error on socket transport',
    connection_lost(MemoryError)), on both loops; never an abort of the process."""
    result = run_in_child(child, "flush_memory.py", FLUSH_SCRIPT)
    if sys.version_info < (3, 12):
        assert result == {"raised": "MemoryError", "lost": None, "reported": []}
    else:
        assert result == {
            "raised": None,
            "lost": "MemoryError",
            "reported": [["Fatal write error on socket transport", "MemoryError"]],
        }


DATAGRAM_MEMORY_SCRIPT = r"""
payload_kind = sys.argv[1]

async def main():
    loop = asyncio.get_running_loop()
    errors = []

    class Recorder(asyncio.DatagramProtocol):
        def error_received(self, exc):
            errors.append(errno.errorcode.get(exc.errno, str(exc)))

    # Connected to a named (abstract) peer: asyncio sends to the peername, and a
    # socketpair's is empty.
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind("\0ferroloop-huge-datagram-%d" % os.getpid())
    peer.setblocking(False)
    ours = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.connect(peer.getsockname())
    transport, _ = await loop.create_datagram_endpoint(Recorder, sock=ours)
    sent = 0
    for _ in range(100_000):  # until one datagram waits in the transport's queue
        transport.sendto(b"x" * 1024)
        sent += 1
        if transport.get_write_buffer_size():
            break
    before = transport.get_write_buffer_size()
    data = (bytes if payload_kind == "bytes" else bytearray)(256 << 20)
    raised = raised_short_of_memory(transport.sendto, data)
    grew = transport.get_write_buffer_size() - before
    del data
    received = 0
    last = loop.time()
    while loop.time() - last < 0.3:  # until nothing more arrives
        try:
            peer.recv(4096)
            received += 1
            last = loop.time()
        except BlockingIOError:
            await asyncio.sleep(0.001)
    result = {
        "raised": raised,
        "grew_by_payload": grew >= 256 << 20,
        "all_small_ones_received": received == sent,
        "closing": transport.is_closing(),
        "errors": errors,
    }
    transport.close()
    peer.close()
    await asyncio.sleep(0.01)
    return result
"""


@pytest.mark.parametrize("payload", ["bytes", "bytearray"])
def test_memory_error_queueing_a_huge_datagram(child, payload):
    """sendto() of 256 MiB behind a queued datagram, with the address space nearly full
    (RLIMIT_AS), in a child. asyncio queues a bytes object as is (the queue grows by it; sent
    later, the socket refuses it: error_received(EMSGSIZE)) and copies a bytearray, which
    fails: MemoryError from sendto(), nothing queued, the transport open. ferroloop the same
    (its copy is a fallible allocation); never an abort of the process."""
    result = run_in_child(child, "huge_datagram.py", DATAGRAM_MEMORY_SCRIPT, payload)
    if payload == "bytes":
        expected = {"raised": None, "grew_by_payload": True, "errors": ["EMSGSIZE"]}
    else:
        expected = {"raised": "MemoryError", "grew_by_payload": False, "errors": []}
    assert result == {**expected, "all_small_ones_received": True, "closing": False}
