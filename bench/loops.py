"""Event-loop specifications: short names, ``module:factory`` and labels.

A loop is given on the command line as one of

* a known short name: ``asyncio``, ``uvloop``, ``rloop``, ``ferroloop``;
* ``module:factory`` — ``factory`` is a callable attribute (dotted paths
  allowed) of the importable ``module`` that returns a new event loop, e.g.
  ``ferroloop:new_event_loop``;
* ``label=module:factory`` to choose the label shown in reports.

Ratios are computed against the loops whose *label* is ``asyncio``,
``uvloop`` and ``rloop``, so a custom label should not reuse those names.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KNOWN_LOOP_FACTORIES: dict[str, str] = {
    "asyncio": "asyncio:SelectorEventLoop",
    "uvloop": "uvloop:new_event_loop",
    "rloop": "rloop:new_event_loop",
    "ferroloop": "ferroloop:new_event_loop",
    # ferroloop with its watchdog on (loop.set_watchdog(0.1)), to A/B the watchdog's cost.
    "ferroloop-watchdog": "loops:ferroloop_with_watchdog",
    # ...and its metrics read every 0.1 s, as a monitoring agent would (the cost target of
    # issue #13: within 2 % of off).
    "ferroloop-observed": "loops:ferroloop_observed",
    # ferroloop from another build (its python/ directory in $BENCH_FERROLOOP_BEFORE), to
    # compare two commits in one interleaved run (issue #18: no row slower than before).
    "ferroloop-before": "loops:ferroloop_before",
}

#: Environment variable naming the ``python/`` directory of the build ``ferroloop-before`` loads.
BEFORE_BUILD_ENVIRONMENT_VARIABLE = "BENCH_FERROLOOP_BEFORE"


def ferroloop_with_watchdog() -> Any:
    """Return a ferroloop loop with the watchdog on (threshold 0.1 s, the default report)."""
    import ferroloop

    return ferroloop.new_event_loop(watchdog=0.1)


def ferroloop_before() -> Any:
    """Return a loop of the ferroloop build in ``$BENCH_FERROLOOP_BEFORE`` (a ``python/`` dir).

    Each measurement runs in its own worker process, so this build and the current one never
    meet in one interpreter: the directory goes first on ``sys.path`` before the first import.
    """
    directory = os.path.abspath(os.environ[BEFORE_BUILD_ENVIRONMENT_VARIABLE])
    sys.path.insert(0, directory)
    import ferroloop

    if not os.path.abspath(ferroloop.__file__).startswith(directory + os.sep):
        raise ImportError(f"ferroloop was already imported from {ferroloop.__file__}")
    return ferroloop.new_event_loop()


def ferroloop_observed() -> Any:
    """Return a ferroloop loop with the watchdog on and its stats read every 0.1 s."""
    import ferroloop

    loop = ferroloop.new_event_loop(watchdog=0.1)

    def read_stats() -> None:
        loop.stats()
        loop.call_later(0.1, read_stats)

    loop.call_soon(read_stats)
    return loop


@dataclass(frozen=True)
class LoopSpec:
    """A loop as requested on the command line."""

    label: str
    module: str
    factory: str

    @property
    def target(self) -> str:
        """The ``module:factory`` string identifying the factory."""
        return f"{self.module}:{self.factory}"


def parse_loop_spec(text: str) -> LoopSpec:
    """Parse one loop specification (see the module docstring)."""
    text = text.strip()
    label, separator, target = text.partition("=")
    if not separator:
        label, target = text, text
    target = KNOWN_LOOP_FACTORIES.get(target, target)
    module, colon, factory = target.partition(":")
    if not colon or not module or not factory:
        raise ValueError(
            f"bad loop spec {text!r}: use one of {', '.join(KNOWN_LOOP_FACTORIES)}, "
            "module:factory or label=module:factory"
        )
    return LoopSpec(label=label, module=module, factory=factory)


def parse_loop_list(text: str) -> list[LoopSpec]:
    """Parse a comma-separated list of loop specifications, rejecting duplicate labels."""
    specs = [parse_loop_spec(part) for part in text.split(",") if part.strip()]
    labels = [spec.label for spec in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"duplicate loop labels: {', '.join(duplicates)}")
    return specs


def load_loop_factory(module_name: str, factory_path: str) -> Callable[[], Any]:
    """Import ``module_name`` and return its (possibly dotted) ``factory_path`` attribute."""
    factory: Any = importlib.import_module(module_name)
    for attribute in factory_path.split("."):
        factory = getattr(factory, attribute)
    if not callable(factory):
        raise TypeError(f"{module_name}:{factory_path} is not callable")
    return factory


def describe_loop_module(module_name: str) -> str:
    """Return the module's version string, or ``stdlib``/``unknown``."""
    if module_name == "asyncio":
        import platform

        return f"stdlib (CPython {platform.python_version()})"
    module = importlib.import_module(module_name)
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as distribution_version

            version = distribution_version(module_name)
        except Exception:  # noqa: BLE001 - any metadata problem just means "unknown"
            version = "unknown"
    return str(version)
