"""pytest plugin: runs a project's async tests on ferroloop, whichever way they make loops.

Enable it with ``pytest -p ferroloop.pytest_plugin``. From then on every loop made through
asyncio's policy or ``asyncio.new_event_loop()`` is a ferroloop loop, which covers:

- pytest-asyncio (0.23 and 1.x: its loops come from the event loop policy, or from
  ``asyncio.Runner`` without a loop factory, which asks the policy);
- anyio's pytest plugin (``anyio_backend = "asyncio"``: ``asyncio.Runner`` without a loop
  factory), unless the project passes its own ``loop_factory`` in the backend options;
- ``unittest.IsolatedAsyncioTestCase`` (its ``asyncio.Runner``; on 3.13+ a class may set
  ``loop_factory`` itself, which is then used as given);
- ``asyncio.run`` and ``asyncio.new_event_loop`` called by the tests themselves.

``@pytest.mark.ferroloop(virtual_time=True, autojump_threshold=0.0)`` on a test gives the
loops made while it runs (its function-scoped fixtures included) virtual time: see
``ferroloop.new_event_loop``. Loops of wider scope made before the test are left as they are.

At the end the terminal summary says how many ferroloop loops were made; ``--ferroloop-strict``
fails the session when tests ran but none was made (the plugin then tested nothing).
"""

from __future__ import annotations

import asyncio
import asyncio.events
import os
import sys
from typing import Any

import pytest

import ferroloop

_state: dict[str, Any] = {"made": 0, "saved": None, "loop_options": {}}


def _new_event_loop() -> ferroloop.EventLoop:
    _state["made"] += 1
    return ferroloop.EventLoop(**_state["loop_options"])


class _Policy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy whose new loops are (counted) ferroloop loops."""

    def new_event_loop(self) -> ferroloop.EventLoop:  # type: ignore[override]
        return _new_event_loop()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ferroloop")
    group.addoption(
        "--ferroloop-strict",
        action="store_true",
        help="fail the session if tests ran but no ferroloop loop was made",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ferroloop(virtual_time=False, autojump_threshold=0.0): options of the ferroloop "
        "loops made while the test runs",
    )
    saved = (
        asyncio.new_event_loop,
        asyncio.events.new_event_loop,
        asyncio.events._event_loop_policy,  # type: ignore[attr-defined]
    )
    _state["saved"] = saved
    if sys.version_info < (3, 14):
        asyncio.set_event_loop_policy(_Policy())
    else:  # policies are deprecated on 3.14+: the default policy's factory is replaced
        policy = asyncio.events._get_event_loop_policy()  # type: ignore[attr-defined]
        policy.new_event_loop = _new_event_loop
    asyncio.new_event_loop = _new_event_loop
    asyncio.events.new_event_loop = _new_event_loop


def pytest_unconfigure(config: pytest.Config) -> None:
    saved = _state.pop("saved", None)
    if saved is not None:
        asyncio.new_event_loop, asyncio.events.new_event_loop, policy = saved
        asyncio.events._event_loop_policy = policy  # type: ignore[attr-defined]
    count_dir = os.environ.get("FERROLOOP_DOWNSTREAM_COUNT_DIR")
    if count_dir:  # scripts/downstream.py adds up the loops made
        with open(os.path.join(count_dir, f"plugin-{os.getpid()}"), "w") as f:
            f.write(f"{_state['made']}\n")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    terminalreporter.write_line(f"ferroloop: {_state['made']} event loop(s) made by the plugin")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if (
        session.config.getoption("ferroloop_strict")
        and session.testscollected
        and not _state["made"]
    ):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(hookwrapper=True)  # the old style: pytest 7 has no wrapper=True
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    marker = item.get_closest_marker("ferroloop")
    if marker is not None and marker.args:
        raise pytest.UsageError("@pytest.mark.ferroloop takes keyword arguments only")
    _state["loop_options"] = dict(marker.kwargs) if marker is not None else {}
    try:
        yield
    finally:
        _state["loop_options"] = {}
