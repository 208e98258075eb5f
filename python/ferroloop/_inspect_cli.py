"""``python -m ferroloop ps PID`` and ``python -m ferroloop top PID``: the inspector's client.

``ps`` prints the tasks and transports of a process serving the inspector
(``FERROLOOP_INSPECT=1`` or ``loop.serve_inspector()``, see ``_inspector.py``) as tables;
``top`` redraws its stats, tasks and busiest transports every second on a plain terminal
(ANSI clear-screen only, no curses), until Ctrl+C or the process ends.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

from ._inspector import socket_directory, socket_path

USAGE = "usage: python -m ferroloop ps PID | top PID [-n COUNT] [-i SECONDS]"


class InspectorError(Exception):
    """The process cannot be inspected (its message says why)."""


class Client:
    """One connection to a process's inspector socket."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            raise InspectorError(f"no process {pid}") from None
        candidates = [socket_path(pid, uid)]
        fallback = os.path.join(socket_directory(uid), f"ferroloop-{pid}.sock")
        temp = os.path.join("/tmp", f"ferroloop-{uid}", f"ferroloop-{pid}.sock")
        for path in (fallback, temp):
            if path not in candidates:
                candidates.append(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        last: OSError | None = None
        for path in candidates:
            try:
                self.sock.connect(path)
                break
            except PermissionError as exc:
                self.sock.close()
                raise InspectorError(f"not allowed to inspect process {pid}: {exc}") from None
            except OSError as exc:
                last = exc
        else:
            self.sock.close()
            raise InspectorError(
                f"process {pid} serves no ferroloop inspector ({last}); start it with "
                "FERROLOOP_INSPECT=1 or call loop.serve_inspector()"
            )
        self.reader = self.sock.makefile("rb")

    def ask(self, view: str) -> dict[str, Any]:
        """One view (``stats``, ``tasks``, ``transports`` or ``all``)."""
        try:
            self.sock.sendall(view.encode() + b"\n")
            line = self.reader.readline()
        except OSError as exc:
            raise InspectorError(f"process {self.pid} ended ({exc})") from None
        if not line:
            raise InspectorError(f"process {self.pid} ended")
        reply = json.loads(line)
        if "error" in reply:
            raise InspectorError(f"process {self.pid}: {reply['error']}")
        return reply

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _table(headers: list[str], rows: list[list[Any]], max_width: int = 48) -> list[str]:
    """Rows as aligned text columns (cells cut to ``max_width``)."""
    cells = [[_cell(value, max_width) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return lines


def _cell(value: Any, max_width: int) -> str:
    text = "-" if value is None else str(value)
    if len(text) > max_width:
        text = "…" + text[-(max_width - 1) :]
    return text


def _short_frame(entry: str) -> str:
    """``name (/path/file.py:12)`` as ``name file.py:12``."""
    name, _, where = entry.partition(" (")
    return f"{name} {os.path.basename(where.rstrip(')'))}"


def _size(count: int | None) -> str:
    if count is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}ms"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def task_lines(
    tasks: list[dict[str, Any]], limit: int | None = None, cpu: dict[int, float] | None = None
) -> list[str]:
    """Tasks as a table; with ``cpu`` (each task's share of the last interval), a CPU column."""
    rows = [
        [
            task["name"],
            task["state"],
            *([f"{cpu.get(task['id'], 0.0):.1%}"] if cpu is not None else []),
            _age(task.get("age")),
            task["coroutine"],
            _short_frame(task["stack"][0]).split(" ", 1)[1] if task["stack"] else None,
            _short_frame(task["stack"][-1]) if len(task["stack"]) > 1 else None,
            " <- ".join(task["await_chain"]),
        ]
        for task in tasks[:limit]
    ]
    headers = ["NAME", "STATE", *(["CPU"] if cpu is not None else []), "AGE", "COROUTINE", "AT"]
    headers += ["SUSPENDED IN", "AWAIT CHAIN"]
    return _table(headers, rows)


def tree_order(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks as a tree: each root task, then the tasks it awaits, and so on."""
    return sorted(tasks, key=lambda task: list(reversed(task["await_chain"])))


def transport_lines(
    transports: list[dict[str, Any]], rates: dict[int, float] | None = None
) -> list[str]:
    headers = ["FD", "KIND", "LOCAL", "PEER", "PROTOCOL", "BUFFERED", "PAUSED", "IN", "OUT"]
    if rates is not None:
        headers.append("B/S")
    rows = []
    for t in transports:
        paused = "r" if t["reading_paused"] else ""
        paused += "w" if t["writing_paused"] else ""
        row = [
            t["fd"],
            t["kind"] + ("+tls" if t.get("tls") else ""),
            t["local"],
            t["peer"],
            t["protocol"],
            _size(t["write_buffered"]),
            paused or "-",
            _size(t["bytes_in"]),
            _size(t["bytes_out"]),
        ]
        if rates is not None:
            row.append(f"{rates.get(t['fd'], 0.0):.0f}")
        rows.append(row)
    return _table(headers, rows)


def stats_line(pid: int, stats: dict[str, Any]) -> str:
    lag = stats["lag"]
    return (
        f"process {pid}: {stats['tasks']} tasks, {stats['transports']} transports, "
        f"{stats['timers']} timers, {stats['readers']} readers, {stats['writers']} writers; "
        f"lag p50 {_ms(lag['p50'])} p99 {_ms(lag['p99'])} max {_ms(lag['max'])}"
    )


def ps(pid: int) -> int:
    client = Client(pid)
    try:
        reply = client.ask("all")
    finally:
        client.close()
    out = [stats_line(pid, reply["stats"]), "", f"TASKS ({len(reply['tasks'])})"]
    out += task_lines(tree_order(reply["tasks"]))
    out += ["", f"TRANSPORTS ({len(reply['transports'])})"]
    out += transport_lines(reply["transports"])
    print("\n".join(out))
    return 0


def _traffic(transport: dict[str, Any]) -> int:
    return (transport["bytes_in"] or 0) + (transport["bytes_out"] or 0)


def top(pid: int, count: int | None, interval: float) -> int:
    client = Client(pid)
    previous: dict[str, Any] | None = None
    previous_at = 0.0
    shown = 0
    clear = sys.stdout.isatty()
    try:
        while count is None or shown < count:
            reply = client.ask("all")
            now = time.monotonic()
            stats = reply["stats"]
            elapsed = now - previous_at if previous is not None else 0.0
            rates: dict[int, float] = {}
            task_cpu: dict[int, float] = {}
            lines = [time.strftime("%H:%M:%S ") + stats_line(pid, stats)]
            if previous is not None and elapsed > 0:
                before = previous["stats"]

                def rate(key: str, stats=stats, before=before, elapsed=elapsed) -> float:
                    return (stats[key] - before[key]) / elapsed

                busy = (stats["busy_time"] - before["busy_time"]) / elapsed
                idle = (stats["idle_time"] - before["idle_time"]) / elapsed
                lines.append(
                    f"callbacks/s {rate('callbacks_run'):.0f}  io events/s {rate('io_events'):.0f}"
                    f"  timers/s {rate('timers_fired'):.0f}  iterations/s {rate('iterations'):.0f}"
                    f"  busy {busy:.0%}  idle {idle:.0%}"
                )
                old = {t["fd"]: _traffic(t) for t in previous["transports"]}
                rates = {
                    t["fd"]: max(0, _traffic(t) - old.get(t["fd"], 0)) / elapsed
                    for t in reply["transports"]
                }
                ran = {t["id"]: t.get("cpu") or 0.0 for t in previous["tasks"]}
                task_cpu = {
                    t["id"]: max(0.0, (t.get("cpu") or 0.0) - ran.get(t["id"], 0.0)) / elapsed
                    for t in reply["tasks"]
                }
            else:
                lines.append(
                    f"callbacks {stats['callbacks_run']}  io events {stats['io_events']}  "
                    f"timers {stats['timers_fired']}  iterations {stats['iterations']}"
                )
            # Busiest first: the share of the last interval the loop spent in each task's steps.
            tasks = sorted(
                reply["tasks"],
                key=lambda t: (
                    -task_cpu.get(t["id"], 0.0),
                    t["state"] not in ("running", "scheduled"),
                    t["name"],
                ),
            )
            lines += ["", f"TASKS ({len(tasks)}, busiest 15 by CPU)"]
            lines += task_lines(tasks, 15, task_cpu)
            busiest = sorted(
                reply["transports"],
                key=lambda t: (-rates.get(t["fd"], 0.0), -_traffic(t), t["fd"]),
            )[:15]
            lines += ["", f"TRANSPORTS ({len(reply['transports'])}, busiest 15)"]
            lines += transport_lines(busiest, rates)
            if clear:
                sys.stdout.write("\x1b[H\x1b[2J")
            sys.stdout.write("\n".join(lines) + "\n\n")
            sys.stdout.flush()
            previous, previous_at = reply, now
            shown += 1
            if count is None or shown < count:
                time.sleep(interval)
    except InspectorError as exc:
        if previous is None:
            raise
        print(str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


def main(argv: list[str]) -> int:
    """``ps PID`` or ``top PID [-n COUNT] [-i SECONDS]``; returns the exit status."""
    if len(argv) < 2 or argv[0] not in ("ps", "top"):
        print(USAGE, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    count: int | None = None
    interval = 1.0
    try:
        pid = int(rest[0])
        options = rest[1:]
        while options:
            flag, value, options = options[0], options[1], options[2:]
            if flag == "-n" and command == "top":
                count = int(value)
            elif flag == "-i" and command == "top":
                interval = float(value)
            else:
                raise ValueError(flag)
    except (ValueError, IndexError):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        return ps(pid) if command == "ps" else top(pid, count, interval)
    except BrokenPipeError:  # `... | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except InspectorError as exc:
        print(f"ferroloop {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
