"""``python -m asyncio ps PID`` / ``pstree PID`` (Python 3.14+) on a running program.

Those tools read another process's memory (``_remote_debugging``): the tasks the ``_asyncio``
module links per thread, each task's coroutine frames and awaiter. A program running on the
loop under test shows the same task tree as it does on stock asyncio: its tasks are
asyncio's own C tasks, stepped with the running loop and task set as asyncio sets them.
Reading the memory needs ptrace permission over the child (root here, or a permissive
``kernel.yama.ptrace_scope``); without it the test skips with the tool's error.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import LOOP_KIND, child_command, child_env

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 14),
    reason="python -m asyncio ps/pstree exist from Python 3.14 on",
)

#: A program with a task tree: main awaits "branch", whose TaskGroup runs two sleeping
#: leaves and one ("busy") that blocks the loop thread, so that one task is running when the
#: tree is read. It prints its pid and loop class once the tree is in place.
PROGRAM = """
import asyncio, os, sys, time

async def sleeper():
    await asyncio.sleep(60)

async def busy(started):
    await started
    print(os.getpid(), type(asyncio.get_running_loop()).__module__, flush=True)
    time.sleep(60)

async def branch():
    started = asyncio.get_running_loop().create_future()
    async with asyncio.TaskGroup() as group:
        group.create_task(sleeper(), name="leaf-1")
        group.create_task(sleeper(), name="leaf-2")
        group.create_task(busy(started), name="busy")
        await asyncio.sleep(0)
        started.set_result(None)

async def main():
    await asyncio.create_task(branch(), name="branch")

asyncio.run(main())
"""


def tree_of(pstree: str) -> list[tuple[int, str]]:
    """The task lines of a ``pstree`` output: (depth, task name), in output order."""
    tasks = []
    for line in pstree.splitlines():
        match = re.match(r"^([\s│├└─]*)\(T\) (\S+)", line)
        if match:
            tasks.append((len(match.group(1)), match.group(2)))
    return tasks


def rows_of(ps: str) -> set[tuple[str, str, str]]:
    """(task name, coroutine stack, awaiter name) of each row of a ``ps`` output."""
    rows = set()
    for line in ps.splitlines()[2:]:
        fields = re.split(r"\s{2,}", line.strip())
        if len(fields) >= 6:
            _tid, _task_id, name, stack, *rest = fields
            awaiter = rest[-2] if len(rest) >= 3 else ""
            rows.add((name, stack, awaiter))
    return rows


def test_asyncio_pstree_and_ps_show_the_task_tree(tmp_path):
    script = tmp_path / "tree.py"
    script.write_text(PROGRAM)
    child = subprocess.Popen(
        child_command(str(script)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        line = child.stdout.readline().split()
        assert len(line) == 2, child.stderr.read() if child.poll() is not None else line
        pid, loop_module = int(line[0]), line[1]
        tools = {
            command: subprocess.run(
                [sys.executable, "-m", "asyncio", command, str(pid)],
                capture_output=True,
                text=True,
                timeout=60,
                env=child_env(),
            )
            for command in ("pstree", "ps")
        }
    finally:
        child.kill()
        child.communicate()
    for result in tools.values():
        if result.returncode != 0 and re.search(
            r"Operation not permitted|PermissionError|ptrace", result.stderr
        ):
            pytest.skip(f"no ptrace permission over the child: {result.stderr.strip()}")
    for command, result in tools.items():
        assert result.returncode == 0, f"{command}: {result.stderr}"
    assert loop_module == ("asyncio.unix_events" if LOOP_KIND == "asyncio" else "ferroloop._loop")
    tree = tree_of(tools["pstree"].stdout)
    names = [name for _, name in tree]
    assert names[:2] == ["Task-1", "branch"], tools["pstree"].stdout
    assert sorted(names[2:]) == ["busy", "leaf-1", "leaf-2"], tools["pstree"].stdout
    depths = [depth for depth, _ in tree]
    assert depths[0] < depths[1] < min(depths[2:]), tools["pstree"].stdout
    assert len(set(depths[2:])) == 1, tools["pstree"].stdout
    rows = rows_of(tools["ps"].stdout)
    assert ("branch", "TaskGroup._aexit -> TaskGroup.__aexit__ -> branch", "Task-1") in rows, tools[
        "ps"
    ].stdout
    for leaf in ("leaf-1", "leaf-2"):
        assert (leaf, "sleep -> sleeper", "branch") in rows, tools["ps"].stdout
    assert ("busy", "busy", "branch") in rows, tools["ps"].stdout
