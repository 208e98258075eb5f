"""Makes ferroloop the loop of every asyncio loop a downstream test suite creates.

Imported at interpreter start-up by a ``.pth`` file that ``scripts/downstream.py`` writes into
each suite's virtual environment, so subprocesses the suite starts are covered too. It does
nothing unless ``FERROLOOP_DOWNSTREAM_LOOP=ferroloop``. Every loop it makes is counted; the
count is written at exit to ``$FERROLOOP_DOWNSTREAM_COUNT_DIR/<pid>`` so that the script can
refuse a run in which the injection made no loop at all (a run that silently tested stock
asyncio).
"""

from __future__ import annotations

import os

_made = 0


def _activate() -> None:
    import asyncio
    import asyncio.events
    import atexit
    import sys

    import ferroloop

    def new_event_loop() -> ferroloop.EventLoop:
        global _made
        _made += 1
        return ferroloop.EventLoop()

    class Policy(asyncio.DefaultEventLoopPolicy):
        """asyncio's default policy whose new loops are ferroloop loops."""

        def new_event_loop(self) -> ferroloop.EventLoop:  # type: ignore[override]
            return new_event_loop()

    if sys.version_info < (3, 14):
        asyncio.set_event_loop_policy(Policy())
    else:  # policies are deprecated: replace the default policy class's factory instead
        asyncio.events._get_event_loop_policy().new_event_loop = new_event_loop  # type: ignore[attr-defined]
    # Code that imported the function before us still goes through the policy; code that
    # calls the module attribute gets the counting factory directly.
    asyncio.new_event_loop = new_event_loop
    asyncio.events.new_event_loop = new_event_loop
    if hasattr(asyncio, "EventLoop"):  # 3.13+: asyncio.EventLoop() names the default loop class

        class CountedEventLoop(ferroloop.EventLoop):
            def __init__(self, *args: object, **kwargs: object) -> None:
                global _made
                _made += 1
                super().__init__(*args, **kwargs)

        asyncio.EventLoop = CountedEventLoop  # type: ignore[misc]

    count_dir = os.environ.get("FERROLOOP_DOWNSTREAM_COUNT_DIR")
    if count_dir:
        pid = os.getpid()

        def write_count() -> None:
            if os.getpid() != pid:  # a forked child that did not exec: its parent reports
                return
            try:
                with open(os.path.join(count_dir, str(pid)), "w") as f:
                    f.write(f"{_made}\n")
            except OSError:
                pass

        atexit.register(write_count)


if os.environ.get("FERROLOOP_DOWNSTREAM_LOOP") == "ferroloop":
    _activate()
