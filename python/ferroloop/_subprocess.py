"""The loop's subprocess API: ``subprocess_exec``, ``subprocess_shell`` and their transport.

How a child is run:

* spawned natively (a vfork-style clone and exec in Rust, ``user``, ``group``, ``extra_groups``
  and ``umask`` included: ``_spawn.py``, ``src/process/spawn.rs``), set up as
  ``subprocess.Popen`` sets it up and failing with the same exceptions (exec failures raise
  ``FileNotFoundError``/``PermissionError`` naming the program); ``preexec_fn`` goes through
  ``subprocess.Popen`` as in asyncio;
* watched by a native ``ChildWatch`` (``src/process/``): its pidfd sits in the loop's poller
  as an ordinary reader, and when it turns readable the child is reaped with
  ``waitid(P_PIDFD)``: that child only, once, with no thread and no SIGCHLD handler. Without
  kernel pidfd support, one daemon thread per child blocks in ``waitpid(pid)`` (GIL released)
  and posts the status with ``call_soon_threadsafe`` (asyncio's ``ThreadedChildWatcher``);
* its pipes are the loop's native pipe transports (``connect_read_pipe`` /
  ``connect_write_pipe``).

The transport's protocol sees asyncio's order: ``connection_made`` once every pipe is
connected, ``pipe_data_received`` and ``pipe_connection_lost`` per pipe, ``process_exited``,
and ``connection_lost`` only once the process has exited and every pipe is closed; ``_wait()``
(used by ``asyncio.subprocess``) resolves right after ``connection_lost``.

The pipes are connected in the call that spawns the child, not in a task awaiting
``connect_read_pipe``/``connect_write_pipe`` one after the other (asyncio's way): every
pipe transport, then ``connection_made``, then the return of ``subprocess_exec`` are
scheduled at once, in that order, so nothing the child does can reach the protocol before
``connection_made`` (a spawn costs one task, its futures and a few loop iterations less).
A loop whose ``connect_read_pipe``/``connect_write_pipe`` were replaced (a test wrapping them)
gets asyncio's way, through the replacements, with the protocol calls that come before
``connection_made`` held and replayed after it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import subprocess
import sys
import threading
import warnings
from asyncio import base_subprocess
from typing import Any

from ._ferroloop import ChildWatch, ReadPipeTransport, WritePipeTransport
from ._pipes import PipeAPI
from ._spawn import spawn

logger = logging.getLogger("asyncio")

#: Whether the running Python's asyncio wakes ``Process.wait()`` as soon as the child exits
#: (gh-119710, CPython 3.14's subprocess transport), rather than once its pipes are closed too
#: (a grandchild holding them open would keep ``wait()`` waiting). Read from the stdlib itself:
#: its ``_process_exited`` touches the exit waiters only where it wakes them.
_WAIT_RETURNS_AT_EXIT = (
    "_exit_waiters" in base_subprocess.BaseSubprocessTransport._process_exited.__code__.co_names
)

#: Set (to anything but "" or "0") to watch children with waiter threads instead of pidfds.
_FORCE_THREADS = os.environ.get("FERROLOOP_NO_PIDFD", "") not in ("", "0")

#: Set (to anything but "" or "0") to start every child with ``subprocess.Popen``.
_FORCE_POPEN = os.environ.get("FERROLOOP_SPAWN_POPEN", "") not in ("", "0")

#: Whether ``process_exited`` is scheduled one iteration later than the reap (3.11's child
#: watcher callback goes through ``call_soon_threadsafe`` then ``call_soon``; 3.12+ through
#: ``call_soon_threadsafe`` only).
_EXIT_TWO_HOPS = sys.version_info < (3, 12)

#: Whether ``close()`` ignores PermissionError from killing the child (3.13+).
_CLOSE_IGNORES_PERMISSION = sys.version_info >= (3, 13)

_STD_NAMES = {0: "stdin", 1: "stdout", 2: "stderr"}


def _pipe_methods_replaced(loop: Any) -> bool:
    """Whether ``connect_read_pipe`` or ``connect_write_pipe`` is not the loop's own (replaced
    on the instance or in a subclass): the pipes are then connected through them."""
    cls = type(loop)
    return (
        cls.connect_read_pipe is not PipeAPI.connect_read_pipe
        or cls.connect_write_pipe is not PipeAPI.connect_write_pipe
        or "connect_read_pipe" in loop.__dict__
        or "connect_write_pipe" in loop.__dict__
    )


def _selective_watchers() -> tuple:
    """asyncio's child watchers that wait only for the pids they are given (3.11, 3.12)."""
    from asyncio import unix_events

    names = ("ThreadedChildWatcher", "PidfdChildWatcher", "SafeChildWatcher")
    return tuple(getattr(unix_events, name) for name in (*names, "MultiLoopChildWatcher"))


