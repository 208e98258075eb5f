"""pytest plugin: runs a project's async tests on ferroloop, whichever way they make loops.

Enable it with ``pytest -p ferroloop.pytest_plugin``, with
``pytest_plugins = ["ferroloop.pytest_plugin"]`` in the rootdir's ``conftest.py``, or, where
ferroloop is installed (it registers this module as a ``pytest11`` entry point, which pytest
loads in every run), with ``pytest --ferroloop``. Loaded by the entry point alone it does
nothing: it is off unless asked (then a test marked ``@pytest.mark.ferroloop(virtual_time=True)``
fails, saying how to turn the plugin on, instead of running in real time on stock asyncio).
Once on, every loop made through asyncio's policy or ``asyncio.new_event_loop()`` is a
ferroloop loop, which covers:

- pytest-asyncio (0.23 and 1.x: its loops come from the event loop policy, or from
  ``asyncio.Runner`` without a loop factory, which asks the policy);
- anyio's pytest plugin (``anyio_backend = "asyncio"``: ``asyncio.Runner`` without a loop
  factory), unless the project passes its own ``loop_factory`` in the backend options;
- ``unittest.IsolatedAsyncioTestCase`` (its ``asyncio.Runner``; on 3.13+ a class may set
  ``loop_factory`` itself, which is then used as given);
- ``asyncio.run`` and ``asyncio.new_event_loop`` called by the tests themselves.

``@pytest.mark.ferroloop(virtual_time=True, autojump_threshold=0.0, wait_for_executor=True)``
on a test gives the loops made while it runs (its function-scoped fixtures included) virtual
time: see ``ferroloop.new_event_loop``. A loop made before the test (a fixture of wider scope)
is not changed, with one exception: with pytest-asyncio 1.4+ (the
``pytest_asyncio_loop_factories`` hook) the plugin names the loop factory of every
pytest-asyncio test (a project's own implementation of the hook wins; one factory leaves
the test ids unchanged), so a marked test whose ``loop_scope`` is wider than
the function gets its own loop, with the marker's options (and the async fixtures of that
scope it uses are set up again on it), and unmarked tests keep sharing theirs. With older
pytest-asyncio a marked test whose loop is made before it runs in real time, and the plugin
warns about it.

At the end the terminal summary says how many ferroloop loops were made; ``--ferroloop-strict``
fails the session when tests ran but none was made (the plugin then tested nothing).
"""

from __future__ import annotations

import asyncio
import asyncio.events
import os
import sys
import types
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import ferroloop

# ferroloop itself is imported only once the plugin is on: loaded by the entry point alone,
# the plugin must cost nothing (nor touch asyncio's deprecated policy classes on 3.14+).
_state: dict[str, Any] = {
    "made": 0,
    "made_in_test": 0,
    "saved": None,
    "active": False,
    "loop_options": {},
}


def _new_event_loop() -> ferroloop.EventLoop:
    return _make_loop(_state["loop_options"])


def _make_loop(options: dict[str, Any]) -> ferroloop.EventLoop:
    import ferroloop

    _state["made"] += 1
    _state["made_in_test"] += 1
    return ferroloop.EventLoop(**options)


#: One loop factory per set of marker options: pytest-asyncio keeps a scoped loop while its
#: factory stays the same object, and makes a new loop when the factory changes.
_factories: dict[tuple, Any] = {}


def _factory_for(options: dict[str, Any]) -> Any:
    key = tuple(sorted((name, repr(value)) for name, value in options.items()))
    factory = _factories.get(key)
    if factory is None:
        frozen = dict(options)

        def factory() -> ferroloop.EventLoop:
            return _make_loop(frozen)

        _factories[key] = factory
    return factory


class _PytestAsyncioHooks:
    """Registered when the plugin is on: pytest-asyncio 1.4+ asks it for each async test's
    loop factory (``optionalhook``: older pytest-asyncio never calls it)."""

    @pytest.hookimpl(optionalhook=True, trylast=True)  # a project's own hook wins
    def pytest_asyncio_loop_factories(self, config: pytest.Config, item: pytest.Item) -> Any:
        marker = item.get_closest_marker("ferroloop")
        options = dict(marker.kwargs) if marker is not None else {}
        return {"ferroloop": _factory_for(options)}


def _policy() -> asyncio.AbstractEventLoopPolicy:
    """asyncio's default policy whose new loops are (counted) ferroloop loops (< 3.14)."""

    class _Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> ferroloop.EventLoop:  # type: ignore[override]
            return _new_event_loop()

    return _Policy()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ferroloop")
    group.addoption(
        "--ferroloop",
        action="store_true",
        help="run the tests' event loops on ferroloop (implied by -p ferroloop.pytest_plugin)",
    )
    group.addoption(
        "--ferroloop-strict",
        action="store_true",
        help="fail the session if tests ran but no ferroloop loop was made",
    )


