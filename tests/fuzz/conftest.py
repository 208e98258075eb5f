"""Prints the size of the differential fuzzing run in pytest's terminal summary (CI's log says
how much was fuzzed)."""

from __future__ import annotations

import fuzz_interp


def pytest_terminal_summary(terminalreporter) -> None:
    stats = fuzz_interp.STATS
    if not stats["programs"]:
        return
    terminalreporter.write_line(
        f"differential fuzz: {stats['programs']} programs, {stats['compared']} compared "
        f"identical on asyncio and ferroloop, {stats['steps']} trace events; "
        f"{stats['disturbed']} runs disturbed by the machine and rerun, {stats['retried']} "
        f"reruns after a difference, {stats['unstable']} programs given up as unstable"
    )
