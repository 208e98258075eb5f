"""pytest plugin: writes each test's final outcome to ``$FERROLOOP_DOWNSTREAM_REPORT``.

One JSON object per line, ``{"nodeid": ..., "outcome": ...}``, with outcome one of
``passed``, ``failed`` (the call failed, or setup/teardown errored), ``skipped``,
``xfailed``, ``xpassed``. ``scripts/downstream.py`` compares the failed ones against the
suite's committed list of tests that fail on stock asyncio too.
"""

from __future__ import annotations

import json
import os

_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report) -> None:  # type: ignore[no-untyped-def]
    nodeid = report.nodeid
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        else:
            outcome = report.outcome
        if _outcomes.get(nodeid) != "failed":
            _outcomes[nodeid] = outcome
    elif report.failed:  # setup or teardown error
        _outcomes[nodeid] = "failed"
    elif report.when == "setup" and report.skipped:
        _outcomes[nodeid] = "xfailed" if hasattr(report, "wasxfail") else "skipped"


def pytest_collectreport(report) -> None:  # type: ignore[no-untyped-def]
    if report.failed:  # a module that fails to import is one failure under its own id
        _outcomes[report.nodeid] = "failed"


def pytest_sessionfinish(session) -> None:  # type: ignore[no-untyped-def]
    path = os.environ.get("FERROLOOP_DOWNSTREAM_REPORT")
    # xdist workers report through the controller
    if not path or hasattr(session.config, "workerinput"):
        return
    with open(path, "w") as f:
        for nodeid, outcome in _outcomes.items():
            f.write(json.dumps({"nodeid": nodeid, "outcome": outcome}) + "\n")
