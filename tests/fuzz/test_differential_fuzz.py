"""Differential fuzzing: random programs over the loop API, run on stock asyncio and on
ferroloop, must leave identical traces (``fuzz_interp`` says what a trace holds and how the
programs are kept deterministic; ``fuzz_program`` how they are drawn).

CI runs a bounded number of programs (``FERROLOOP_FUZZ_EXAMPLES``, default 40) from a fixed
seed; ``scripts/fuzz.sh N`` runs N random programs. A program is compared only when neither
run was disturbed by the machine (a stall that let wall-clock time decide an order); a
difference is reported only when three undisturbed runs in a row show it identically. Every
divergence found this way became a fixed bug and a regular test (``tests/test_fuzz_findings.py``).
"""

from __future__ import annotations

import asyncio
import os
import pprint

import pytest

hypothesis = pytest.importorskip("hypothesis")

import fuzz_interp  # noqa: E402
import fuzz_program  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

#: Programs per run (CI's bounded budget unless overridden).
EXAMPLES = int(os.environ.get("FERROLOOP_FUZZ_EXAMPLES", "40"))

#: Random programs (scripts/fuzz.sh) instead of CI's fixed sequence.
RANDOM = os.environ.get("FERROLOOP_FUZZ_RANDOM", "") == "1"

#: A file where every difference seen (repeated or not) is appended, for fuzzer work.
LOG = os.environ.get("FERROLOOP_FUZZ_LOG", "")

#: How many undisturbed runs in a row must show the same difference before it is reported.
REPEATS = 3

#: How often a disturbed or differing program is run again before giving up on it.
ATTEMPTS = 8

STATS = fuzz_interp.STATS


def first_difference(left: tuple, right: tuple) -> str:
    """Where two traces first differ, readably."""
    lines = []
    main_a, main_b = left[0], right[0]
    for n, (x, y) in enumerate(zip(main_a, main_b, strict=False)):
        if x != y:
            lines.append(f"main trace, event {n}:\n  asyncio:   {x!r}\n  ferroloop: {y!r}")
            lines.append("  context: " + pprint.pformat(main_a[max(0, n - 5) : n]))
            break
    else:
        if len(main_a) != len(main_b):
            n = min(len(main_a), len(main_b))
            lines.append(
                f"main trace lengths {len(main_a)} != {len(main_b)}; "
                f"asyncio then {main_a[n : n + 3]!r}, ferroloop then {main_b[n : n + 3]!r}"
            )
    for key in sorted(set(left[1]) | set(right[1])):
        a, b = left[1].get(key), right[1].get(key)
        if a != b:

            def fmt(e):
                return e if not isinstance(e[-1], bytes) else (*e[:-1], len(e[-1]))

            lines.append(
                f"channel {key}:\n  asyncio:   {[fmt(e) for e in a or []]!r}\n"
                f"  ferroloop: {[fmt(e) for e in b or []]!r}"
            )
    return "\n".join(lines)


def compare(program: dict, factory=None) -> None:
    """Runs ``program`` on stock asyncio and on ``factory``'s loops (ferroloop's by default);
    fails on a difference that repeats."""
    if factory is None:
        import ferroloop

        factory = ferroloop.new_event_loop
    STATS["programs"] += 1
    seen = []
    for _attempt in range(ATTEMPTS):
        stock = fuzz_interp.run_program(asyncio.new_event_loop, program)
        ours = fuzz_interp.run_program(factory, program)
        STATS["steps"] += stock.steps + ours.steps
        if stock.disturbed or ours.disturbed:
            STATS["disturbed"] += 1
            if LOG:
                with open(LOG, "a") as log:
                    print(
                        f"disturbed: asyncio {stock.disturbed} {stock.lateness:.2f} "
                        f"ferroloop {ours.disturbed} {ours.lateness:.2f} "
                        f"events {len(stock.trace)}",
                        file=log,
                    )
            continue
        if stock.result() == ours.result():
            STATS["compared"] += 1
            return
        STATS["retried"] += 1
        seen.append((stock.result(), ours.result()))
        if LOG:
            with open(LOG, "a") as log:
                print(pprint.pformat(program, width=100), file=log)
                print(first_difference(*seen[-1]) + "\n", file=log)
        if len(seen) >= REPEATS:
            (a1, f1), *others = seen[-REPEATS:]
            if all(a1 == a2 and f1 == f2 for a2, f2 in others):
                pytest.fail(
                    "ferroloop diverges from asyncio on this program:\n"
                    + pprint.pformat(program, width=100)
                    + "\n"
                    + first_difference(a1, f1),
                    pytrace=False,
                )
    # Every attempt was disturbed, or differed differently: the machine is too busy for this
    # program now (counted, not failed).
    STATS["unstable"] += 1


@pytest.mark.ferroloop_only
@pytest.mark.timeout(1800)
# Tasks a program left stuck (they caught every cancellation) are closed when collected; a
# TaskGroup inside one then ignores GeneratorExit, as on both loops alike: not a finding.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not RANDOM,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
@given(fuzz_program.programs)
def test_asyncio_and_ferroloop_traces_match(program):
    compare(program)


class PlantedBugLoop(asyncio.SelectorEventLoop):
    """Stock asyncio with one planted difference: remove_reader always says it removed one."""

    def remove_reader(self, fd):
        super().remove_reader(fd)
        return True


def test_the_comparison_catches_a_planted_difference():
    """The fuzzer's comparison is not vacuous: a loop that differs in one return value fails."""
    program = {
        "main": [("soon", 0)],
        "bodies": [[("fut",), ("set_result", 0, 1)]],
        "coros": [[]],
        "pairs": [(False, None)],
        "io": [(1, [("rm_reader", 0), ("peer_send", 0, 1)])],
        "debug": False,
    }
    compare(program, asyncio.new_event_loop)  # stock against itself: identical
    with pytest.raises(pytest.fail.Exception, match="rm_reader', True"):
        compare(program, PlantedBugLoop)
