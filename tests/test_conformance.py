"""ferroloop against the running CPython's own ``test.test_asyncio``.

Runs the conformance harness of ``tests/conformance/`` and fails, listing
them, when tests of ``tests/conformance/expected_pass.txt`` (3.11; on other
versions ``expected_pass-3.X.txt``) no longer pass
(each failing one is retried once; ``tests/conformance/flaky.txt`` lists
tests that need not pass).  Tests that pass but are not in the list are
printed, not failed: add them with

    python3 tests/conformance/conformance_run.py --write-expected

With ``FERROLOOP_TEST_LOOP=asyncio`` the same run is made on the stock loop,
which must pass every test of the list (this validates the list).

Takes about a minute; deselect with ``-m "not conformance"``.
"""

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

HARNESS_PATH = Path(__file__).resolve().parent / "conformance" / "conformance_run.py"


def load_harness():
    """Import tests/conformance/conformance_run.py (not a package)."""
    spec = importlib.util.spec_from_file_location("conformance_run", HARNESS_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


conformance_run = load_harness()

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(1200)]

LOOP_KIND = os.environ.get("FERROLOOP_TEST_LOOP", "ferroloop").strip().lower()


def loop_spec_under_test():
    """``--loop`` value for the implementation this pytest run exercises."""
    if LOOP_KIND == "asyncio":
        return "asyncio"
    try:
        import ferroloop
    except ImportError as error:  # an unbuilt package must not pass silently
        pytest.fail(f"ferroloop is not importable, cannot run the conformance suite: {error!r}")
    ferroloop.new_event_loop().close()
    return conformance_run.DEFAULT_LOOP


def test_expected_conformance_tests_still_pass():
    """Every test in expected_pass.txt passes (after one retry) unless flaky."""
    options = conformance_run.Options(loop=loop_spec_under_test())
    started = time.monotonic()
    results = conformance_run.run_modules(options)
    check = conformance_run.check_expectations(results, options)

    print(conformance_run.format_table(results, options, time.monotonic() - started))
    print(
        conformance_run.format_check(
            check, max_new_passes_listed=0 if LOOP_KIND == "asyncio" else 200
        )
    )
    if check.regressions:
        listed = "\n".join(
            f"  {test_id}: {message[:200]}"
            for test_id, message in sorted(check.regressions.items())
        )
        pytest.fail(
            f"{len(check.regressions)} conformance tests of expected_pass.txt "
            f"no longer pass:\n{listed}",
            pytrace=False,
        )