#: None on 3.13+, where asyncio has no child watchers any more.
_SELECTIVE_WATCHERS = _selective_watchers() if sys.version_info < (3, 13) else None


def _policy_reaper() -> Any:
    """The policy's child watcher if it reaps children it was not given, else None.

    A ``FastChildWatcher`` (or any custom watcher) set on the policy with
    ``set_child_watcher`` collects every child with ``waitpid(-1)``, the loop's own ones
    included, so a child of the loop is then registered with it, as asyncio's loop registers
    every child with the policy's watcher (3.11, 3.12). The watchers that wait only for their
    own pids (threaded, pidfd, safe, multi-loop) leave the loop's pidfd alone, and are not used.
    """
    if _SELECTIVE_WATCHERS is None:
        return None
    watcher = getattr(asyncio.get_event_loop_policy(), "_watcher", None)
    if watcher is None or isinstance(watcher, _SELECTIVE_WATCHERS):
        return None
    return watcher


def _describe_redirect(value: Any) -> str:
    """How a ``stdin``/``stdout``/``stderr`` argument reads in the debug log."""
    if value == subprocess.PIPE:
        return "<pipe>"
    if value == subprocess.STDOUT:
        return "<stdout>"
    return repr(value)


def _check_text_options(universal_newlines, bufsize, text, encoding, errors) -> None:
    """asyncio's refusal of text mode and buffering, in asyncio's order and words."""
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


