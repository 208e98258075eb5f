"""Interleaved A/B of echo servers: server CPU per request and system calls per request.

Servers (each a separate process printing ``LISTEN host:port``):

* ``epoll``: the no-Python floor, ``../shared/native-echo`` (mio, edge-triggered epoll);
* ``uring``: ``bench/native_uring`` (io_uring, multishot recv, provided-buffer ring),
  ``--setup defer``; ``uring-coop`` and ``uring-plain`` with the other setup flags, and a
  ``-bN`` suffix for ``--bufs N`` (e.g. ``uring-b32``, ``uring-plain-b32``);
* ``ferroloop`` / ``asyncio``: ``echo_server.py`` (``transport_echo.tcp_*``'s protocol).

Each measurement starts a fresh server, runs the same client as ``bench/run.py``
(``loadgen echo``, 20 connections, one message in flight on each, ping-pong) for a
fixed number of requests (``--max-requests``), and reads the server's CPU time from
``/proc/PID/task/*/schedstat`` (nanoseconds on a CPU, user + system, every thread) just
before the client starts and just after it exits: server CPU µs/request = CPU time /
requests.  The user/system split comes from ``/proc/PID/task/*/stat`` (clock ticks).
Servers are interleaved within each repetition, in an order rotated per repetition;
the report gives medians and the min–max range.

``--syscalls`` adds one more pass per server and size under ``perf stat`` counting
system-call tracepoints on the server (``raw_syscalls:sys_enter`` and a few named ones),
reported per request.  Counting makes system calls slower, so those runs are not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONNECTIONS = 20
TICKS = os.sysconf("SC_CLK_TCK")
SYSCALLS = [
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_io_uring_enter",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_pwait",
    "syscalls:sys_enter_epoll_pwait2",
    "syscalls:sys_enter_epoll_ctl",
]


def cpu_ns(pid: int) -> int:
    """Nanoseconds on a CPU of every thread of ``pid``."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as file:
                total += int(file.read().split()[0])
        except FileNotFoundError:
            pass
    return total


def user_system_ticks(pid: int) -> tuple[int, int]:
    """User and system clock ticks of every thread of ``pid``."""
    user = system = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of ``pid``."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as file:
                for line in file:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[-1])
        except FileNotFoundError:
            continue
    return total


