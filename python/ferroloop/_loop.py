"""The Python half of ferroloop's event loop: cold-path glue around the native ``LoopCore``.

Everything that runs once per callback or per iteration lives in Rust (``src/event_loop/``).
What is here runs once per ``run_forever()`` call, per executor job, or per error: setting the
running loop and the async-generator hooks, the signal wakeup descriptor, executors, the
exception handler, and shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import errno
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
import weakref
from asyncio import coroutines, events, futures, tasks
from collections.abc import Callable
from typing import Any

from . import _fork
from ._connections import ConnectionAPI
from ._datagram import DatagramAPI
from ._ferroloop import LoopCore, _check_callback
from ._inspect_api import InspectAPI
from ._pipes import PipeAPI
from ._sendfile import SendfileAPI
from ._server import ServerAPI
from ._sockets import SocketAPI
from ._subprocess import SubprocessAPI
from ._tls import TLSAPI

logger = logging.getLogger("asyncio")

#: Frames kept per coroutine origin in debug mode (asyncio's own depth).
DEBUG_STACK_DEPTH = 10

#: Keys of an exception-handler context that the default handler prints specially.
_TRACEBACK_KEYS = {
    "source_traceback": "Object created at (most recent call last):\n",
    "handle_traceback": "Handle created at (most recent call last):\n",
}


def _debug_requested() -> bool:
    """True if ``-X dev`` or ``PYTHONASYNCIODEBUG`` asks for asyncio's debug mode.

    Asks asyncio itself, so that tools (and CPython's tests) that patch its switch are obeyed.
    """
    return bool(coroutines._is_debug_mode())


def _watchdog_requested() -> float | None:
    """The threshold ``FERROLOOP_WATCHDOG`` asks for (seconds), if any; a value that is not
    a positive number is ignored with a RuntimeWarning (a typo must not stop the program)."""
    value = os.environ.get("FERROLOOP_WATCHDOG", "").strip()
    if not value:
        return None
    try:
        threshold = float(value)
    except ValueError:
        threshold = float("nan")
    if not (0.0 < threshold < float("inf")):
        warnings.warn(
            f"FERROLOOP_WATCHDOG={value!r} ignored: expected a positive number of seconds",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return threshold


def _ignore_signal(signum: int, frame: object) -> None:
    """Python-level handler of the signals the loop handles: the loop reads their numbers
    from the wakeup fd and schedules its callbacks itself (see ``add_signal_handler``)."""


def _stop_loop_when_done(fut: asyncio.Future) -> None:
    """Done-callback of ``run_until_complete``: stops the future's loop.

    A future that ended with SystemExit/KeyboardInterrupt already broke out of run_forever.
    """
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            return
    futures._get_loop(fut).stop()


#: asyncio's coroutine-function test; 3.14 deprecates the public name (it warns), asyncio
#: itself calls the private one.
if hasattr(coroutines, "_iscoroutinefunction"):
    _is_coroutine_function = coroutines._iscoroutinefunction
else:
    _is_coroutine_function = coroutines.iscoroutinefunction

#: Python 3.12+ calls a custom exception handler in the context of the task, future or
#: handle the error is about (gh-96704), so it sees the context variables they set.
_HANDLER_IN_CONTEXT = sys.version_info >= (3, 12)


def _context_of(context: dict) -> Any:
    """The contextvars context to run the custom exception handler in, or None."""
    thing = context.get("task")
    if thing is None:
        thing = context.get("future")  # a Task may be reported as the future
    if thing is None:
        thing = context.get("handle")
    get_context = getattr(thing, "get_context", None) if thing is not None else None
    run_in = get_context() if get_context is not None else None
    return run_in if hasattr(run_in, "run") else None


def _nothing() -> None:
    """A callback that only wakes the loop."""


def _work_done(future: asyncio.Future) -> None:
    """Done callback of an executor job's future under virtual time."""
    future.get_loop()._outstanding_work(-1)


class EventLoop(
    LoopCore,
    SocketAPI,
    ConnectionAPI,
    ServerAPI,
    DatagramAPI,
    SendfileAPI,
    TLSAPI,
    PipeAPI,
    SubprocessAPI,
    InspectAPI,
    asyncio.AbstractEventLoop,
):
    """asyncio's event loop, implemented in Rust. Create it with ``ferroloop.new_event_loop()``.

    ``LoopCore`` (native) runs the iteration and scheduling; each mixin after it adds one
    concept of the loop's API in its own module: ``SocketAPI`` (``_sockets``), ``ConnectionAPI``
    (``_connections``), ``ServerAPI`` (``_server``), ``DatagramAPI`` (``_datagram``),
    ``SendfileAPI`` (``_sendfile``), ``TLSAPI`` (``_tls``), ``PipeAPI`` (``_pipes``),
    ``SubprocessAPI`` (``_subprocess``), ``InspectAPI`` (``_inspect``: ``stats()``,
    ``serve_inspector()``); this class adds the cold-path glue.
    """

    def __init__(
        self,
        *,
        virtual_time: bool = False,
        autojump_threshold: float = 0.0,
        wait_for_executor: bool = True,
        watchdog: float | None = None,
    ) -> None:
        self._virtual_time = bool(virtual_time)
        # Virtual time: executor jobs are pending I/O the clock does not jump past.
        self._executor_holds_time = self._virtual_time and bool(wait_for_executor)
        self.slow_callback_duration = 0.1
        self._exception_handler = None
        self._default_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_shutdown_called = False
        self._asyncgens: weakref.WeakSet = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._origin_tracking_saved_depth: int | None = None
        # signal number -> (callback, args, context) registered by add_signal_handler
        self._signal_handlers: dict[int, tuple[Any, tuple, contextvars.Context]] = {}
        self.set_debug(_debug_requested())
        _fork.track(self)
        if virtual_time:
            try:
                self._enable_virtual_time(float(autojump_threshold))
            except BaseException:
                self.close()
                raise
        if watchdog is None:
            watchdog = _watchdog_requested()
        if watchdog is not None:
            try:
                self.set_watchdog(watchdog)
            except BaseException:
                self.close()
                raise

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def __del__(self, _warn=warnings.warn) -> None:
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # ------------------------------------------------------------------ debug mode

    def set_debug(self, enabled: bool) -> None:
        """Turns debug mode on or off (also coroutine origin tracking while running)."""
        super().set_debug(enabled)
        if self.is_running():
            self.call_soon_threadsafe(self._track_coroutine_origins, bool(enabled))

    def _track_coroutine_origins(self, enabled: bool) -> None:
        """In debug mode, coroutines record where they were created (for 'never awaited')."""
        if enabled and self._origin_tracking_saved_depth is None:
            self._origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(DEBUG_STACK_DEPTH)
        elif not enabled and self._origin_tracking_saved_depth is not None:
            sys.set_coroutine_origin_tracking_depth(self._origin_tracking_saved_depth)
            self._origin_tracking_saved_depth = None

    # ------------------------------------------------------------------ running

    def _check_not_running(self) -> None:
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def run_forever(self) -> None:
        """Runs callbacks and I/O until ``stop()`` is called."""
        self._check_closed()
        self._check_not_running()
        saved_hooks = sys.get_asyncgen_hooks()
        saved_wakeup_fd = self._install_signal_wakeup()
        try:
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._track_coroutine_origins(self.get_debug())
            if self._inspector is None and os.environ.get("FERROLOOP_INSPECT", "0") not in (
                "",
                "0",
            ):
                self.serve_inspector()
            self._run_until_stopped()
        finally:
            self._track_coroutine_origins(False)
            events._set_running_loop(None)
            sys.set_asyncgen_hooks(*saved_hooks)
            self._restore_signal_wakeup(saved_wakeup_fd)

    def _install_signal_wakeup(self) -> int | None:
        """Points ``signal.set_wakeup_fd`` at the loop so that signals interrupt its poll.

        Only the main thread may do this; returns the previous descriptor (None: untouched).
        """
        if threading.current_thread() is not threading.main_thread():
            return None
        try:
            return signal.set_wakeup_fd(self._signal_wakeup_fd(), warn_on_full_buffer=False)
        except (ValueError, OSError):
            return None

    def _restore_signal_wakeup(self, saved: int | None) -> None:
        if saved is None:
            return
        try:
            signal.set_wakeup_fd(saved)
        except (ValueError, OSError):
            pass

    def run_until_complete(self, future: Any) -> Any:
        """Runs until ``future`` (a Future, Task or coroutine) is done; returns its result."""
        self._check_closed()
        self._check_not_running()
        wrapped = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if wrapped:
            # A task made here is ours to wait for: never report it as destroyed-pending.
            future._log_destroy_pending = False
        future.add_done_callback(_stop_loop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if wrapped and future.done() and not future.cancelled():
                # Mark the exception retrieved: it propagates to the caller right now.
                future.exception()
            raise
        finally:
            future.remove_done_callback(_stop_loop_when_done)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self) -> None:
        """Closes the loop: pending callbacks are dropped, the default executor is shut down."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug("Close %r", self)
        for signum in list(self._signal_handlers):
            self.remove_signal_handler(signum)
        self._close_inspector()
        self._close_core()
        self._executor_shutdown_called = True
        executor, self._default_executor = self._default_executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    # --------------------------------------------------------- readers/writers

    def _ensure_fd_no_transport(self, fd) -> None:
        """asyncio's refusal to let add_reader & co. touch a transport's descriptor."""
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"Invalid file object: {fd!r}") from None
        transport = self._transport_for_fd(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    def add_reader(self, fd, callback, *args) -> None:
        """Calls ``callback(*args)`` whenever ``fd`` is readable (level-triggered)."""
        self._ensure_fd_no_transport(fd)
        self._add_reader(fd, callback, *args)

    def add_writer(self, fd, callback, *args) -> None:
        """Calls ``callback(*args)`` whenever ``fd`` is writable (level-triggered)."""
        self._ensure_fd_no_transport(fd)
        self._add_writer(fd, callback, *args)

    def remove_reader(self, fd) -> bool:
        """Stops watching ``fd`` for reading; True if a reader was registered."""
        self._ensure_fd_no_transport(fd)
        return self._remove_reader(fd)

    def remove_writer(self, fd) -> bool:
        """Stops watching ``fd`` for writing; True if a writer was registered."""
        self._ensure_fd_no_transport(fd)
        return self._remove_writer(fd)

    # ------------------------------------------------------------------- signals

    @staticmethod
    def _validate_signal(sig: object) -> int:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")
        return sig

    def add_signal_handler(self, sig: int, callback, *args) -> None:
        """Runs ``callback(*args)`` as a loop callback whenever signal ``sig`` arrives.

        Python's own handler for ``sig`` becomes one that does nothing: the interpreter writes
        the signal's number to the wakeup fd (the loop's pipe) whatever Python-level handler is
        installed, and the loop schedules the callback when it reads that number. So the
        callback still runs if the program swaps the Python-level handler and puts it back.
        """
        if asyncio.iscoroutine(callback) or _is_coroutine_function(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._validate_signal(sig)
        self._check_closed()
        try:
            # Only the main thread of the main interpreter may do this (ValueError otherwise).
            signal.set_wakeup_fd(self._signal_wakeup_fd(), warn_on_full_buffer=False)
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc)) from None
        self._signal_handlers[sig] = (callback, args, contextvars.copy_context())
        try:
            signal.signal(sig, _ignore_signal)
            # Let system calls resume after the signal instead of failing with EINTR.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            self._release_wakeup_fd_if_unused()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise

    def _handle_signal(self, signum: int) -> None:
        """Called by the native loop for each signal number read from the wakeup fd."""
        registered = self._signal_handlers.get(signum)
        if registered is not None and not self.is_closed():
            callback, args, context = registered
            self.call_soon(callback, *args, context=context)

    def remove_signal_handler(self, sig: int) -> bool:
        """Removes the handler of ``sig``, restoring the default; False if there was none."""
        self._validate_signal(sig)
        if self._signal_handlers.pop(sig, None) is None:
            return False
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, default)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        self._release_wakeup_fd_if_unused()
        return True

    def _release_wakeup_fd_if_unused(self) -> None:
        """Drops the loop's pipe as the signal wakeup fd once no handler needs it."""
        if self._signal_handlers or self.is_running():
            return
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError) as exc:
            logger.info("set_wakeup_fd(-1) failed: %s", exc)

    # ------------------------------------------------------------ async generators

    def _asyncgen_firstiter_hook(self, agen) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen) -> None:
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self) -> None:
        """Closes every async generator still suspended (``aclose()``), reporting failures."""
        self._asyncgens_shutdown_called = True
        pending = list(self._asyncgens)
        self._asyncgens.clear()
        if not pending:
            return
        outcomes = await tasks.gather(*(agen.aclose() for agen in pending), return_exceptions=True)
        for agen, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, Exception):
                self.call_exception_handler(
                    {
                        "message": "an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": outcome,
                        "asyncgen": agen,
                    }
                )

    # ------------------------------------------------------------------ executors

    def run_in_executor(self, executor, func, *args) -> asyncio.Future:
        """Runs ``func(*args)`` in ``executor`` (None: the default thread pool)."""
        self._check_closed()
        if self.get_debug():
            _check_callback(func, "run_in_executor")
        if executor is None:
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            executor = self._default_executor
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        future = futures.wrap_future(executor.submit(func, *args), loop=self)
        if self._executor_holds_time:
            # The job is pending I/O: the virtual clock does not jump past it.
            self._outstanding_work(1)
            future.add_done_callback(_work_done)
        return future

    def _lookup_is_io(self, future: asyncio.Future) -> asyncio.Future:
        """A name lookup in the executor is the loop's own I/O: under virtual time the clock
        waits for it even with ``wait_for_executor=False`` (then ``run_in_executor`` did not
        count it)."""
        if self._virtual_time and not self._executor_holds_time:
            self._outstanding_work(1)
            future.add_done_callback(_work_done)
        return future

    def set_default_executor(self, executor) -> None:
        """Sets the ThreadPoolExecutor ``run_in_executor(None, ...)`` uses."""
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor instance")
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Joins the default executor's threads without blocking the loop."""
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        joined = self.create_future()

        def join_in_thread() -> None:
            try:
                executor.shutdown(wait=True)
                if not self.is_closed():
                    self.call_soon_threadsafe(futures._set_result_unless_cancelled, joined, None)
            except Exception as exc:  # reported through the future
                if not self.is_closed():
                    self.call_soon_threadsafe(joined.set_exception, exc)

        joiner = threading.Thread(target=join_in_thread, name="ferroloop-executor-shutdown")
        joiner.start()
        release = self._hold_time_for_join(joiner, timeout) if self._virtual_time else None
        try:
            async with asyncio.timeout(timeout):
                await joined
        except TimeoutError:
            warnings.warn(
                f"The executor did not finishing joining its threads within {timeout} seconds.",
                RuntimeWarning,
                stacklevel=2,
            )
            executor.shutdown(wait=False)
        else:
            joiner.join()
        finally:
            if release is not None:
                release()

    def _hold_time_for_join(
        self, joiner: threading.Thread, timeout: float | None
    ) -> Callable[[], None]:
        """Virtual time: the executor's join is pending I/O, so the clock does not jump to
        the join's ``timeout`` while the threads finish; but only for ``timeout`` real
        seconds (a thread that never ends must not hang the loop): then the hold goes, the
        clock jumps, and the timeout fires at its deadline in the loop's time, as in asyncio.
        Returns the function that ends the hold (once, from any thread; no lock taken)."""
        held = [True]

        def release() -> None:
            try:
                held.pop()  # atomic: only the first caller gets past it
            except IndexError:
                return
            self._outstanding_work(-1)

        def watch() -> None:  # ends with the join, or after ``timeout`` real seconds
            joiner.join(timeout)
            if joiner.is_alive():
                release()
                try:
                    self.call_soon_threadsafe(_nothing)  # wakes the loop to plan its jump
                except RuntimeError:  # closed meanwhile
                    pass

        self._outstanding_work(1)
        if timeout is not None:
            threading.Thread(target=watch, name="ferroloop-executor-join-timeout").start()
        return release

    # ---------------------------------------------------------- exception handling

    def get_exception_handler(self):
        """The custom exception handler, or None."""
        return self._exception_handler

    def set_exception_handler(self, handler) -> None:
        """Sets ``handler(loop, context)`` as the exception handler (None: the default)."""
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context: dict) -> None:
        """Logs ``context`` on the ``asyncio`` logger in asyncio's format."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info = (type(exception), exception, exception.__traceback__) if exception else False
        lines = [message]
        for key in sorted(context):
            if key in ("message", "exception"):
                continue
            value = context[key]
            if key in _TRACEBACK_KEYS:
                formatted = "".join(traceback.format_list(value)).rstrip()
                lines.append(f"{key}: {_TRACEBACK_KEYS[key]}{formatted}")
            else:
                lines.append(f"{key}: {value!r}")
        logger.error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context: dict) -> None:
        """Passes ``context`` to the exception handler; never lets the handler's own error out."""
        handler = self._exception_handler
        if handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            run_in = _context_of(context) if _HANDLER_IN_CONTEXT else None
            if run_in is not None:
                run_in.run(handler, self, context)
            else:
                handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error(
                    "Exception in default exception handler while handling an "
                    "unexpected error in custom exception handler",
                    exc_info=True,
                )
