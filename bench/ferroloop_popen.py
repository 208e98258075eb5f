"""ferroloop with its children started by ``subprocess.Popen``: the spawn before ``posix_spawn``.

The "before" of the spawn comparison in ``bench/RESULTS.md``; use as a loop spec:
``--loops ferroloop-popen=ferroloop_popen:new_event_loop``.
"""

from __future__ import annotations

import ferroloop
from ferroloop import _subprocess


def new_event_loop():
    """Return a ferroloop loop; every child of the process is then started by ``Popen``."""
    _subprocess._FORCE_POPEN = True
    return ferroloop.new_event_loop()