def server_command(name: str, arguments: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """Return the command line and environment that start server ``name``."""
    environment = dict(os.environ)
    if name == "epoll":
        return [arguments.floor, "127.0.0.1:0"], environment
    if name.startswith("uring"):
        command = [arguments.uring, "127.0.0.1:0"]
        for part in name.split("-")[1:]:
            if part.startswith("b") and part[1:].isdigit():
                command += ["--bufs", part[1:]]
            else:
                command += ["--setup", part]
        return command, environment
    if arguments.pythonpath:
        environment["PYTHONPATH"] = arguments.pythonpath
    return [arguments.python, str(HERE / "echo_server.py"), name], environment


def start_server(name: str, arguments: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """Start server ``name``; return it and the address it printed."""
    command, environment = server_command(name, arguments)
    server = subprocess.Popen(
        ["nice", "-n", str(arguments.nice), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    line = server.stdout.readline()
    if not line.startswith("LISTEN "):
        server.kill()
        raise RuntimeError(f"{name} did not start: {line!r} {server.communicate()[1]!r}")
    return server, line.split()[1]


def client_command(address: str, size: int, requests: int, arguments) -> list[str]:
    """Return the loadgen command for one measurement."""
    return [
        "nice",
        "-n",
        str(arguments.nice),
        arguments.loadgen,
        "echo",
        "--family",
        "tcp",
        "--addr",
        address,
        "--conns",
        str(CONNECTIONS),
        "--size",
        str(size),
        "--warmup",
        "0",
        "--duration",
        "1000",
        "--max-requests",
        str(requests),
        "--timeout",
        "300",
    ]


def client_result(stdout: str) -> dict[str, Any]:
    """Return the client's ``@@CLIENT`` JSON object."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("@@CLIENT "):
            return json.loads(line[len("@@CLIENT ") :])
    raise RuntimeError(f"client printed no result: {stdout[-500:]!r}")


def stop(server: subprocess.Popen) -> None:
    """Kill the server and reap it."""
    server.kill()
    server.communicate()


def measure(name: str, size: int, requests: int, arguments) -> dict[str, Any]:
    """One timed run: fresh server, fixed request count, CPU read around the client."""
    server, address = start_server(name, arguments)
    try:
        pid = server.pid
        cpu_before, ticks_before = cpu_ns(pid), user_system_ticks(pid)
        switches_before = context_switches(pid)
        wall_before = time.perf_counter()
        client = subprocess.run(
            client_command(address, size, requests, arguments),
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - wall_before
        cpu = cpu_ns(pid) - cpu_before
        ticks = user_system_ticks(pid)
        switches = context_switches(pid) - switches_before
    finally:
        stop(server)
    result = client_result(client.stdout)
    total = result.get("total_requests") or requests
    user = ticks[0] - ticks_before[0]
    system = ticks[1] - ticks_before[1]
    return {
        "server": name,
        "size": size,
        "requests": total,
        "cpu_us_per_request": cpu / 1000 / total,
        "user_share": user / (user + system) if user + system else None,
        "context_switches_per_request": switches / total,
        "client_rps": result.get("rps"),
        "wall_s": wall,
    }


def count_syscalls(name: str, size: int, requests: int, arguments) -> dict[str, Any]:
    """One counted run: the same as :func:`measure` under ``perf stat`` on the server."""
    server, address = start_server(name, arguments)
    try:
        # `nice` execs the server, so the Popen pid is the server's own pid.
        perf = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-e", ",".join(SYSCALLS), "-p", str(server.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        subprocess.run(
            client_command(address, size, requests, arguments),
            capture_output=True,
            text=True,
            check=True,
        )
        perf.send_signal(signal.SIGINT)
        report = perf.communicate()[1]
    finally:
        stop(server)
    counts: dict[str, float] = {}
    for line in report.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in SYSCALLS and fields[0].strip().isdigit():
            counts[fields[2].split(":")[1].removeprefix("sys_enter_")] = int(fields[0]) / requests
    return {"server": name, "size": size, "requests": requests, "per_request": counts}


def summary(runs: list[dict[str, Any]], key: str) -> str:
    """Median [min–max] of ``key`` over ``runs``."""
    values = [run[key] for run in runs if run[key] is not None]
    if not values:
        return "—"
    return f"{statistics.median(values):.3g} [{min(values):.3g}–{max(values):.3g}]"


def paired_ratios(runs: list[dict[str, Any]], name: str, baseline: str, size: int) -> list[float]:
    """Return ``name``'s CPU per request over ``baseline``'s, one ratio per repetition."""
    by_key = {(run["server"], run["repetition"]): run for run in runs if run["size"] == size}
    return [
        by_key[(name, repetition)]["cpu_us_per_request"]
        / by_key[(baseline, repetition)]["cpu_us_per_request"]
        for (server, repetition) in by_key
        if server == name and (baseline, repetition) in by_key
    ]


def main() -> None:
    """Parse options, run the interleaved repetitions, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor", required=True, help="native-echo binary (epoll)")
    parser.add_argument("--uring", required=True, help="native-uring-echo binary")
    parser.add_argument("--loadgen", required=True, help="loadgen binary")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--pythonpath", default="", help="PYTHONPATH for ferroloop")
    parser.add_argument("--servers", default="epoll,uring,ferroloop")
    parser.add_argument("--sizes", default="1024,65536")
    parser.add_argument("--requests", default="200000,40000", help="per size, same order")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--syscalls", action="store_true", help="add a perf-counted pass")
    parser.add_argument("--json", help="write every run here")
    arguments = parser.parse_args()
    servers = arguments.servers.split(",")
    sizes = [int(size) for size in arguments.sizes.split(",")]
    requests = dict(zip(sizes, (int(n) for n in arguments.requests.split(",")), strict=True))
    runs: list[dict[str, Any]] = []
    for repetition in range(arguments.repeat):
        for size in sizes:
            shift = repetition % len(servers)
            for name in servers[shift:] + servers[:shift]:
                run = measure(name, size, requests[size], arguments)
                run["repetition"] = repetition
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
    counted = []
    if arguments.syscalls:
        for size in sizes:
            for name in servers:
                count = count_syscalls(name, size, requests[size], arguments)
                counted.append(count)
                print(json.dumps(count), file=sys.stderr, flush=True)
    for size in sizes:
        print(f"\n{size} B, {requests[size]} requests, {arguments.repeat} repetitions")
        print("| server | CPU µs/request | user share | ctx switches/request | client req/s |")
        print("|---|---|---|---|---|")
        for name in servers:
            mine = [run for run in runs if run["server"] == name and run["size"] == size]
            print(
                f"| {name} | {summary(mine, 'cpu_us_per_request')} | "
                f"{summary(mine, 'user_share')} | "
                f"{summary(mine, 'context_switches_per_request')} | "
                f"{summary(mine, 'client_rps')} |"
            )
        baseline = servers[0]
        for name in servers[1:]:
            ratios = paired_ratios(runs, name, baseline, size)
            if ratios:
                print(
                    f"{name} / {baseline}, CPU per request, same repetition: "
                    f"{statistics.median(ratios):.3f} [{min(ratios):.3f}–{max(ratios):.3f}]"
                )
        for count in counted:
            if count["size"] == size:
                shown = ", ".join(f"{k} {v:.3f}" for k, v in count["per_request"].items() if v)
                print(f"system calls/request, {count['server']}: {shown}")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"runs": runs, "syscalls": counted}, indent=1))


if __name__ == "__main__":
    main()
