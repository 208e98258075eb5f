"""Seeing inside a running loop: ``loop.stats()``, ``ferroloop.inspect_tasks()`` and
``ferroloop.inspect_transports()``.

The counters behind ``stats()`` live in Rust (``src/core/loop_stats.rs``) and are always on;
this module only shapes them (``LoopStats``) and adds the count of live tasks. The two
inspection views are computed on demand, on the loop's thread, from what asyncio keeps anyway:
a task's coroutine chain (``cr_await``), the future it waits on (``_fut_waiter``), and the
loop's registry of open native transports with their byte counters, the pipe transports the
loop noted (weakly) when it made them, and for TLS the application byte counts of the
``TlsPump`` (``_tls.py``).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, TypedDict


class LagStats(TypedDict):
    """How long ready callbacks waited before running, over the last 30 to 60 seconds.

    Sampled: measured in the first two batches of ready callbacks of each run, then in two
    consecutive batches after every 126 others, and after batches of 16 callbacks or more in
    the batches that follow them (a clock read per measured batch only).
    """

    p50: float
    """Median, in seconds."""
    p99: float
    """99th percentile, in seconds."""
    max: float
    """Longest wait in the window, in seconds."""


class LoopStats(TypedDict):
    """``loop.stats()``: counters since the loop was created, and what is open right now."""

    iterations: int
    """Loop iterations (polls of the ready queue) so far."""
    callbacks_run: int
    """Callbacks run (task steps, protocol callbacks, any handle; cancelled ones not)."""
    io_events: int
    """Readiness events dispatched (reader/writer callbacks queued, native receives)."""
    timers_fired: int
    """Timers that became due and were queued."""
    busy_time: float
    """Seconds the loop ran and was not blocked in the poll (callbacks, the loop's own work)."""
    idle_time: float
    """Seconds spent blocked in the poll."""
    lag: LagStats
    """How long ready callbacks waited before they ran (sliding window, sampled batches)."""
    tasks: int
    """Tasks of this loop not yet done."""
    transports: int
    """Open native transports (sockets, pipes)."""
    readers: int
    """Descriptors watched for reading (add_reader, transports, pending sock_recv)."""
    writers: int
    """Descriptors watched for writing."""
    timers: int
    """Timers scheduled and not cancelled."""


class TaskInfo(TypedDict):
    """One task in ``inspect_tasks()``."""

    id: int
    """``id()`` of the task: what ``awaits``/``awaited_by`` refer to."""
    name: str
    state: str
    """``running``, ``scheduled`` (ready to run), ``waiting`` (on a future) or ``cancelling``."""
    coroutine: str
    """The task's coroutine's qualified name."""
    where: str | None
    """``file:line`` where the task is suspended (its innermost coroutine frame)."""
    stack: list[str]
    """The coroutine chain, outermost first: ``qualname (file:line)``."""
    awaits: list[int]
    """Ids of the tasks this task waits for (directly, or through ``gather``, a ``TaskGroup``
    or ``asyncio.wait``)."""
    awaited_by: list[int]
    """Ids of the tasks waiting for this one."""
    await_chain: list[str]
    """This task's name, then the name of the task awaiting it, and so on up to the root."""
    age: float | None
    """Seconds since the task was created (loop time); known for tasks made by
    ``loop.create_task`` while the loop's inspector serves, else None."""
    cpu: float | None
    """Seconds the loop spent running this task's steps while the inspector served (None when
    it does not serve)."""


class TransportInfo(TypedDict):
    """One transport in ``inspect_transports()``."""

    kind: str
    """``tcp``, ``tcp6``, ``unix``, ``udp``, ``udp6``, ``unix-dgram``, ``pipe-read`` or
    ``pipe-write`` (a TLS connection has its socket's kind, and ``tls`` true)."""
    fd: int
    local: str | None
    peer: str | None
    protocol: str
    """The protocol's class name (for TLS, the application's protocol)."""
    write_buffered: int
    """Bytes waiting to be sent (for TLS, what the TLS transport's
    ``get_write_buffer_size()`` says: records not yet sent plus application bytes not yet
    encrypted)."""
    reading_paused: bool
    writing_paused: bool
    """The protocol was told ``pause_writing()`` (flow control)."""
    bytes_in: int | None
    """Bytes received so far (None for a write pipe); for TLS, application bytes (decrypted,
    handed to the protocol)."""
    bytes_out: int | None
    """Bytes sent so far (None for a read pipe); for TLS, application bytes encrypted (the
    protocol wrote them and TLS took them)."""
    tls: bool
    """A TLS connection: the row describes the transport the application sees."""
    wire_bytes_in: int | None
    """TLS: bytes received on the socket (records); None otherwise."""
    wire_bytes_out: int | None
    """TLS: bytes sent on the socket (records); None otherwise."""


def _running_loop_or(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    if loop is not None:
        return loop
    return asyncio.get_running_loop()


def _frame_text(frame: Any) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _coroutine_chain(coro: Any) -> list[tuple[str, Any]]:
    """``(qualname, frame)`` of each coroutine/generator in the await chain, outermost first."""
    chain: list[tuple[str, Any]] = []
    for _ in range(256):  # a cycle cannot happen, but a runaway chain must not hang the loop
        if coro is None:
            break
        frame = getattr(coro, "cr_frame", None)
        following = getattr(coro, "cr_await", None)
        if frame is None and hasattr(coro, "gi_frame"):
            frame, following = coro.gi_frame, coro.gi_yieldfrom
        elif frame is None and hasattr(coro, "ag_frame"):
            frame, following = coro.ag_frame, coro.ag_await
        if frame is None:
            break
        name = getattr(coro, "__qualname__", None) or frame.f_code.co_name
        chain.append((name, frame))
        coro = following
    return chain


def _awaited_tasks(task: asyncio.Task) -> list[asyncio.Future]:
    """The tasks ``task`` is waiting for: the future it waits on if that is a task, or the
    children of a ``gather``."""
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is None:
        return []
    if isinstance(waiter, asyncio.Task):
        return [waiter]
    children = getattr(waiter, "_children", None)  # asyncio.gather's future
    if children:
        return [child for child in children if isinstance(child, asyncio.Task)]
    return []


def _waiting_parents(child: asyncio.Task, waiting_on: dict[int, asyncio.Task]) -> list[Any]:
    """The tasks waiting for ``child`` as its done callbacks tell: a ``TaskGroup``'s (a method
    of the group, whose ``_parent_task`` waits in ``__aexit__``), and ``asyncio.wait``'s (a
    function whose closure holds the future its caller waits on, ``waiting_on``)."""
    parents: list[Any] = []
    for entry in getattr(child, "_callbacks", None) or ():
        callback = entry[0] if isinstance(entry, tuple) else entry
        group = getattr(callback, "__self__", None)
        parent = getattr(group, "_parent_task", None)
        if isinstance(parent, asyncio.Task):
            parents.append(parent)
            continue
        for cell in getattr(callback, "__closure__", None) or ():
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(content, asyncio.Future) and id(content) in waiting_on:
                parents.append(waiting_on[id(content)])
    return parents


def _age(births: Any, task: asyncio.Task, now: float) -> float | None:
    born = births.get(task) if births is not None else None
    return None if born is None else max(0.0, now - born)


def inspect_tasks(loop: asyncio.AbstractEventLoop | None = None) -> list[TaskInfo]:
    """The tasks of ``loop`` (default: the running loop) that are not done, with where each is
    suspended and which task awaits which (as Python 3.14's ``asyncio pstree`` shows)."""
    loop = _running_loop_or(loop)
    current = asyncio.current_task(loop) if loop.is_running() else None
    tasks = sorted(asyncio.all_tasks(loop), key=id)
    known = {id(task) for task in tasks}
    awaits: dict[int, list[int]] = {}
    awaited_by: dict[int, list[int]] = {id(task): [] for task in tasks}
    for task in tasks:
        targets = [id(t) for t in _awaited_tasks(task) if id(t) in known]
        awaits[id(task)] = targets
        for target in targets:
            awaited_by[target].append(id(task))
    # TaskGroup and asyncio.wait parents wait on a plain future: linked through the
    # children's done callbacks.
    waiting_on = {
        id(waiter): task
        for task in tasks
        if (waiter := getattr(task, "_fut_waiter", None)) is not None
    }
    for child in tasks:
        for parent in _waiting_parents(child, waiting_on):
            if id(parent) in known and parent is not child and id(child) not in awaits[id(parent)]:
                awaits[id(parent)].append(id(child))
                awaited_by[id(child)].append(id(parent))
    names = {id(task): task.get_name() for task in tasks}
    births = getattr(loop, "_task_births", None)
    now = loop.time()
    cpu: dict[int, float] | None = None
    if getattr(loop, "_inspector", None) is not None:
        cpu = loop._task_times([id(task) for task in tasks])  # type: ignore[attr-defined]
    infos: list[TaskInfo] = []
    for task in tasks:
        chain = _coroutine_chain(task.get_coro())
        if task is current:
            state = "running"
        elif task.cancelling():
            state = "cancelling"
        elif getattr(task, "_fut_waiter", None) is not None:
            state = "waiting"
        else:
            state = "scheduled"
        coro = task.get_coro()
        await_chain = [names[id(task)]]
        seen = {id(task)}
        parent = awaited_by[id(task)]
        while parent and parent[0] not in seen:
            seen.add(parent[0])
            await_chain.append(names[parent[0]])
            parent = awaited_by[parent[0]]
        infos.append(
            TaskInfo(
                id=id(task),
                name=names[id(task)],
                state=state,
                coroutine=getattr(coro, "__qualname__", None) or type(coro).__name__,
                where=_frame_text(chain[-1][1]) if chain else None,
                stack=[f"{name} ({_frame_text(frame)})" for name, frame in chain],
                awaits=awaits[id(task)],
                awaited_by=awaited_by[id(task)],
                await_chain=await_chain,
                age=_age(births, task, now),
                cpu=None if cpu is None else cpu.get(id(task), 0.0),
            )
        )
    return infos


def _address_text(address: Any) -> str | None:
    if address is None or address == "" or address == b"":
        return None
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, bytes):
        return repr(address)
    return str(address)


_FAMILY_KINDS = {
    (socket.AF_INET, socket.SOCK_STREAM): "tcp",
    (socket.AF_INET6, socket.SOCK_STREAM): "tcp6",
    (socket.AF_UNIX, socket.SOCK_STREAM): "unix",
    (socket.AF_INET, socket.SOCK_DGRAM): "udp",
    (socket.AF_INET6, socket.SOCK_DGRAM): "udp6",
    (socket.AF_UNIX, socket.SOCK_DGRAM): "unix-dgram",
}


def _transport_kind(transport: Any) -> str:
    class_name = type(transport).__name__
    if class_name == "ReadPipeTransport":
        return "pipe-read"
    if class_name == "WritePipeTransport":
        return "pipe-write"
    sock = transport.get_extra_info("socket")
    if sock is not None:
        kind = _FAMILY_KINDS.get((sock.family, sock.type))
        if kind is not None:
            return kind
    return "datagram" if class_name == "DatagramTransport" else "stream"


def inspect_transports(loop: asyncio.AbstractEventLoop | None = None) -> list[TransportInfo]:
    """The open native transports of a ferroloop ``loop`` (default: the running loop), and
    its open pipe transports, in descriptor order: kind, descriptor, addresses, buffered
    bytes, flow control, bytes in/out. A TLS connection is described as its application
    sees it (application bytes, the TLS transport's buffer and pauses, the application's
    protocol), with the socket's bytes as ``wire_bytes_in``/``wire_bytes_out``."""
    loop = _running_loop_or(loop)
    open_transports = getattr(loop, "_open_transports", None)
    if open_transports is None:
        raise TypeError(f"inspect_transports() needs a ferroloop loop, not {type(loop).__name__}")
    entries = list(open_transports())
    open_pipes = getattr(loop, "_open_pipe_transports", None)
    if open_pipes is not None:
        pipes = open_pipes()
        if pipes:
            entries.extend(pipes)
            entries.sort(key=lambda entry: entry[0])
    infos: list[TransportInfo] = []
    for fd, transport in entries:
        protocol = transport.get_protocol()
        if getattr(protocol, "_ferroloop_inspector", False):
            continue  # the inspector's own connections
        info = _transport_info(fd, transport, protocol)
        tls_counts = getattr(protocol, "_ferroloop_app_counts", None)
        if tls_counts is not None:
            _describe_tls(info, protocol, tls_counts)
        infos.append(info)
    return infos


def _transport_info(fd: int, transport: Any, protocol: Any) -> TransportInfo:
    """The row of a native transport, from its own counters."""
    is_reading = getattr(transport, "is_reading", None)
    buffer_size = getattr(transport, "get_write_buffer_size", None)
    written = buffered = 0
    bytes_in = bytes_out = None
    writing_paused = False
    counts = getattr(transport, "_io_counts", None)
    if counts is not None:
        bytes_in, written, writing_paused = counts()
    if buffer_size is not None:
        buffered = buffer_size()
    if counts is not None:
        bytes_out = max(0, written - buffered)
    kind = _transport_kind(transport)
    if kind == "pipe-read":
        bytes_out = None  # a pipe carries one direction
    elif kind == "pipe-write":
        bytes_in = None
    return TransportInfo(
        kind=kind,
        fd=fd,
        local=_address_text(transport.get_extra_info("sockname")),
        peer=_address_text(transport.get_extra_info("peername")),
        protocol=type(protocol).__name__ if protocol is not None else "-",
        write_buffered=buffered,
        reading_paused=is_reading is not None and not transport.is_closing() and not is_reading(),
        writing_paused=bool(writing_paused),
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        tls=False,
        wire_bytes_in=None,
        wire_bytes_out=None,
    )


def _describe_tls(info: TransportInfo, ssl_protocol: Any, app_counts: Any) -> None:
    """Turns the row of a TLS connection's socket transport into the row of its TLS
    transport (what the application holds): application bytes, buffer, pauses, protocol."""
    info["tls"] = True
    info["wire_bytes_in"] = info["bytes_in"]
    info["wire_bytes_out"] = info["bytes_out"]
    info["bytes_in"], info["bytes_out"] = app_counts()
    app_protocol = getattr(ssl_protocol, "_app_protocol", None)
    if app_protocol is not None:
        info["protocol"] = type(app_protocol).__name__
    app_transport = getattr(ssl_protocol, "_app_transport", None)
    if app_transport is not None:
        info["write_buffered"] = app_transport.get_write_buffer_size()
    info["reading_paused"] = bool(getattr(ssl_protocol, "_app_reading_paused", False))
    info["writing_paused"] = bool(getattr(ssl_protocol, "_app_writing_paused", False))
