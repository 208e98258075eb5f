"""Runs one random program (made by ``fuzz_program``) on one event loop and returns its trace.

The differential fuzzer runs every program on stock asyncio and on ferroloop and requires the
two traces to be identical. A trace is made only of what a program can observe: which callback
ran in which order, what each call returned or raised (exception type and message), in which
timer slot it happened, and, for each socket pair, the ordered events of its channel.

Determinism by construction, not by a weaker comparison:

* Time is cut into slots of ``SLOT`` seconds. Every timer the program sets (``call_later``,
  ``call_at``, ``asyncio.sleep``, ``wait_for``/``wait``/``timeout`` deadlines) gets a slot of its
  own, allocated at run time (``Run.alloc``), and fires 5 % into it: no two deadlines are ever
  equal or close. Timers in the past get distinct past deadlines.
* Everything a timer starts (callback chains, task steps, a callback a thread sends while the
  loop sleeps) finishes within the first fraction of its slot. Each slot also gets a marker
  timer that fires first and names the slot (``cur``); each event records it. An event the
  wall clock puts in another slot than the current one (a chain still running when the next
  slot began) or late in its slot (``GUARD``) means the machine stalled the program long
  enough for wall-clock time to decide an order: the run is marked ``disturbed`` and the
  caller runs it again; a disturbed run is never compared. (The caller also reports a
  difference only when it repeats, identically, on rerun.)
* Socket pairs and their transports run in I/O steps, slots of their own where no callback
  chain runs: asyncio leaves unspecified in which loop iteration readiness is noticed
  (ferroloop polls every second iteration while callbacks keep it busy), so I/O events are kept
  out of the callback chains' way rather than compared loosely. Each pair's events (the raw
  reader/writer callbacks, protocol callbacks, transport calls) form the pair's channel, ordered
  exactly; consecutive received bytes are merged (TCP and socketpairs are byte streams: how the
  kernel splits them is not the loop's behaviour).
* Object addresses and auto-generated task names are masked in messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import re
import socket
import threading
import time
from collections import defaultdict

#: Length of a timer slot (seconds); FERROLOOP_FUZZ_SLOT_MS overrides it.
SLOT = float(os.environ.get("FERROLOOP_FUZZ_SLOT_MS", "20")) / 1000.0

#: Fraction of a slot after which an event means the machine stalled the run.
GUARD = 0.75

#: Timers a program may set (it may schedule itself): past it, a timer operation is skipped.
MAX_TIMERS = 12

#: Callbacks and coroutine bodies a program may start in total (it may schedule itself).
BUDGET = 80

#: Payload sizes of writes and sends (the large ones exceed a socket's buffer).
SIZES = (1, 100, 5000, 70000, 300000)

#: What the fuzzer did in this process (printed in pytest's terminal summary).
STATS = {"programs": 0, "compared": 0, "disturbed": 0, "steps": 0, "retried": 0, "unstable": 0}

_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_TASK_NAME = re.compile(r"Task-\d+")


def norm(text: str) -> str:
    """``text`` with object addresses and automatic task names masked."""
    return _TASK_NAME.sub("Task-?", _ADDRESS.sub("0x?", text))


def exc_info(exc: BaseException) -> tuple:
    """What a program sees of an exception: its type, message and, for a group, its members."""
    if isinstance(exc, RecursionError):
        # Where the limit is hit depends on how many Python frames sit under a callback:
        # asyncio's loop is Python, ferroloop's native (README, differences): type only.
        return ("RecursionError",)
    info: tuple = (type(exc).__name__, norm(str(exc)))
    if isinstance(exc, BaseExceptionGroup):
        info += (tuple(exc_info(e) for e in exc.exceptions),)
    return info


def shown(value):
    """A result as the trace keeps it: exceptions (gather's return_exceptions) by type and
    message, containers item by item, anything else by repr."""
    if isinstance(value, BaseException):
        return exc_info(value)
    if isinstance(value, tuple | list):
        return tuple(shown(v) for v in value)
    return norm(repr(value))


def fut_state(fut: asyncio.Future) -> tuple:
    """A future's observable state (reading the exception marks it retrieved, on both loops)."""
    if not fut.done():
        return ("pending",)
    if fut.cancelled():
        return ("cancelled",)
    exc = fut.exception()
    if exc is not None:
        return ("exc", exc_info(exc))
    return ("result", repr(fut.result()))


class Stop(Exception):
    """Ends a coroutine body on purpose (an uncaught exception of the program's own)."""


class Proto(asyncio.Protocol):
    """Records every callback a transport makes into its pair's channel."""

    def __init__(self, run: Run, pair: int) -> None:
        self.run = run
        self.pair = pair

    def connection_made(self, transport):
        self.run.pairs[self.pair]["transport"] = transport
        self.run.cev(self.pair, "made")

    def data_received(self, data):
        self.run.cev(self.pair, "data", bytes(data))
        react = self.run.pairs[self.pair]["react"]
        if react is None:
            return
        transport = self.run.pairs[self.pair]["transport"]
        try:
            if react == "echo":
                transport.write(bytes(data))
            elif react == "close":
                transport.close()
            elif react == "pause":
                transport.pause_reading()
            elif react == "write_eof":
                transport.write_eof()
            elif react == "abort":
                transport.abort()
            self.run.cev(self.pair, "reacted", react, transport.is_closing())
        except Exception as exc:
            self.run.cev(self.pair, "react_raised", react, exc_info(exc))

    def eof_received(self):
        keep = self.run.pairs[self.pair]["keep_open"]
        self.run.cev(self.pair, "eof", keep)
        return keep

    def pause_writing(self):
        self.run.cev(self.pair, "pause_writing")

    def resume_writing(self):
        self.run.cev(self.pair, "resume_writing")

    def connection_lost(self, exc):
        self.run.cev(self.pair, "lost", None if exc is None else exc_info(exc))


class Run:
    """One program's execution on one loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, program: dict) -> None:
        self.loop = loop
        self.prog = program
        self.trace: list = []
        self.chan: dict[int, list] = defaultdict(list)
        self.handles: list = []
        self.futs: list = []
        self.pairs: list[dict] = []
        self.threads: list[threading.Thread] = []
        self.used_slots: set[int] = set()
        self.max_slot = 0
        self.past = 0
        self.started = 0
        self.errors = 0
        self.sent = 0
        self.disturbed = False
        self.final = False
        self.finished = False
        self.t0 = 0.0
        self.steps = 0
        self.lateness = 0.0
        self.closing = False
        self.end_future: asyncio.Future | None = None
        self.cur = 0
        self.timers = 0

    # ----------------------------------------------------------------- time and recording

    def bucket(self):
        """The current slot; marks the run disturbed if the clock says otherwise.

        ``cur`` is set by each slot's marker timer (``alloc``), which fires before anything
        else in the slot: an event the wall clock puts in another slot than ``cur`` (a chain
        of callbacks still running when the next slot began), or late in its slot, means the
        machine stalled the run long enough for time to decide the order.
        """
        if self.final:
            return "final"
        t = (self.loop.time() - self.t0) / SLOT
        slot = int(t)
        self.lateness = max(self.lateness, t - slot)
        if t - slot >= GUARD or slot != self.cur:
            self.disturbed = True
        return self.cur

    def mark(self, slot: int) -> None:
        """A slot's marker: from now on, events belong to ``slot``."""
        self.cur = slot

    def ev(self, *event) -> None:
        self.steps += 1
        self.trace.append((self.bucket(), *event))

    def cev(self, pair: int, kind: str, *rest) -> None:
        """Appends to a pair's channel, merging consecutive received bytes."""
        self.steps += 1
        events = self.chan[pair]
        if kind in ("data", "peer_data", "read") and events and events[-1][1] == kind:
            events[-1] = (events[-1][0], kind, events[-1][2] + rest[0])
            return
        events.append((self.bucket(), kind, *rest))

    def alloc(self, offset: int) -> int:
        """A slot of its own, ``offset`` (>= 1) slots after the current one or later, with
        its marker timer (2 % into the slot, before the slot's own timer at 5 %)."""
        slot = self.cur + max(1, offset)
        while slot in self.used_slots:
            slot += 1
        self.used_slots.add(slot)
        self.max_slot = max(self.max_slot, slot)
        self.loop.call_at(self.t0 + (slot + 0.02) * SLOT, self.mark, slot)
        return slot

    def deadline(self, slot: int) -> float:
        return self.t0 + (slot + 0.05) * SLOT

    def timer_slot(self, offset: int) -> int | None:
        """A slot for one more of the program's timers, or None (recorded) past MAX_TIMERS."""
        if self.timers >= MAX_TIMERS:
            self.ev("no_timer")
            return None
        self.timers += 1
        return self.alloc(offset)

    def delay_to(self, offset: int | None) -> float | None:
        """The delay to a fresh slot ``offset`` slots away (None: no timer left, or asked)."""
        slot = None if offset is None else self.timer_slot(offset)
        return None if slot is None else self.deadline(slot) - self.loop.time()

    def payload(self, size: int) -> bytes:
        """``size`` bytes no other send of this run repeats."""
        self.sent += 1
        unit = self.sent.to_bytes(4, "big")
        return (unit * (size // 4 + 1))[:size]

    def pick(self, seq: list, index: int):
        return seq[index % len(seq)] if seq else None

    def handler(self, loop, context) -> None:
        """The loop's exception handler: records the report."""
        if self.finished and not self.final:
            return
        exc = context.get("exception")
        keys = sorted(context)
        self.ev("handler", norm(context.get("message", "")), exc and exc_info(exc), keys)

    # ----------------------------------------------------------------- callbacks

    def run_body(self, index: int, why: str) -> None:
        """A scheduled callback: runs sync body ``index``."""
        if self.closing:
            return
        self.ev("cb", index, why)
        if self.started >= BUDGET:
            self.ev("budget")
            return
        self.started += 1
        for op in self.prog["bodies"][index % len(self.prog["bodies"])]:
            self.sync_op(op)

    def idle_body(self, index: int, slot: int) -> None:
        """What a thread sent while the loop slept: it must arrive in its own slot (a thread
        the machine delayed into a later slot would interleave with that slot's work)."""
        if slot != self.cur:
            self.disturbed = True
        self.run_body(index, "idle")

    def done_cb(self, index: int, fidx: int, fut) -> None:
        self.ev("done_cb", fidx, fut_state(fut))
        self.run_body(index, "done")

    def make_exc(self, kind: int) -> BaseException:
        self.errors += 1
        if kind == 0:
            return ValueError(f"e{self.errors}")
        if kind == 1:
            return RuntimeError(f"r{self.errors}")
        if kind == 3:
            # Leaves the loop: run_forever re-raises it (the harness records it, goes on).
            return SystemExit(f"x{self.errors}")
        return Stop(f"s{self.errors}")

    def sync_op(self, op: tuple) -> None:
        """Runs one synchronous operation, recording what it returned or raised."""
        kind = op[0]
        loop = self.loop
        try:
            if kind == "soon":
                self.handles.append(loop.call_soon(self.run_body, op[1], "soon"))
            elif kind == "later":
                delay = self.delay_to(op[2])
                if delay is not None:
                    self.handles.append(loop.call_later(delay, self.run_body, op[1], "later"))
            elif kind == "at":
                slot = self.timer_slot(op[2])
                if slot is not None:
                    when = self.deadline(slot)
                    self.handles.append(loop.call_at(when, self.run_body, op[1], "at"))
            elif kind == "past":
                self.past += 1
                when = self.t0 - self.past * 1e-3
                self.handles.append(loop.call_at(when, self.run_body, op[1], "past"))
            elif kind == "cancel":
                handle = self.pick(self.handles, op[1])
                if handle is not None:
                    before = handle.cancelled()
                    handle.cancel()
                    self.ev("cancel", op[1] % len(self.handles), before, handle.cancelled())
            elif kind == "raise":
                raise self.make_exc(op[1])
            elif kind == "fut":
                self.futs.append(loop.create_future())
                self.ev("fut", len(self.futs) - 1)
            elif kind == "task":
                name = f"t{len(self.futs)}"
                self.futs.append(loop.create_task(self.coro(op[1]), name=name))
                self.ev("task", len(self.futs) - 1)
            elif kind == "set_result":
                fut = self.pick(self.futs, op[1])
                if fut is not None:
                    self.ev("set_result", op[1] % len(self.futs))
                    fut.set_result(op[2])
            elif kind == "set_exc":
                fut = self.pick(self.futs, op[1])
                if fut is not None:
                    self.ev("set_exc", op[1] % len(self.futs))
                    fut.set_exception(self.make_exc(op[2]))
            elif kind == "fcancel":
                fut = self.pick(self.futs, op[1])
                if fut is not None:
                    msg = None if op[2] is None else f"m{op[2]}"
                    self.ev("fcancel", op[1] % len(self.futs), fut.cancel(msg))
            elif kind == "uncancel":
                fut = self.pick(self.futs, op[1])
                if isinstance(fut, asyncio.Task):
                    self.ev("uncancel", op[1] % len(self.futs), fut.uncancel())
            elif kind == "state":
                fut = self.pick(self.futs, op[1])
                if fut is not None:
                    extra = fut.cancelling() if isinstance(fut, asyncio.Task) else None
                    self.ev("state", op[1] % len(self.futs), fut_state(fut), extra)
            elif kind == "add_cb":
                fut = self.pick(self.futs, op[1])
                if fut is not None:
                    fidx = op[1] % len(self.futs)
                    fut.add_done_callback(functools.partial(self.done_cb, op[2], fidx))
            elif kind == "thread":
                bodies = op[1]

                def send():
                    for b in bodies:
                        loop.call_soon_threadsafe(self.run_body, b, "threadsafe")

                thread = threading.Thread(target=send)
                thread.start()
                thread.join()
                self.ev("joined")
            elif kind == "thread_idle":
                slot = self.timer_slot(op[2])
                if slot is None:
                    return
                # Well after the slot's marker (asyncio rounds its poll timeout up to 1 ms).
                at = self.t0 + (slot + 0.3) * SLOT
                body = op[1]

                def later_send():
                    time.sleep(max(0.0, at - time.monotonic()))
                    with contextlib.suppress(RuntimeError):  # the run ended (loop closed)
                        loop.call_soon_threadsafe(self.idle_body, body, slot)

                thread = threading.Thread(target=later_send)
                self.threads.append(thread)
                thread.start()
            elif kind == "stop":
                loop.stop()
                self.ev("stop")
            else:
                raise AssertionError(f"unknown op {op!r}")
        except Stop:
            raise
        except (Exception, asyncio.CancelledError) as exc:
            if kind == "raise":
                raise
            self.ev("raised", kind, exc_info(exc))

    # ----------------------------------------------------------------- coroutines

    def awaitable(self, ref: tuple):
        """A future, a task, or a fresh coroutine from a reference of the program's."""
        if ref[0] == "c":
            return self.coro(ref[1])
        return self.pick(self.futs, ref[1])

    async def coro(self, index: int):
        """Coroutine body ``index``: its result is its index (so gather results show order)."""
        self.ev("coro", index)
        if self.started >= BUDGET:
            self.ev("budget")
            return -1
        self.started += 1
        for op in self.prog["coros"][index % len(self.prog["coros"])]:
            await self.async_op(op)
        self.ev("coro_end", index)
        return index

    async def guarded(self, label: str, catch: bool, awaitable):
        """Awaits, recording the outcome; re-raises unless ``catch``."""
        try:
            result = await awaitable
        except (Exception, asyncio.CancelledError) as exc:
            self.ev(label, "raised", exc_info(exc))
            if not catch:
                raise
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None:
                self.ev(label, "uncancel", task.uncancel())
            return None
        self.ev(label, "ok", shown(result))
        return result

    async def async_op(self, op: tuple) -> None:
        kind = op[0]
        if kind == "sleep0":
            await self.guarded("sleep0", op[1], asyncio.sleep(0))
        elif kind == "sleep":
            delay = self.delay_to(op[1])
            if delay is not None:
                await self.guarded("sleep", op[2], asyncio.sleep(delay))
        elif kind == "await":
            target = self.awaitable(op[1])
            if target is not None:
                await self.guarded("await", op[2], target)
        elif kind == "gather":
            items = [self.awaitable(r) for r in op[1]]
            items = [i for i in items if i is not None]
            await self.guarded("gather", op[3], asyncio.gather(*items, return_exceptions=op[2]))
        elif kind == "wait":
            items = {self.pick(self.futs, i) for i in op[1]} - {None}
            if items:
                timeout = None if op[3] is None else self.delay_to(op[3])
                when = (asyncio.ALL_COMPLETED, asyncio.FIRST_COMPLETED, asyncio.FIRST_EXCEPTION)
                order = {id(f): n for n, f in enumerate(self.futs)}

                async def waited():
                    done, pending = await asyncio.wait(
                        items, timeout=timeout, return_when=when[op[2]]
                    )
                    return (
                        sorted(order[id(f)] for f in done),
                        sorted(order[id(f)] for f in pending),
                    )

                await self.guarded("wait", op[4], waited())
        elif kind == "wait_for":
            target = self.awaitable(op[1])
            if target is not None:
                await self.guarded(
                    "wait_for", op[3], asyncio.wait_for(target, self.delay_to(op[2]))
                )
        elif kind == "shield":
            target = self.awaitable(op[1])
            if target is not None:
                await self.guarded("shield", op[2], asyncio.shield(target))
        elif kind == "taskgroup":

            async def group():
                async with asyncio.TaskGroup() as tg:
                    for c in op[1]:
                        tg.create_task(self.coro(c))
                    for inner in op[2]:
                        await self.async_op(inner)
                return "tg-done"

            await self.guarded("taskgroup", op[3], group())
        elif kind == "timeout":

            async def bounded():
                async with asyncio.timeout(self.delay_to(op[1])) as cm:
                    try:
                        for inner in op[2]:
                            await self.async_op(inner)
                    finally:
                        self.ev("timeout_expired", cm.expired())
                return "in-time"

            await self.guarded("timeout", op[3], bounded())
        elif kind == "catch":
            try:
                for inner in op[1]:
                    await self.async_op(inner)
            except (Exception, asyncio.CancelledError) as exc:
                self.ev("caught", exc_info(exc))
                task = asyncio.current_task()
                if op[2] and task is not None:
                    self.ev("uncancelled", task.uncancel())
        else:
            # A synchronous operation; its "raise" ends the coroutine (the task's exception).
            self.sync_op(op)

    # ----------------------------------------------------------------- sockets

    def io_step(self, ops: list) -> None:
        self.ev("io_step")
        for op in ops:
            try:
                self.io_op(op)
            except (Exception, asyncio.CancelledError) as exc:
                self.ev("io_raised", op[0], exc_info(exc))

    def make_pair(self, keep_open: bool, react: str | None) -> None:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        self.pairs.append(
            dict(
                a=a,
                b=b,
                transport=None,
                connecting=False,
                reader=False,
                writer=False,
                keep_open=keep_open,
                react=react,
                peer_open=True,
            )
        )
        self.cev(len(self.pairs) - 1, "pair")

    def on_read(self, p: int) -> None:
        pair = self.pairs[p]
        try:
            data = pair["a"].recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.cev(p, "read_error", exc_info(exc))
            self.loop.remove_reader(pair["a"])
            pair["reader"] = False
            return
        if data:
            self.cev(p, "read", data)
        else:
            self.cev(p, "read_eof")
            self.loop.remove_reader(pair["a"])
            pair["reader"] = False

    def on_write(self, p: int) -> None:
        pair = self.pairs[p]
        self.cev(p, "writable")
        self.loop.remove_writer(pair["a"])
        pair["writer"] = False

    async def connect(self, p: int) -> None:
        pair = self.pairs[p]
        try:
            await self.loop.connect_accepted_socket(lambda: Proto(self, p), sock=pair["a"])
        except Exception as exc:  # pragma: no cover - recorded, compared
            self.cev(p, "connect_error", exc_info(exc))

    def io_op(self, op: tuple) -> None:
        kind = op[0]
        loop = self.loop
        if not self.pairs:
            return
        p = op[1] % len(self.pairs)
        pair = self.pairs[p]
        raw = not pair["connecting"] and pair["a"].fileno() >= 0
        transport = pair["transport"]
        if kind == "reader" and raw and not pair["reader"]:
            loop.add_reader(pair["a"], self.on_read, p)
            pair["reader"] = True
            self.cev(p, "add_reader")
        elif kind == "rm_reader" and raw:
            self.cev(p, "rm_reader", loop.remove_reader(pair["a"]))
            pair["reader"] = False
        elif kind == "writer" and raw and not pair["writer"]:
            loop.add_writer(pair["a"], self.on_write, p)
            pair["writer"] = True
            self.cev(p, "add_writer")
        elif kind == "rm_writer" and raw:
            self.cev(p, "rm_writer", loop.remove_writer(pair["a"]))
            pair["writer"] = False
        elif kind == "connect" and raw and not pair["reader"] and not pair["writer"]:
            pair["connecting"] = True
            self.cev(p, "connect")
            loop.create_task(self.connect(p))
        elif kind == "peer_send" and pair["peer_open"]:
            data = self.payload(SIZES[op[2] % len(SIZES)])
            try:
                sent = pair["b"].send(data)
            except OSError as exc:
                self.cev(p, "peer_send_error", exc_info(exc))
            else:
                self.cev(p, "peer_send", sent)
        elif kind == "peer_recv" and pair["peer_open"]:
            total = b""
            while True:
                try:
                    chunk = pair["b"].recv(1 << 20)
                except BlockingIOError:
                    break
                except OSError as exc:
                    self.cev(p, "peer_recv_error", exc_info(exc))
                    break
                if not chunk:
                    self.cev(p, "peer_eof")
                    break
                total += chunk
            if total:
                self.cev(p, "peer_data", total)
        elif kind == "peer_shut" and pair["peer_open"]:
            pair["b"].shutdown(socket.SHUT_WR)
            self.cev(p, "peer_shut")
        elif kind == "peer_close" and pair["peer_open"]:
            pair["b"].close()
            pair["peer_open"] = False
            self.cev(p, "peer_close")
        elif transport is not None:
            self.transport_op(p, transport, op)

    def transport_op(self, p: int, transport, op: tuple) -> None:
        kind = op[0]
        try:
            if kind == "t_write":
                transport.write(self.payload(SIZES[op[2] % len(SIZES)]))
                self.cev(p, "t_write", transport.get_write_buffer_size())
            elif kind == "t_writelines":
                transport.writelines([self.payload(SIZES[op[2] % len(SIZES)]), self.payload(7)])
                self.cev(p, "t_writelines", transport.get_write_buffer_size())
            elif kind == "t_write_eof":
                transport.write_eof()
                self.cev(p, "t_write_eof", transport.can_write_eof())
            elif kind == "t_pause":
                transport.pause_reading()
                self.cev(p, "t_pause", transport.is_reading())
            elif kind == "t_resume":
                transport.resume_reading()
                self.cev(p, "t_resume", transport.is_reading())
            elif kind == "t_abort":
                transport.abort()
                self.cev(p, "t_abort", transport.is_closing())
            elif kind == "t_close":
                transport.close()
                self.cev(p, "t_close", transport.is_closing())
            elif kind == "t_limits":
                transport.set_write_buffer_limits(high=op[2])
                self.cev(p, "t_limits", transport.get_write_buffer_limits())
            elif kind == "t_state":
                self.cev(
                    p,
                    "t_state",
                    transport.is_closing(),
                    transport.is_reading(),
                    transport.get_write_buffer_size(),
                )
        except (Exception, asyncio.CancelledError) as exc:
            self.cev(p, "t_raised", kind, exc_info(exc))

    # ----------------------------------------------------------------- the whole run

    def check_end(self, slot: int) -> None:
        """The finisher: ends the run once no slot after its own was allocated."""
        if self.max_slot > slot:
            later = self.alloc(self.max_slot - self.cur + 1)
            self.loop.call_at(self.deadline(later), self.check_end, later)
            return
        self.finished = True
        if self.end_future is not None:
            self.end_future.set_result(None)
        else:
            self.loop.stop()

    def start(self) -> None:
        """The first callback: time starts here (a stall before it shifts nothing)."""
        loop = self.loop
        self.t0 = loop.time()
        for offset, ops in self.prog["io"]:
            loop.call_at(self.deadline(self.alloc(offset)), self.io_step, ops)
        end = self.alloc(1)
        loop.call_at(self.deadline(end), self.check_end, end)
        self.ev("main")
        for op in self.prog["main"]:
            self.sync_op(op)

    def execute(self) -> None:
        loop = self.loop
        loop.set_exception_handler(self.handler)
        loop.set_debug(self.prog.get("debug", False))
        loop.slow_callback_duration = 10.0  # its warnings depend on the machine's speed
        self.final = True  # the pairs are made before time starts
        for keep_open, react in self.prog["pairs"]:
            self.make_pair(keep_open, react)
        self.final = False
        loop.call_soon(self.start)
        restarts = 0
        # The program's driver: run_forever (ended by stop()), or run_until_complete of a
        # future the finisher completes (a stop() of the program's ends it early: it raises).
        if self.prog.get("until", False):
            self.end_future = loop.create_future()
        while not self.finished:
            try:
                if self.end_future is None:
                    loop.run_forever()
                else:
                    loop.run_until_complete(self.end_future)
            except (SystemExit, KeyboardInterrupt, RuntimeError) as exc:
                self.ev("escaped", exc_info(exc))
            if not self.finished:
                restarts += 1
                self.ev("run_forever_returned")
                if restarts > 100:
                    self.ev("too_many_restarts")
                    break
        self.final = True
        self.finish()

    def settle(self, awaitable) -> None:
        """run_until_complete, restarted when the program's own stop() ends it early."""
        fut = asyncio.ensure_future(awaitable, loop=self.loop)
        for _ in range(20):
            try:
                self.loop.run_until_complete(fut)
                return
            except (SystemExit, KeyboardInterrupt) as exc:
                self.ev("escaped", exc_info(exc))
            except RuntimeError:
                if fut.done():
                    raise
                self.ev("run_forever_returned")
        fut.cancel()

    def finish(self) -> None:
        loop = self.loop
        for thread in self.threads:
            thread.join()
        pending = [t for t in self.futs if isinstance(t, asyncio.Task) and not t.done()]
        for _ in range(3):
            if not pending:
                break
            for task in pending:
                try:
                    task.cancel()
                except RecursionError:  # a cycle of gathers (the same on both loops)
                    self.ev("cancel_recursion")
            self.settle(asyncio.wait(pending, timeout=10 * SLOT))
            pending = [t for t in pending if not t.done()]
        for n, fut in enumerate(self.futs):
            self.ev("final", n, fut_state(fut))
        for p, pair in enumerate(self.pairs):
            transport = pair["transport"]
            if transport is not None and not transport.is_closing():
                transport.abort()
            self.settle(asyncio.sleep(0))
            if pair["reader"]:
                loop.remove_reader(pair["a"])
            if pair["writer"]:
                loop.remove_writer(pair["a"])
            pair["a"].close()
            pair["b"].close()
            self.cev(p, "end")
        for _ in range(3):
            self.settle(asyncio.sleep(0))
        self.finished = True
        self.final = False  # the handler ignores what closing reports from here on
        self.closing = True  # callbacks still queued do nothing (no task made while closing)
        loop.run_until_complete(loop.shutdown_asyncgens())
        for thread in self.threads:
            thread.join()
        loop.close()

    def result(self) -> tuple:
        return (self.trace, dict(self.chan))


def run_program(factory, program: dict) -> Run:
    """Runs ``program`` on a new loop from ``factory``; the returned Run holds the trace."""
    loop = factory()
    run = Run(loop, program)
    try:
        run.execute()
    finally:
        if not loop.is_closed():
            loop.close()
        # Tasks a program left stuck are collected now, inside the test (whose warning filter
        # covers what their coroutines report when closed), not in a later test.
        gc.collect()
    return run
