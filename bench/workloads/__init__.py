"""Workload registry for the ferroloop benchmark suite.

A *workload* is one measurement that runs inside a fresh worker process on one
event loop and returns a flat ``{metric_key: float}`` mapping.  Workloads live in
modules of this package; every module exports a ``WORKLOADS`` list of
:class:`Workload` objects and is discovered automatically, so adding e.g. a
network echo workload later is a matter of dropping ``tcp_echo.py`` next to
``callbacks.py``.

Contract of ``Workload.run(loop, scale)``:

* ``loop`` is a brand-new event loop, already installed with
  ``asyncio.set_event_loop``; the workload drives it itself (usually via
  ``loop.run_until_complete``) and must not close it.
* ``scale`` multiplies the amount of work (1.0 = the documented size); use
  :func:`scaled` so that tiny scales used for smoke tests still do some work.
* It returns a dict whose keys are the ``key`` of every :class:`Metric` it
  declares.  Extra keys are kept in the JSON output but not tabulated.
* It raises :class:`WorkloadUnavailable` when *this loop* lacks something the
  workload needs (e.g. ``loop.sock_recv``); the run then reports the
  (workload, loop) pair as unavailable instead of failed.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MeasureFunction = Callable[[Any, float], dict[str, float]]
#: ``native(binary, scale) -> (metrics, server process costs)``: the same measurement
#: against a compiled, Python-free server (see ``Workload.native``).
NativeMeasureFunction = Callable[[str, float], tuple[dict[str, float], dict[str, Any]]]


class WorkloadUnavailable(Exception):  # noqa: N818 - reads as a state, like StopIteration
    """Raised by ``Workload.run`` when the loop under test cannot run the workload."""


@dataclass(frozen=True)
class Metric:
    """One number reported by a workload.

    ``higher_is_better`` decides the direction of ratios: the suite always
    reports ratios so that a value above 1 means "better than the reference".
    """

    key: str
    label: str
    unit: str = ""
    higher_is_better: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable description of the metric."""
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
        }


@dataclass(frozen=True)
class Workload:
    """A named measurement, its metrics and the function that performs it.

    ``unavailable_reason`` may return a human-readable reason when the workload
    cannot run on this machine (e.g. an external load generator is missing);
    it is evaluated in the parent process before any worker is started.

    ``cpu_bound`` workloads keep the worker's CPU busy for the whole
    measurement.  Where Linux schedstat is unavailable, the runner detects a
    disturbed measurement of such a workload by CPU time well below wall time;
    workloads that sleep by design (timer precision) or wait on a client
    process set it to False.  ``timing_sensitive`` False (memory footprints)
    turns the disturbance check off: another process holding the CPU changes
    how long such a measurement takes, not its result.

    ``native``, when set, measures the same thing against the compiled
    ``native-echo`` server (no Python, no event loop) whose binary path it is
    given; the runner shows it as the pseudo-loop ``native``, the floor the
    loops are compared with.  It returns the metrics and the server process's
    costs (``wall_s``, ``run_delay_s``, CPU times, ``max_rss_kib``).

    ``services`` names real servers the workload talks to (``"postgres"``,
    ``"redis"``): ``bench/run.py`` starts each one once for the whole run
    (``scripts/downstream_services.py``) and the workers find them through the
    environment it exports.
    """

    name: str
    description: str
    metrics: tuple[Metric, ...]
    run: MeasureFunction
    unavailable_reason: Callable[[], str | None] = field(default=lambda: None)
    cpu_bound: bool = True
    timing_sensitive: bool = True
    native: NativeMeasureFunction | None = None
    services: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable description of the workload."""
        return {
            "name": self.name,
            "description": self.description,
            "metrics": [metric.as_dict() for metric in self.metrics],
            "native": self.native is not None,
        }


def scaled(base_count: int, scale: float, minimum: int = 10) -> int:
    """Return ``base_count * scale`` rounded, but never below ``minimum``."""
    return max(minimum, round(base_count * scale))


def discover_workloads() -> dict[str, Workload]:
    """Import every module of this package and collect its ``WORKLOADS``.

    Returns the workloads keyed by name, in module order then declaration
    order.  Duplicate names are a programming error and raise ``ValueError``.
    """
    registry: dict[str, Workload] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for workload in getattr(module, "WORKLOADS", ()):
            if workload.name in registry:
                raise ValueError(f"duplicate workload name {workload.name!r}")
            registry[workload.name] = workload
    return registry


def select_workloads(registry: dict[str, Workload], selection: str) -> list[Workload]:
    """Resolve a comma-separated selection against ``registry``.

    Each item is either ``all``, an exact workload name (``timers.burst``) or a
    module prefix (``timers`` selects every ``timers.*`` workload).  Order of
    the result follows the registry; unknown items raise ``KeyError``.
    """
    wanted: set[str] = set()
    for item in (part.strip() for part in selection.split(",")):
        if not item:
            continue
        if item == "all":
            wanted.update(registry)
            continue
        matches = [name for name in registry if name == item or name.startswith(item + ".")]
        if not matches:
            raise KeyError(f"unknown workload {item!r}; known: {', '.join(registry)}")
        wanted.update(matches)
    return [workload for name, workload in registry.items() if name in wanted]
