"""Ctrl-C handling: SIGINT cancels the main task of ``asyncio.run`` promptly."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

_IDLE_MAIN = """
    import asyncio
    import time

    async def main():
        print("ready", flush=True)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            print(f"cancelled {time.monotonic():.6f}", flush=True)
            raise
        finally:
            print(f"cleanup {time.monotonic():.6f}", flush=True)
        print("sleep finished", flush=True)

    asyncio.run(main())
    print("after run", flush=True)
"""

#: Maximum delay from ``kill()`` to the cleanup print in the child.
MAX_REACTION_SECONDS = 0.050


@pytest.mark.timeout(30)
def test_sigint_cancels_idle_main_task_promptly(child):
    """SIGINT during ``await asyncio.sleep(10)``: cancel, clean up, KeyboardInterrupt."""
    script = child.script("idle_main.py", _IDLE_MAIN)
    proc = subprocess.Popen(
        child.command(str(script)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child.env(),
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        time.sleep(0.2)  # let the loop settle into its idle wait
        sent_at = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    lines = stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["cancelled", "cleanup"], (stdout, stderr)
    cleanup_at = float(lines[1].split()[1])
    reaction = cleanup_at - sent_at
    assert 0 <= reaction < MAX_REACTION_SECONDS, (
        f"cleanup ran {reaction * 1000:.1f} ms after SIGINT"
    )
    assert proc.returncode == -signal.SIGINT, stderr
    assert stderr.startswith("Traceback (most recent call last):\n"), stderr
    assert stderr.rstrip("\n").splitlines()[-1] == "KeyboardInterrupt"


@pytest.mark.timeout(30)
def test_sigint_handled_by_program_lets_it_finish(child):
    """A program that catches the KeyboardInterrupt from asyncio.run carries on."""
    script = child.script(
        "handles_ctrl_c.py",
        """
        import asyncio
        import sys

        async def main():
            print("ready", flush=True)
            await asyncio.sleep(10)

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(7)
        """,
    )
    proc = subprocess.Popen(
        child.command(str(script)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child.env(),
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert stdout == "interrupted\n"
    assert proc.returncode == 7, stderr
    assert stderr == ""


def _start(child, name: str, source: str) -> subprocess.Popen:
    """Start ``source`` as a child program and wait for its ``ready`` line."""
    script = child.script(name, source)
    proc = subprocess.Popen(
        child.command(str(script)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child.env(),
    )
    assert proc.stdout.readline() == "ready\n"
    return proc


@pytest.mark.timeout(30)
def test_sigint_cancels_busy_main_task(child):
    """SIGINT while the main task keeps the loop busy cancels it at its next await."""
    proc = _start(
        child,
        "busy_main.py",
        """
        import asyncio
        import time

        async def main():
            print("ready", flush=True)
            try:
                while True:
                    await asyncio.sleep(0)
            finally:
                print(f"cleanup {time.monotonic():.6f}", flush=True)

        asyncio.run(main())
        """,
    )
    try:
        time.sleep(0.2)
        sent_at = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert stdout.startswith("cleanup "), (stdout, stderr)
    reaction = float(stdout.split()[1]) - sent_at
    assert 0 <= reaction < MAX_REACTION_SECONDS, f"{reaction * 1000:.1f} ms"
    assert proc.returncode == -signal.SIGINT
    assert stderr.rstrip("\n").splitlines()[-1] == "KeyboardInterrupt"


@pytest.mark.timeout(30)
def test_second_sigint_interrupts_slow_cleanup(child):
    """A second SIGINT during a slow cleanup raises KeyboardInterrupt at once."""
    proc = _start(
        child,
        "slow_cleanup.py",
        """
        import asyncio

        async def main():
            print("ready", flush=True)
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                print("cleaning up", flush=True)
                await asyncio.sleep(10)
                print("cleanup finished", flush=True)
                raise

        asyncio.run(main())
        """,
    )
    try:
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.stdout.readline() == "cleaning up\n"
        time.sleep(0.1)
        sent_at = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
        elapsed = time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert stdout == ""
    assert elapsed < 2.0, f"process took {elapsed:.2f} s to exit after the second SIGINT"
    assert proc.returncode == -signal.SIGINT
    assert stderr.rstrip("\n").splitlines()[-1] == "KeyboardInterrupt"