class _PipeEnd(asyncio.Protocol):
    """The protocol of one of the child's pipes: forwards to the subprocess transport."""

    def __init__(self, owner: SubprocessTransport, fd: int) -> None:
        self.owner: SubprocessTransport | None = owner
        self.fd = fd
        self.pipe: Any = None
        self.disconnected = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self.fd} pipe={self.pipe!r}>"

    def connection_made(self, transport: Any) -> None:
        self.pipe = transport

    def data_received(self, data: bytes) -> None:
        self.owner._pipe_event(self.owner._protocol.pipe_data_received, self.fd, data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.disconnected = True
        owner, self.owner = self.owner, None
        owner._pipe_closed(self.fd, exc)

    def pause_writing(self) -> None:
        self.owner._protocol.pause_writing()

    def resume_writing(self) -> None:
        self.owner._protocol.resume_writing()


class SubprocessTransport(asyncio.SubprocessTransport):
    """A child process and its pipes, as asyncio's ``SubprocessTransport``."""

    def __init__(
        self,
        loop: Any,
        protocol: Any,
        args: Any,
        shell: bool,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        bufsize: int,
        extra: Any = None,
        **popen_kwargs: Any,
    ) -> None:
        super().__init__(extra)
        self._loop = loop
        self._protocol = protocol
        self._closed = False
        self._proc: subprocess.Popen | None = None
        self._watch: ChildWatch | None = None
        self._pid: int | None = None
        self._returncode: int | None = None
        self._exit_waiters: list | None = []
        # The child's pidfd from the spawn (-1: none), handed to its ChildWatch.
        self._pidfd = -1
        # Whether spawn_child made the pipes (known pipes, already non-blocking).
        self._native = False
        # Whether connection_made has been scheduled: before that (a failed connection of
        # the pipes), the protocol hears nothing, as in asyncio.
        self._connected = False
        # Protocol calls made while the pipes are connected through replaced loop methods
        # (``_connect_pipes_via_loop``), replayed after connection_made.
        self._held_calls: collections.deque | None = None
        # fd -> _PipeEnd, None until connected.
        self._pipes: dict[int, _PipeEnd | None] = {}
        self._finished = False
        for fd, value in enumerate((stdin, stdout, stderr)):
            if value == subprocess.PIPE:
                self._pipes[fd] = None
        reaper = _policy_reaper()
        if reaper is None:
            self._start_child(args, shell, stdin, stdout, stderr, bufsize, popen_kwargs)
            self._watch_exit(None)
        else:
            with reaper:
                self._start_child(args, shell, stdin, stdout, stderr, bufsize, popen_kwargs)
                self._watch_exit(reaper)

    def _start_child(self, args, shell, stdin, stdout, stderr, bufsize, popen_kwargs) -> None:
        """Starts the child: natively, or through ``subprocess.Popen`` when only it can."""
        try:
            self._proc = None
            if not _FORCE_POPEN:
                spawned = spawn(
                    args, shell, stdin, stdout, stderr, popen_kwargs, not _FORCE_THREADS
                )
                if spawned is not None:
                    self._proc, self._pidfd = spawned
                    self._native = True
            if self._proc is None:
                self._proc = subprocess.Popen(
                    args,
                    shell=shell,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    universal_newlines=False,
                    bufsize=bufsize,
                    **popen_kwargs,
                )
        except BaseException:
            self.close()
            raise
        self._pid = self._proc.pid
        self._extra["subprocess"] = self._proc
        if self._loop.get_debug():
            program = args if isinstance(args, (bytes, str)) else args[0]
            logger.debug("process %r created: pid %s", program, self._pid)

    # ------------------------------------------------------------------ exit watching

    def _watch_exit(self, reaper: Any) -> None:
        """Starts watching the child: its pidfd as a reader, a waiter thread, or the policy's
        child watcher (``reaper``, see ``_policy_reaper``)."""
        try:
            pidfd, self._pidfd = self._pidfd, -1
            watch = ChildWatch(self._pid, not _FORCE_THREADS, pidfd)
        except BaseException:
            self.close()
            raise
        self._watch = watch
        if reaper is not None:
            # The watcher reaps the child; the watch (its pidfd not watched) only signals it,
            # and is closed once the exit has been reported.
            reaper.add_child_handler(self._pid, self._reaper_reported)
        elif watch.uses_pidfd:
            self._loop._add_reader(watch.fileno, self._on_pidfd_readable)
        else:
            thread = threading.Thread(
                target=self._wait_in_thread,
                args=(watch, self._loop),
                name=f"ferroloop-waitpid-{self._pid}",
                daemon=True,
            )
            thread.start()

    def _reaper_reported(self, pid: int, returncode: int) -> None:
        """The policy's child watcher reaped the child (from its SIGCHLD handler or thread)."""
        if _EXIT_TWO_HOPS:
            self._loop.call_soon_threadsafe(self._loop.call_soon, self._process_exited, returncode)
        else:
            self._loop.call_soon_threadsafe(self._process_exited, returncode)

    def _on_pidfd_readable(self) -> None:
        """The pidfd turned readable: the child exited; reap it."""
        watch = self._watch
        try:
            returncode = watch.reap()
        except ChildProcessError:
            returncode = self._status_lost()
        if returncode is None:
            return
        self._loop._remove_reader(watch.fileno)
        watch.close()
        self._report_exit(returncode)

    def _status_lost(self) -> int:
        """Somebody else reaped our child (``Popen.wait()``, a ``waitpid(-1)``)."""
        if self._proc is not None and self._proc.returncode is not None:
            return self._proc.returncode
        logger.warning("Unknown child process pid %d, will report returncode 255", self._pid)
        return 255

    def _wait_in_thread(self, watch: ChildWatch, loop: Any) -> None:
        """The fallback's waiter thread: blocks in waitpid(pid), then posts the status."""
        try:
            returncode = watch.wait_blocking()
        except ChildProcessError:
            returncode = None
        try:
            loop.call_soon_threadsafe(self._thread_reported, returncode)
        except RuntimeError:
            pass  # the loop is closed: nobody listens any more

    def _thread_reported(self, returncode: int | None) -> None:
        if returncode is None:
            returncode = self._status_lost()
        self._report_exit(returncode)

    def _report_exit(self, returncode: int) -> None:
        """Schedules ``_process_exited`` as asyncio's child watcher callback does."""
        if _EXIT_TWO_HOPS:
            self._loop.call_soon(self._loop.call_soon, self._process_exited, returncode)
        else:
            self._loop.call_soon(self._process_exited, returncode)

    # ------------------------------------------------------------------ pipes

    def _connect_pipes(self) -> None:
        """Connects the child's pipes: each pipe transport schedules its end's
        ``connection_made`` and reading; ``connection_made`` is scheduled after them.

        A failure closes the pipes not connected yet and propagates (the caller closes the
        transport, which closes those connected).
        """
        proc, loop = self._proc, self._loop
        native = self._native
        pipes = ((0, proc.stdin), (1, proc.stdout), (2, proc.stderr))
        try:
            for fd, pipe in pipes:
                if pipe is None:
                    continue
                end = _PipeEnd(self, fd)
                kind = WritePipeTransport if fd == 0 else ReadPipeTransport
                transport = kind(loop, pipe, end, None, native)
                transport._start(None)
                loop._note_pipe_transport(transport)
                end.pipe = transport
                self._pipes[fd] = end
                if not native:
                    # The pipe is the child's and ours alone: it may grow once a bulk
                    # transfer fills it (spawn_child's pipes are marked so already).
                    transport._grow_when_full()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            # The pipes not adopted yet would leak their descriptors (those adopted are closed
            # with the transport).
            for fd, raw in pipes:
                if raw is not None and self._pipes.get(fd) is None:
                    raw.close()
            raise
        self._connected = True
        loop.call_soon(self._protocol.connection_made, self)

    async def _connect_pipes_via_loop(self, waiter: asyncio.Future) -> None:
        """asyncio's way, for a loop whose pipe methods were replaced: each pipe through
        ``connect_write_pipe``/``connect_read_pipe`` in turn, then ``connection_made``, then
        the calls held meanwhile."""
        self._held_calls = collections.deque()
        proc, loop = self._proc, self._loop
        pipes = ((0, proc.stdin), (1, proc.stdout), (2, proc.stderr))
        try:
            for fd, pipe in pipes:
                if pipe is None:
                    continue
                connect = loop.connect_write_pipe if fd == 0 else loop.connect_read_pipe
                _, end = await connect(lambda fd=fd: _PipeEnd(self, fd), pipe)
                self._pipes[fd] = end
                grow = getattr(end.pipe, "_grow_when_full", None)
                if grow is not None:
                    grow()
                if self._closed:
                    # Closed while connecting (a cancelled spawn): not wanted either.
                    end.pipe.close()
            self._connected = True
            loop.call_soon(self._protocol.connection_made, self)
            held, self._held_calls = self._held_calls, None
            for callback, args in held:
                loop.call_soon(callback, *args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._held_calls = None
            for fd, raw in pipes:
                if raw is not None and self._pipes.get(fd) is None:
                    raw.close()
            if not waiter.cancelled():
                waiter.set_exception(exc)
        else:
            if not waiter.cancelled():
                waiter.set_result(None)

    def _pipe_event(self, callback: Any, *args: Any) -> None:
        """Calls the protocol soon: after connection_made, which was scheduled when the pipes
        were connected, before anything could happen to them (or held until then while the
        pipes are connected through replaced loop methods); not at all if they could not be
        connected."""
        if self._connected:
            self._loop.call_soon(callback, *args)
        elif self._held_calls is not None:
            self._held_calls.append((callback, args))

    def _pipe_closed(self, fd: int, exc: BaseException | None) -> None:
        self._pipe_event(self._protocol.pipe_connection_lost, fd, exc)
        self._maybe_finish()

    def _process_exited(self, returncode: int) -> None:
        if self._returncode is not None:
            return
        if self._loop.get_debug():
            logger.info("%r exited with return code %r", self, returncode)
        self._returncode = returncode
        if self._watch is not None:
            self._watch.close()
        if self._proc.returncode is None:
            # Popen would otherwise warn that the process still runs, and try to reap it.
            self._proc.returncode = returncode
        self._pipe_event(self._protocol.process_exited)
        self._maybe_finish()
        if _WAIT_RETURNS_AT_EXIT:
            self._wake_exit_waiters()

    def _wake_exit_waiters(self) -> None:
        waiters, self._exit_waiters = self._exit_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(self._returncode)

    def _maybe_finish(self) -> None:
        """connection_lost once the process exited and every pipe is closed."""
        if self._finished or self._returncode is None:
            return
        if all(end is not None and end.disconnected for end in self._pipes.values()):
            self._finished = True
            if self._held_calls is not None:
                self._held_calls.append((self._connection_lost, (None,)))
            else:
                self._loop.call_soon(self._connection_lost, None)

    def _connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._connected:
                self._protocol.connection_lost(exc)
        finally:
            self._wake_exit_waiters()
            self._loop = None
            self._proc = None
            self._protocol = None

    async def _wait(self) -> int:
        """The returncode, once ``connection_lost`` has run (``asyncio.subprocess`` uses it)."""
        if self._returncode is not None:
            return self._returncode
        waiter = self._loop.create_future()
        self._exit_waiters.append(waiter)
        return await waiter

    # ------------------------------------------------------------------ public API

    def __repr__(self) -> str:
        parts = [type(self).__name__]
        if self._closed:
            parts.append("closed")
        if self._pid is not None:
            parts.append(f"pid={self._pid}")
        if self._returncode is not None:
            parts.append(f"returncode={self._returncode}")
        else:
            parts.append("running" if self._pid is not None else "not started")
        ends = {fd: self._pipes.get(fd) for fd in (0, 1, 2)}
        if ends[0] is not None:
            parts.append(f"stdin={ends[0].pipe}")
        if ends[1] is not None and ends[2] is ends[1]:
            parts.append(f"stdout=stderr={ends[1].pipe}")
        else:
            for fd in (1, 2):
                if ends[fd] is not None:
                    parts.append(f"{_STD_NAMES[fd]}={ends[fd].pipe}")
        return "<{}>".format(" ".join(parts))

    def get_protocol(self) -> Any:
        return self._protocol

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closed

    def get_pid(self) -> int | None:
        return self._pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def get_pipe_transport(self, fd: int) -> Any:
        end = self._pipes.get(fd)
        return None if end is None else end.pipe

    def _still_running(self) -> bool:
        """True if the child has not exited (checked without reaping it)."""
        if self._returncode is not None or self._proc.returncode is not None:
            return False
        watch = self._watch
        if watch is None:
            return self._proc.poll() is None
        try:
            return not watch.has_exited()
        except OSError:
            return False

    def close(self) -> None:
        """Closes the pipes and kills the child if it still runs (asyncio's ``close``)."""
        if self._closed:
            return
        self._closed = True
        for end in self._pipes.values():
            if end is not None:
                end.pipe.close()
        if self._proc is not None and self._still_running():
            if self._loop.get_debug():
                logger.warning("Close running child process: kill %r", self)
            ignored = (
                (ProcessLookupError, PermissionError)
                if _CLOSE_IGNORES_PERMISSION
                else ProcessLookupError
            )
            try:
                self._proc.kill()
            except ignored:
                pass

    def __del__(self, _warn=warnings.warn) -> None:
        if not self._closed:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self.close()

    def _check_proc(self) -> None:
        if self._proc is None:
            raise ProcessLookupError()

    def send_signal(self, signal: int) -> None:
        """Signals the child (through its pidfd); nothing once it has exited.
        ProcessLookupError once the transport has lost its connection."""
        self._check_proc()
        if self._returncode is not None or self._proc.returncode is not None:
            return
        try:
            self._watch.send_signal(signal)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        self.send_signal(15)  # SIGTERM

    def kill(self) -> None:
        self.send_signal(9)  # SIGKILL


class SubprocessAPI:
    """``subprocess_exec`` / ``subprocess_shell``, mixed into ``ferroloop.EventLoop``."""

    async def subprocess_exec(
        self,
        protocol_factory: Any,
        program: Any,
        *args: Any,
        stdin: Any = subprocess.PIPE,
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
        universal_newlines: bool = False,
        shell: bool = False,
        bufsize: int = 0,
        encoding: Any = None,
        errors: Any = None,
        text: Any = None,
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        """Runs ``program`` with ``args`` in a child process speaking to
        ``protocol_factory()``; returns ``(transport, protocol)``."""
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if shell:
            raise ValueError("shell must be False")
        _check_text_options(universal_newlines, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        what = f"execute program {program!r}" if self.get_debug() else None
        return await self._start_subprocess(
            what, protocol, (program, *args), False, stdin, stdout, stderr, bufsize, kwargs
        )

    async def subprocess_shell(
        self,
        protocol_factory: Any,
        cmd: Any,
        *,
        stdin: Any = subprocess.PIPE,
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
        universal_newlines: bool = False,
        shell: bool = True,
        bufsize: int = 0,
        encoding: Any = None,
        errors: Any = None,
        text: Any = None,
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        """Runs the shell command ``cmd`` in a child process speaking to
        ``protocol_factory()``; returns ``(transport, protocol)``."""
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if not shell:
            raise ValueError("shell must be True")
        _check_text_options(universal_newlines, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        what = f"run shell command {cmd!r}" if self.get_debug() else None
        return await self._start_subprocess(
            what, protocol, cmd, True, stdin, stdout, stderr, bufsize, kwargs
        )

    async def _start_subprocess(
        self, what, protocol, args, shell, stdin, stdout, stderr, bufsize, kwargs
    ) -> tuple[Any, Any]:
        """Spawns the child, connects its pipes, waits for connection_made to be scheduled.

        A failure or cancellation meanwhile closes the transport (killing the child) and waits
        for it to be reaped before propagating: no zombie, no descriptor left behind.
        """
        if what is not None:
            info = [what]
            if stdin is not None:
                info.append(f"stdin={_describe_redirect(stdin)}")
            if stdout is not None and stderr == subprocess.STDOUT:
                info.append(f"stdout=stderr={_describe_redirect(stdout)}")
            else:
                if stdout is not None:
                    info.append(f"stdout={_describe_redirect(stdout)}")
                if stderr is not None:
                    info.append(f"stderr={_describe_redirect(stderr)}")
            logger.debug(" ".join(info))
        reaper = _policy_reaper()
        if reaper is not None and not reaper.is_active():
            raise RuntimeError(
                "asyncio.get_child_watcher() is not activated, subprocess support is not installed."
            )
        transport = SubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize, **kwargs
        )
        try:
            if _pipe_methods_replaced(self):
                waiter = self.create_future()
                self.create_task(transport._connect_pipes_via_loop(waiter))
                await waiter
            else:
                transport._connect_pipes()
                # One iteration: the pipes' and the protocol's connection_made, scheduled by
                # _connect_pipes, run before this task resumes.
                await asyncio.sleep(0)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        if what is not None:
            logger.info("%s: %r", what, transport)
        return transport, protocol


__all__ = ["SubprocessAPI", "SubprocessTransport"]
