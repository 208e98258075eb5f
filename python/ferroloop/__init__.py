"""ferroloop: asyncio's event loop, rebuilt in Rust.

Use it as the loop behind ``asyncio.run()``::

    import asyncio, ferroloop
    ferroloop.run(main())                                   # or
    asyncio.run(main(), loop_factory=ferroloop.new_event_loop)   # Python 3.12+
    with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner: ...

or run an unmodified program: ``python -m ferroloop script.py``.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import warnings
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ._ferroloop import Handle, LoopCore, WatchdogReport, __version__
from ._inspect import (
    LagStats,
    LoopStats,
    TaskInfo,
    TransportInfo,
    inspect_tasks,
    inspect_transports,
)
from ._loop import EventLoop

__all__ = [
    "EventLoop",
    "Handle",
    "LagStats",
    "LoopCore",
    "LoopStats",
    "TaskInfo",
    "TransportInfo",
    "WatchdogReport",
    "__version__",
    "inspect_tasks",
    "inspect_transports",
    "install",
    "new_event_loop",
    "run",
]

if sys.version_info < (3, 14):  # named by a star import only where it does not warn
    __all__ += ["EventLoopPolicy"]

_T = TypeVar("_T")


def new_event_loop(
    *,
    virtual_time: bool = False,
    autojump_threshold: float = 0.0,
    wait_for_executor: bool = True,
    watchdog: float | None = None,
) -> EventLoop:
    """Returns a new ferroloop event loop.

    With ``virtual_time=True`` its ``time()`` starts at 0.0 and jumps to the next timer's
    deadline whenever no callback is ready and no I/O arrives within ``autojump_threshold``
    seconds of real time (``float('inf')``: time moves only by ``loop.advance_time()``).
    While a ``run_in_executor``/``asyncio.to_thread`` job is running the clock does not jump
    (the loop waits for it in real time), unless ``wait_for_executor=False``.
    With ``watchdog=seconds`` (default: ``FERROLOOP_WATCHDOG`` from the environment), the loop
    reports callbacks that block it longer than that, with their stack (``set_watchdog``).
    """
    return EventLoop(
        virtual_time=virtual_time,
        autojump_threshold=autojump_threshold,
        wait_for_executor=wait_for_executor,
        watchdog=watchdog,
    )


def run(
    main: Coroutine[Any, Any, _T],
    *,
    debug: bool | None = None,
    virtual_time: bool = False,
    autojump_threshold: float = 0.0,
    wait_for_executor: bool = True,
) -> _T:
    """Runs coroutine ``main`` on a new ferroloop loop, like ``asyncio.run`` (virtual time:
    see ``new_event_loop``)."""
    if virtual_time:
        factory = functools.partial(
            new_event_loop,
            virtual_time=True,
            autojump_threshold=autojump_threshold,
            wait_for_executor=wait_for_executor,
        )
    else:
        factory = new_event_loop
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main)


# Python 3.14 deprecates event loop policies (removed in 3.16): naming
# ``asyncio.DefaultEventLoopPolicy`` warns there.  So the policy class is made on
# first use, from a base taken without a warning, and ``python -m ferroloop``
# installs it through asyncio's private, warning-free setter.  With no policies
# at all (3.16), the package still imports and ``run``/``new_event_loop`` work.
_POLICIES_DEPRECATED = sys.version_info >= (3, 14)
_policy_class: type | None = None


def _policy_base() -> type | None:
    """asyncio's default policy class, looked up without a deprecation warning."""
    if not _POLICIES_DEPRECATED:
        return getattr(asyncio, "DefaultEventLoopPolicy", None)
    from asyncio import events

    # The platform's default policy, then its base (both private on 3.14/3.15).
    platform = sys.modules.get("asyncio.unix_events") or sys.modules.get("asyncio.windows_events")
    return getattr(platform, "_DefaultEventLoopPolicy", None) or getattr(
        events, "_BaseDefaultEventLoopPolicy", None
    )


def _make_policy_class() -> type:
    global _policy_class
    if _policy_class is None:
        base = _policy_base()
        if base is None:
            raise AttributeError(
                "ferroloop.EventLoopPolicy needs asyncio's event loop policies, which this "
                "Python no longer has; use ferroloop.run() or loop_factory=ferroloop.new_event_loop"
            )

        class EventLoopPolicy(base):  # type: ignore[misc, valid-type]
            """An asyncio event loop policy whose loops are ferroloop loops."""

            def new_event_loop(self) -> EventLoop:  # type: ignore[override]
                return new_event_loop(**_installed_loop_options)

        EventLoopPolicy.__module__ = __name__
        EventLoopPolicy.__qualname__ = "EventLoopPolicy"
        _policy_class = EventLoopPolicy
    return _policy_class


if TYPE_CHECKING:

    class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
        """An asyncio event loop policy whose loops are ferroloop loops."""

        def new_event_loop(self) -> EventLoop: ...  # type: ignore[override]


def __getattr__(name: str) -> Any:
    if name == "EventLoopPolicy":
        policy_class = _make_policy_class()  # AttributeError where asyncio has no policies
        if _POLICIES_DEPRECATED:
            warnings.warn(
                "ferroloop.EventLoopPolicy is deprecated, as asyncio's event loop policies are "
                "since Python 3.14; use asyncio.run(main, loop_factory=ferroloop.new_event_loop)",
                DeprecationWarning,
                stacklevel=2,
            )
        return policy_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def install() -> None:
    """Makes ferroloop the loop behind ``asyncio.run()`` and ``asyncio.new_event_loop()``."""
    if _POLICIES_DEPRECATED:
        warnings.warn(
            "asyncio event loop policies are deprecated since Python 3.14; prefer "
            "asyncio.run(main, loop_factory=ferroloop.new_event_loop)",
            DeprecationWarning,
            stacklevel=2,
        )
    _install_quietly()


# Keywords for the loops the installed policy makes (``python -m ferroloop --virtual-time``).
_installed_loop_options: dict[str, Any] = {}


def _install_quietly(**loop_options: Any) -> None:
    """``install()`` without its warning (``python -m ferroloop``): the policy where asyncio
    has policies, else ferroloop's ``new_event_loop`` behind ``asyncio.new_event_loop``;
    ``loop_options`` go to every loop made that way (``virtual_time=True``)."""
    from asyncio import events

    _installed_loop_options.clear()
    _installed_loop_options.update(loop_options)

    if _POLICIES_DEPRECATED:  # asyncio's setter that does not warn
        setter = getattr(events, "_set_event_loop_policy", None)
    else:
        setter = getattr(asyncio, "set_event_loop_policy", None)
    if setter is not None and _policy_base() is not None:
        setter(_make_policy_class()())
        return
    # No policies (Python 3.16+): asyncio.run()/Runner make their loop with
    # asyncio.events.new_event_loop().
    factory = functools.partial(new_event_loop, **loop_options) if loop_options else new_event_loop
    events.new_event_loop = factory
    asyncio.new_event_loop = factory
