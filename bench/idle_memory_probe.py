"""Where the RSS of ``memory.idle_conns_5k`` goes: one measurement, taken apart.

Runs the workload exactly as ``bench/worker.py measure`` does (same loop factory, same
``workloads.memory`` code, same client), but at each of the workload's two RSS readings (before
the client starts, after every connection was accepted) it also records, in the server process:

* ``/proc/self/status``: VmRSS split into RssAnon / RssFile;
* ``/proc/self/smaps``: resident KiB by mapping kind (``[heap]`` = glibc's main arena,
  anonymous mappings = pymalloc's 1 MiB arenas, glibc's other arenas and mmapped chunks,
  file-backed = code and data of the interpreter and extensions);
* glibc ``mallinfo2()`` (bytes in use, free bytes kept in the arenas, mmapped bytes) and the
  number of arenas ``malloc_info`` lists;
* CPython's ``sys.getallocatedblocks()`` and ``sys._debugmallocstats()`` (pymalloc arenas,
  bytes in used blocks, free blocks, per size class);
* with ``--objects``: the gc-tracked objects by type and ``tracemalloc``'s allocations by line
  (these change the heap, so their RSS is not the number of record: use them for counts).

Run it with the same malloc settings as ``bench/run.py`` (pinned by default here too)::

    python bench/idle_memory_probe.py --loop ferroloop [--objects] [--json FILE]

Prints a table of before/after/delta for each quantity.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import gc
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loops import KNOWN_LOOP_FACTORIES, load_loop_factory
from workloads import (
    discover_workloads,
    memory,
)

PINNED = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "67108864"}


class Mallinfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2``."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


LIBC = ctypes.CDLL(None)


def mallinfo() -> dict[str, int]:
    """Read mallinfo2 (all of glibc's arenas) and the number of arenas malloc_info lists."""
    function = LIBC.mallinfo2
    function.restype = Mallinfo2
    info = function()
    result = {f"malloc.{name}": int(getattr(info, name)) for name, _ in Mallinfo2._fields_}
    with tempfile.NamedTemporaryFile("r", suffix=".xml") as out:
        LIBC.fopen.restype = ctypes.c_void_p
        LIBC.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        stream = LIBC.fopen(out.name.encode(), b"w")
        LIBC.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        LIBC.malloc_info(0, stream)
        LIBC.fclose.argtypes = [ctypes.c_void_p]
        LIBC.fclose(stream)
        xml = Path(out.name).read_text()
    result["malloc.heaps"] = xml.count("<heap nr=")
    return result


def status_kib() -> dict[str, int]:
    """VmRSS and its parts from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            fields[f"status.{name}"] = int(value.split()[0])
    return fields


def smaps_kib() -> dict[str, int]:
    """Resident KiB of /proc/self/smaps by mapping kind."""
    totals: collections.Counter[str] = collections.Counter()
    kind = "?"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and re.match(r"^[0-9a-f]+-[0-9a-f]+$", head[0]):
            name = head[5] if len(head) > 5 else ""
            if name == "[heap]":
                kind = "heap"
            elif name.startswith("["):
                kind = name.strip("[]")
            elif name == "":
                kind = "anon"
            elif ".so" in name or "python" in name:
                kind = "file:" + os.path.basename(name).split(".")[0]
            else:
                kind = "file:other"
        elif head and head[0] == "Rss:":
            totals[kind] += int(head[1])
    merged: dict[str, int] = {}
    for kind, kib in totals.items():
        key = kind if not kind.startswith("file:") else "file"
        merged[f"smaps.{key}"] = merged.get(f"smaps.{key}", 0) + kib
        if kind.startswith("file:"):
            merged[f"smaps.{kind}"] = kib
    return merged


def pymalloc_stats() -> dict[str, Any]:
    """sys._debugmallocstats() (written to the C stderr), parsed."""
    result: dict[str, Any] = {}
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+") as out:
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    classes = {}
    for line in text.splitlines():
        row = re.match(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", line)
        if row:
            _index, size, pools, used, avail = map(int, row.groups())
            classes[size] = (pools, used, avail)
            continue
        pair = re.match(r"^#?\s*([^=]+?)\s*=\s*([\d,]+)\s*$", line)
        if pair:
            key = pair.group(1).strip().lstrip("#").strip()
            if key.startswith(("# ", "bytes", "arenas", "unused", "Total", "pool", "free")) or (
                "arena" in key or "bytes" in key or "pools" in key
            ):
                result["pymalloc." + key] = int(pair.group(2).replace(",", ""))
    result["pymalloc.classes"] = classes
    return result


def snapshot() -> dict[str, Any]:
    """Every quantity, now."""
    data: dict[str, Any] = {}
    data.update(status_kib())
    data.update(smaps_kib())
    data.update(mallinfo())
    data["python.allocated_blocks"] = sys.getallocatedblocks()
    data.update(pymalloc_stats())
    return data


def type_counts() -> collections.Counter[str]:
    """gc-tracked objects by type name."""
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def main(argv: list[str]) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", default="ferroloop", help="short name or MODULE:FACTORY")
    parser.add_argument("--objects", action="store_true", help="also object counts, tracemalloc")
    parser.add_argument("--json", help="write every snapshot here")
    parser.add_argument("--conns", type=int, default=memory.CONNECTIONS)
    parser.add_argument(
        "--client-bufsize",
        type=int,
        help="experiment: Popen(bufsize=N) for the client's pipes (default: the workload's)",
    )
    arguments = parser.parse_args(argv)
    missing = {k: v for k, v in PINNED.items() if os.environ.get(k) != v}
    if missing and os.environ.get("PROBE_REEXEC") is None:
        os.execve(
            sys.executable,
            [sys.executable, *sys.argv],
            {**os.environ, **PINNED, "PROBE_REEXEC": "1"},
        )

    discover_workloads()  # what the worker imports
    target = KNOWN_LOOP_FACTORIES.get(arguments.loop, arguments.loop)
    module_name, _, factory_path = target.partition(":")
    loop = load_loop_factory(module_name, factory_path)()
    asyncio.set_event_loop(loop)

    snapshots: list[dict[str, Any]] = []
    counts: list[collections.Counter[str]] = []
    traces: list[Any] = []
    if arguments.objects:
        import tracemalloc

        tracemalloc.start(1)
    original = memory.settled_rss_kib

    async def settled_and_recorded() -> int:
        rss = await original()
        snapshots.append(snapshot())
        snapshots[-1]["workload.rss_kib"] = rss
        if arguments.objects:
            counts.append(type_counts())
            traces.append(tracemalloc.take_snapshot())
        return rss

    memory.settled_rss_kib = settled_and_recorded
    if arguments.client_bufsize is not None:
        import functools
        import subprocess

        class Subprocess:
            Popen = functools.partial(subprocess.Popen, bufsize=arguments.client_bufsize)
            PIPE = subprocess.PIPE

        memory.subprocess = Subprocess
    gc.collect()
    try:
        metrics = memory.measure_idle_connections(loop, arguments.conns / memory.CONNECTIONS)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    before, after = snapshots[0], snapshots[1]
    conns = arguments.conns
    origin = getattr(sys.modules.get(module_name.split(".")[0]), "__file__", "?")
    print(f"{sys.version.split()[0]} {arguments.loop} ({target}, from {origin}); {metrics}")
    print(f"{'quantity':48} {'before':>12} {'after':>12} {'delta':>12} {'B/conn':>8}")
    for key in sorted(set(before) | set(after)):
        if key == "pymalloc.classes":
            continue
        b, a = before.get(key, 0), after.get(key, 0)
        unit = 1024 if key.startswith(("status.", "smaps.", "workload.")) else 1
        per = (a - b) * unit / conns
        print(f"{key:48} {b:>12,} {a:>12,} {a - b:>12,} {per:>8.1f}")
    print("pymalloc size classes whose pools changed (size: pools before→after, used blocks Δ):")
    cb, ca = before["pymalloc.classes"], after["pymalloc.classes"]
    for size in sorted(set(cb) | set(ca)):
        pb, ub, _ = cb.get(size, (0, 0, 0))
        pa, ua, _ = ca.get(size, (0, 0, 0))
        if pa != pb or abs(ua - ub) >= conns // 10:
            per = (ua - ub) * size / conns
            print(
                f"  {size:4} B: pools {pb}→{pa}, blocks {ub}→{ua} (Δ{ua - ub:+}, {per:+.1f} B/conn)"
            )
    if arguments.objects:
        delta = counts[1] - counts[0]
        print("gc-tracked objects gained (type: count):")
        for name, count in delta.most_common(15):
            print(f"  {name}: {count}")
        print("tracemalloc, top allocations gained (bytes, count):")
        stats = traces[1].compare_to(traces[0], "lineno")
        for stat in stats[:15]:
            print(f"  {stat.size_diff:>10,} B {stat.count_diff:>7,} {stat.traceback}")
        large_after = sum(t.size for t in traces[1].traces if t.size > 512)
        large_before = sum(t.size for t in traces[0].traces if t.size > 512)
        print(f"tracemalloc, blocks > 512 B (glibc malloc): Δ {large_after - large_before:,} B")
    if arguments.json:
        for snap in snapshots:
            snap["pymalloc.classes"] = {str(k): v for k, v in snap["pymalloc.classes"].items()}
        Path(arguments.json).write_text(
            json.dumps(
                {"python": sys.version, "loop": target, "metrics": metrics, "snapshots": snapshots}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
