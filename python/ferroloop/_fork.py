"""Fork safety: a child made by ``os.fork()`` (or multiprocessing's fork start method) gets
loops of its own.

An epoll instance, an eventfd and a pipe survive ``fork()`` as kernel objects shared by parent
and child: had the child kept using them, a descriptor it registered or removed would change
the parent's loop, and a wake-up meant for one process could wake the other. In the child,
right after ``fork()``, every ferroloop loop inherited from the parent gets a new epoll
instance, waker and signal pipe (``LoopCore._renew_after_fork``, in Rust) with its watched
descriptors registered again, and the signal wakeup descriptor, if it was the loop's, is
pointed at the new pipe. The parent is never touched; a new loop made in the child is
independent from the start. Costs nothing until a fork happens (one weak reference per loop).
"""

from __future__ import annotations

import os
import signal
import weakref
from typing import Any

#: Every ferroloop loop that may need renewing in a forked child.
_loops: weakref.WeakSet = weakref.WeakSet()


def track(loop: Any) -> None:
    """Remembers ``loop`` (weakly) for the fork handler."""
    _loops.add(loop)


def _renew_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: renews every inherited loop."""
    for loop in list(_loops):
        old_fd = loop._signal_wakeup_fd()
        try:
            loop._renew_after_fork()
        except (OSError, RuntimeError):
            continue
        try:
            current = signal.set_wakeup_fd(-1)
            if current == old_fd and current != -1:
                signal.set_wakeup_fd(loop._signal_wakeup_fd(), warn_on_full_buffer=False)
            elif current != -1:
                signal.set_wakeup_fd(current)
        except (ValueError, OSError):
            pass


os.register_at_fork(after_in_child=_renew_in_child)
