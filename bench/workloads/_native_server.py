"""A compiled echo server process (``native-echo``) and readings of its CPU time.

``native-echo`` (built by ``bench/native_echo.py`` from ``../shared/native-echo``)
is a single-threaded Rust echo server on mio (epoll), without Python.  It
takes one argument, ``HOST:PORT`` or an absolute Unix socket path, and prints
``LISTEN <address>`` once bound; it serves until it is killed.

Since the server cannot time its own window, the worker reads its costs from
``/proc``: CPU time from ``/proc/PID/task/*/schedstat`` (nanoseconds on a CPU;
the same total that ``getrusage`` splits into user and system time), the
user/system split and minor faults from ``/proc/PID/stat`` (clock ticks,
coarse), run-queue wait from schedstat, and open descriptors from
``/proc/PID/fd`` (to see when the clients are connected).  Linux only.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

LISTEN_PREFIX = "LISTEN "
#: Seconds to wait for the ``LISTEN`` line.
LISTEN_TIMEOUT_S = 10.0
#: How often the worker looks at the server's descriptors while clients connect.
CONNECT_POLL_S = 0.001
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def read_listen_line(process: subprocess.Popen, timeout: float = LISTEN_TIMEOUT_S) -> str:
    """Return the address from the server's ``LISTEN <address>`` line.

    Raises RuntimeError (with the server's stderr) when it exits first or
    prints something else, TimeoutError when it prints nothing in time.
    """
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"native-echo printed no LISTEN line within {timeout:g} s")
    line = process.stdout.readline()
    if not line.startswith(LISTEN_PREFIX):
        process.kill()
        stderr = process.communicate()[1].strip()
        raise RuntimeError(
            f"native-echo did not start (status {process.returncode}): "
            f"{stderr or line.strip() or 'no output'}"
        )
    return line[len(LISTEN_PREFIX) :].strip()


@dataclass
class ProcessReading:
    """CPU, fault and scheduling counters of a process at one moment."""

    time: float
    cpu: float
    user_cpu: float
    system_cpu: float
    minor_faults: int
    run_delay: float | None


def read_process(pid: int) -> ProcessReading:
    """Read ``pid``'s counters (schedstat summed over its threads, and /proc/PID/stat)."""
    now = time.perf_counter()
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat_file:
        # Fields after the ")" closing the command name: state is field 3 of stat(5).
        fields = stat_file.read().rsplit(")", 1)[1].split()
    minor_faults = int(fields[10 - 3])
    user_cpu = int(fields[14 - 3]) / CLOCK_TICKS_PER_S
    system_cpu = int(fields[15 - 3]) / CLOCK_TICKS_PER_S
    cpu_ns = run_delay_ns = 0
    try:
        for thread in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{thread}/schedstat", encoding="ascii") as schedstat:
                on_cpu, waiting = schedstat.read().split()[:2]
            cpu_ns += int(on_cpu)
            run_delay_ns += int(waiting)
    except (OSError, ValueError):
        # No schedstat: clock ticks (10 ms resolution at 100 Hz) and no run-queue figure.
        return ProcessReading(now, user_cpu + system_cpu, user_cpu, system_cpu, minor_faults, None)
    return ProcessReading(now, cpu_ns / 1e9, user_cpu, system_cpu, minor_faults, run_delay_ns / 1e9)


def read_peak_rss_kib(pid: int) -> int | None:
    """Peak resident set size (``VmHWM``) of ``pid`` in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


class NativeEchoServer:
    """A running ``native-echo`` process; use as a context manager (stops it on exit)."""

    def __init__(self, binary: str, address_argument: str) -> None:
        """Start ``binary address_argument`` and wait for its LISTEN line."""
        self.process = subprocess.Popen(
            [binary, address_argument],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self.started = time.perf_counter()
        self.usage: resource.struct_rusage | None = None
        self.last_reading: ProcessReading | None = None
        self.peak_rss_kib: int | None = None
        try:
            self.address = read_listen_line(self.process)
            self.idle_descriptors = self.open_descriptors()
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> NativeEchoServer:
        """Return the running server."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server."""
        self.stop()

    def tcp_address(self) -> tuple[str, int]:
        """Return the ``(host, port)`` it listens on (TCP servers)."""
        host, _, port = self.address.rpartition(":")
        return host, int(port)

    def open_descriptors(self) -> int:
        """Count the open file descriptors of the server process."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def wait_for_connections(
        self, count: int, timeout: float, client: subprocess.Popen | None = None
    ) -> None:
        """Wait until the server holds ``count`` more descriptors than when idle.

        Each accepted connection is one descriptor.  Raises RuntimeError when
        the server or ``client`` exits first, TimeoutError after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while self.open_descriptors() - self.idle_descriptors < count:
            if self.process.poll() is not None:
                raise RuntimeError(f"native-echo exited with status {self.process.returncode}")
            if client is not None and client.poll() is not None:
                raise RuntimeError(f"the client exited with status {client.returncode} early")
            if time.monotonic() > deadline:
                connected = self.open_descriptors() - self.idle_descriptors
                raise TimeoutError(f"only {connected} of {count} clients connected")
            time.sleep(CONNECT_POLL_S)

    def reading(self) -> ProcessReading:
        """Read the server's counters now (also kept for :meth:`costs`)."""
        self.last_reading = read_process(self.pid)
        return self.last_reading

    def stop(self) -> None:
        """Kill the server (it never exits by itself) and collect its resource usage."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(OSError):  # OSError: already gone
            self.reading()
            self.peak_rss_kib = read_peak_rss_kib(self.pid)
        self.process.send_signal(signal.SIGKILL)
        _, status, self.usage = os.wait4(self.pid, 0)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def costs(self) -> dict[str, Any]:
        """Return the server process's costs over its life, as the worker reports a loop's."""
        if self.usage is None:
            raise RuntimeError("stop() the server first")
        reading = self.last_reading
        return {
            "wall_s": (reading.time if reading else time.perf_counter()) - self.started,
            "user_cpu_s": self.usage.ru_utime,
            "system_cpu_s": self.usage.ru_stime,
            # VmHWM: wait4's ru_maxrss would include the forking worker's pages.
            "max_rss_kib": self.peak_rss_kib,
            "involuntary_context_switches": self.usage.ru_nivcsw,
            "run_delay_s": reading.run_delay if reading else None,
        }
