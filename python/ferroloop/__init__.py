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
import sys
import warnings
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._ferroloop import Handle, LoopCore, __version__
from ._loop import EventLoop

__all__ = [
    "EventLoop",
    "EventLoopPolicy",
    "Handle",
    "LoopCore",
    "__version__",
    "install",
    "new_event_loop",
    "run",
]

_T = TypeVar("_T")


def new_event_loop() -> EventLoop:
    """Returns a new ferroloop event loop."""
    return EventLoop()


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Runs coroutine ``main`` on a new ferroloop loop, like ``asyncio.run``."""
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An asyncio event loop policy whose loops are ferroloop loops."""

    def new_event_loop(self) -> EventLoop:  # type: ignore[override]
        return new_event_loop()


def install() -> None:
    """Makes ferroloop the loop behind ``asyncio.run()`` and ``asyncio.new_event_loop()``."""
    if sys.version_info >= (3, 14):
        warnings.warn(
            "asyncio event loop policies are deprecated since Python 3.14; prefer "
            "asyncio.run(main, loop_factory=ferroloop.new_event_loop)",
            DeprecationWarning,
            stacklevel=2,
        )
    asyncio.set_event_loop_policy(EventLoopPolicy())