def _named_by_a_conftest(config: pytest.Config) -> bool:
    """True if a conftest loaded so far (the initial ones: pytest refuses ``pytest_plugins``
    in the others) names this module in its ``pytest_plugins``. Where the entry point loaded
    the module first, pytest skips the conftest's import of it, so only the name is left."""
    for plugin in config.pluginmanager.get_plugins():
        if not isinstance(plugin, types.ModuleType) or plugin is sys.modules[__name__]:
            continue
        names = getattr(plugin, "pytest_plugins", None)
        if isinstance(names, str):
            names = [names]
        if isinstance(names, (list, tuple)) and __name__ in names:
            return True
    return False


def _asked_for(config: pytest.Config) -> bool:
    """On with --ferroloop, or when the module was named (``-p ferroloop.pytest_plugin``,
    ``PYTEST_PLUGINS``, a conftest's ``pytest_plugins``), or loaded other than by the
    ``pytest11`` entry point; off when only the entry point loaded it. (pytest loads a ``-p``
    name through the entry point of that name when there is one, so the ``-p`` options are
    looked at.)"""
    if config.getoption("ferroloop", False):
        return True
    named = list(getattr(config.option, "plugins", None) or [])
    named += os.environ.get("PYTEST_PLUGINS", "").split(",")
    if __name__ in (name.strip() for name in named):
        return True
    if _named_by_a_conftest(config):
        return True
    this = sys.modules[__name__]
    return not any(plugin is this for plugin, _dist in config.pluginmanager.list_plugin_distinfo())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ferroloop(virtual_time=False, autojump_threshold=0.0): options of the ferroloop "
        "loops made while the test runs",
    )
    _state["active"] = _asked_for(config)
    if not _state["active"]:
        return
    saved = (
        asyncio.new_event_loop,
        asyncio.events.new_event_loop,
        asyncio.events._event_loop_policy,  # type: ignore[attr-defined]
    )
    _state["saved"] = saved
    if sys.version_info < (3, 14):
        asyncio.set_event_loop_policy(_policy())
    else:  # policies are deprecated on 3.14+: the default policy's factory is replaced
        policy = asyncio.events._get_event_loop_policy()  # type: ignore[attr-defined]
        policy.new_event_loop = _new_event_loop
    asyncio.new_event_loop = _new_event_loop
    asyncio.events.new_event_loop = _new_event_loop
    config.pluginmanager.register(_PytestAsyncioHooks(), "ferroloop-pytest-asyncio-hooks")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _state["active"]:
        return
    saved = _state.pop("saved", None)
    if saved is not None:
        asyncio.new_event_loop, asyncio.events.new_event_loop, policy = saved
        asyncio.events._event_loop_policy = policy  # type: ignore[attr-defined]
    count_dir = os.environ.get("FERROLOOP_DOWNSTREAM_COUNT_DIR")
    if count_dir:  # scripts/downstream.py adds up the loops made
        with open(os.path.join(count_dir, f"plugin-{os.getpid()}"), "w") as f:
            f.write(f"{_state['made']}\n")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _state["active"]:
        return
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
    _state["made_in_test"] = 0
    try:
        yield
    finally:
        _state["loop_options"] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    yield
    marker = item.get_closest_marker("ferroloop")
    if _state["active"] and marker is not None and marker.kwargs.get("virtual_time"):
        if not _state["made_in_test"]:  # none in the test's setup or call
            item.warn(pytest.PytestWarning(_NO_LOOP_MESSAGE))


#: Why a test marked for virtual time may have run in real time.
_NO_LOOP_MESSAGE = (
    "@pytest.mark.ferroloop(virtual_time=True): no event loop was made while this test ran, "
    "so it ran on a loop made before it (a fixture of wider scope, e.g. a pytest-asyncio "
    "loop_scope='module' or 'session' loop; pytest-asyncio 1.4+ gives marked tests their own "
    "loop), or made none: that loop is not on virtual time. Give the test a loop of its own "
    "(pytest-asyncio: loop_scope='function')."
)


#: Why a marked test fails while the plugin is off, and how to turn it on.
_OFF_MESSAGE = (
    "@pytest.mark.ferroloop({options}) has no effect: the ferroloop pytest plugin is off "
    "(loaded only by its entry point), so this test would run on stock asyncio{consequence}. "
    "Turn it on with `pytest --ferroloop` (or `-p ferroloop.pytest_plugin`, or "
    '`addopts = "--ferroloop"` in the pytest configuration).'
)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _state["active"]:
        return
    marker = item.get_closest_marker("ferroloop")
    if marker is None:
        return
    options = ", ".join(f"{key}={value!r}" for key, value in marker.kwargs.items())
    if marker.kwargs.get("virtual_time"):
        message = _OFF_MESSAGE.format(options=options, consequence=" in real time")
        pytest.fail(message, pytrace=False)
    item.warn(pytest.PytestWarning(_OFF_MESSAGE.format(options=options, consequence="")))
