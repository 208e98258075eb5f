"""The ``EventLoop`` side of the inspection views: ``stats()`` and ``serve_inspector()``.

Apart from ``_inspect.py`` (the views) and ``_inspector.py`` (the socket that serves them), so
that both depend on the views one way; the socket's module is only imported when it is asked for.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from ._inspect import LoopStats


class InspectAPI:
    """``EventLoop`` mixin: ``stats()`` and ``serve_inspector()``."""

    _inspector: Any = None
    _task_births: Any = None
    #: The pipe transports made by this loop (a ``WeakSet``, made with the first one).
    _pipe_transports: Any = None

    def stats(self) -> LoopStats:
        """The loop's metrics (see ``LoopStats`` for each key). Cheap: counters kept by the
        loop at all times, plus the count of live tasks and open pipe transports."""
        result: Any = self._loop_stats()  # type: ignore[attr-defined]
        result["tasks"] = len(asyncio.all_tasks(self))  # type: ignore[arg-type]
        if self._pipe_transports:
            result["transports"] += len(self._open_pipe_transports())
        return result

    def _note_pipe_transport(self, transport: Any) -> None:
        """Remembers a new pipe transport (weakly) for ``inspect_transports`` and ``stats``."""
        pipes = self._pipe_transports
        if pipes is None:
            pipes = self._pipe_transports = weakref.WeakSet()
        pipes.add(transport)

    def _open_pipe_transports(self) -> list[tuple[int, Any]]:
        """The pipe transports not closing, with their descriptors, in descriptor order
        (closing ones are forgotten, as the transport registry forgets a closing socket)."""
        pipes = self._pipe_transports
        if not pipes:
            return []
        found = []
        for transport in list(pipes):
            if transport.is_closing():
                pipes.discard(transport)
            else:
                found.append((transport._fileno, transport))
        found.sort(key=lambda entry: entry[0])
        return found

    def serve_inspector(self) -> str:
        """Serves ``stats()``, ``inspect_tasks()`` and ``inspect_transports()`` on a Unix
        socket only this user can use (mode 0600, in a private directory), for
        ``python -m ferroloop ps|top PID``; returns its path. The socket is removed when the
        loop closes. Idempotent."""
        from ._inspector import InspectorServer

        if self._inspector is None:
            self._inspector = InspectorServer.start(self)
            # From now on create_task notes each task's creation time (its age in
            # inspect_tasks); tasks made before have no known age.
            self._task_births = weakref.WeakKeyDictionary()
            self._track_task_births(self._task_births)  # type: ignore[attr-defined]
            # ...and times each callback for the task it steps (top's busiest tasks).
            self._profile_tasks(True)  # type: ignore[attr-defined]
        return self._inspector.path

    def _close_inspector(self) -> None:
        inspector, self._inspector = self._inspector, None
        if inspector is not None:
            self._track_task_births(None)  # type: ignore[attr-defined]
            self._profile_tasks(False)  # type: ignore[attr-defined]
            self._task_births = None
            inspector.close()
