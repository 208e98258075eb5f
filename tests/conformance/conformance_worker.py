"""Worker process of the conformance harness: runs one module of
``test.test_asyncio`` with the loop under test (LUT) installed.

Started by ``conformance_run.py``, never by hand::

    python conformance_worker.py --module test_tasks --loop SPEC
        --timeout SECONDS --report-fd FD [--skip FILE] [--only FILE] [-k PATTERN]

It writes one JSON object per line to file descriptor FD:

* ``{"event": "plan", "tests": [...], "excluded": {id: reason},
  "deferred": {id: reason}, "loop_type": "..."}`` once, before any test;
* ``{"event": "start", "id": ...}`` and ``{"event": "end", "id": ...,
  "outcome": ..., "message": ..., "traceback": ..., "seconds": ...,
  "lut_loops": N, "stock_loops": N}`` around every test;
* ``{"event": "fixture_error", ...}`` for errors outside a test
  (setUpClass, tearDownModule);
* ``{"event": "finished"}`` at the end.

Every test runs under ``faulthandler.dump_traceback_later(timeout,
exit=True)``: a test that hangs dumps its stack to stderr and ends the
process; the parent records it and starts a new worker that skips the tests
already done.
"""

import argparse
import fnmatch
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
import unittest
from typing import ClassVar

import conformance_plan as plan


def load_loop_factory(loop_spec):
    """Return the zero-argument callable named by ``--loop``.

    ``asyncio`` is the stock ``asyncio.SelectorEventLoop``; otherwise
    ``module:attribute`` (dotted attribute allowed).
    """
    if loop_spec == "asyncio":
        import asyncio

        return asyncio.SelectorEventLoop
    module_name, sep, attribute_path = loop_spec.partition(":")
    if not sep or not module_name or not attribute_path:
        raise SystemExit(f'--loop must be "asyncio" or "module:factory", not {loop_spec!r}')
    factory = importlib.import_module(module_name)
    for attribute in attribute_path.split("."):
        factory = getattr(factory, attribute)
    if not callable(factory):
        raise SystemExit(f"{loop_spec} is not callable")
    return factory


class LoopTracker:
    """Wraps the loop factory and counts the loops it makes.

    ``lut_loops`` counts loops under test; ``stock_loops`` counts
    ``asyncio.BaseEventLoop`` instances built outside the factory (a test
    that bypasses the LUT).  Counters are read before and after each test.
    """

    def __init__(self, factory):
        self._factory = factory
        self._lock = threading.Lock()
        self._inside_factory = threading.local()
        self.lut_loops = 0
        self.stock_loops = 0

    @property
    def inside_factory(self):
        """True while this thread is running the wrapped factory."""
        return getattr(self._inside_factory, "active", False)

    def make_loop(self):
        """Create one loop under test and count it."""
        self._inside_factory.active = True
        try:
            loop = self._factory()
        finally:
            self._inside_factory.active = False
        with self._lock:
            self.lut_loops += 1
        return loop

    def count_stock_loop(self):
        """Called from BaseEventLoop.__init__; counts loops made elsewhere."""
        if not self.inside_factory:
            with self._lock:
                self.stock_loops += 1


def install_loop_under_test(tracker):
    """Point every public way of getting a new loop at the LUT.

    Returns a callable that installs a fresh policy (called before each test
    so that state a failed test leaves in the policy cannot leak).
    """
    import asyncio
    import asyncio.base_events
    import asyncio.unix_events

    from test import support
    from test.test_asyncio import utils as test_utils

    original_init = asyncio.base_events.BaseEventLoop.__init__

    def counting_init(self, *args, **kwargs):
        tracker.count_stock_loop()
        original_init(self, *args, **kwargs)

    asyncio.base_events.BaseEventLoop.__init__ = counting_init

    # 3.14+: the public name warns; asyncio makes its default policy from the private one.
    default_policy_owner = asyncio.unix_events if sys.version_info >= (3, 14) else asyncio
    default_policy_name = (
        "_DefaultEventLoopPolicy" if sys.version_info >= (3, 14) else "DefaultEventLoopPolicy"
    )
    stock_policy_class = getattr(default_policy_owner, default_policy_name)

    class LoopUnderTestPolicy(stock_policy_class):
        """asyncio's default policy whose new loops are the LUT.

        A factory that itself asks the policy for a loop (e.g.
        ``asyncio:new_event_loop``) gets a stock loop instead of recursing.
        """

        def new_event_loop(self):
            if tracker.inside_factory:
                return super().new_event_loop()
            return tracker.make_loop()

    # Tests reset the policy with set_event_loop_policy(None), which builds
    # asyncio's default policy class: make that the LUT policy too.
    setattr(default_policy_owner, default_policy_name, LoopUnderTestPolicy)
    if sys.version_info < (3, 14):
        asyncio.unix_events.DefaultEventLoopPolicy = LoopUnderTestPolicy

    if hasattr(asyncio, "EventLoop"):  # 3.13+: a public loop class, e.g. loop_factory=
        # A class (not a function: as a class attribute it must not become a
        # bound method) whose instances are loops under test.
        class LoopUnderTestEventLoop:
            def __new__(cls):
                return tracker.make_loop()

        asyncio.EventLoop = LoopUnderTestEventLoop

    def new_test_loop(self, gen=None):
        if gen is not None:
            raise unittest.SkipTest(plan.VIRTUAL_TIME_SKIP_REASON)
        loop = tracker.make_loop()
        self.set_event_loop(loop)
        return loop

    test_utils.TestCase.new_test_loop = new_test_loop

    upstream_close_loop = test_utils.TestCase.__dict__["close_loop"].__func__

    def close_loop(loop):
        """Upstream helper for asyncio loops.  It reads the private
        ``loop._default_executor``; any other loop is just closed (close()
        shuts a default executor down), then child-watcher threads are
        joined as upstream does."""
        if isinstance(loop, asyncio.base_events.BaseEventLoop):
            upstream_close_loop(loop)
            return
        loop.close()
        policy = support.maybe_get_event_loop_policy()
        watcher = getattr(policy, "_watcher", None)
        threaded_watcher = getattr(asyncio.unix_events, "ThreadedChildWatcher", None)  # < 3.14
        if threaded_watcher is not None and isinstance(watcher, threaded_watcher):
            for thread in list(watcher._threads.values()):
                thread.join(timeout=support.SHORT_TIMEOUT)

    test_utils.TestCase.close_loop = staticmethod(close_loop)

    install_patched_logger_forwarding()

    def install_fresh_policy():
        plan.set_policy(LoopUnderTestPolicy())

    install_fresh_policy()
    return install_fresh_policy


def install_patched_logger_forwarding():
    """Let ``mock.patch('asyncio.base_events.logger')`` observe any loop.

    Tests check the default exception handler's logging by patching that
    module attribute, which only intercepts asyncio's own loop.  Another loop
    logs to the same ``asyncio`` logger; while the attribute is patched,
    records reaching that logger are passed on to the patch.
    """
    import asyncio.base_events

    asyncio_logger = logging.getLogger("asyncio")

    class ForwardToPatchedLogger(logging.Handler):
        def emit(self, record):
            patched = asyncio.base_events.logger
            if patched is asyncio_logger:
                return
            method = getattr(patched, record.levelname.lower(), None)
            if method is not None:
                method(record.getMessage(), exc_info=record.exc_info)

    asyncio_logger.addHandler(ForwardToPatchedLogger())


def short_id(test_id):
    """``test.test_asyncio.test_x.Class.method`` -> ``test_x.Class.method``."""
    prefix = plan.TEST_PACKAGE + "."
    return test_id.removeprefix(prefix)


def build_loop_class(module, loop_class, make_loop):
    """Create the class described by ``loop_class`` in ``module``, its hook
    returning a new LUT."""
    from test.test_asyncio import utils as test_utils

    def resolve_base(name):
        return test_utils.TestCase if name == "test_utils.TestCase" else getattr(module, name)

    namespace = {
        "__module__": module.__name__,
        "__qualname__": loop_class.name,
        loop_class.hook: lambda self: make_loop(),
    }
    generated = type(loop_class.name, tuple(map(resolve_base, loop_class.bases)), namespace)
    setattr(module, loop_class.name, generated)
    return generated


def collect_tests(module, module_plan, make_loop):
    """Return (tests to run, excluded {id: reason}, deferred {id: reason})."""
    loader = unittest.TestLoader()
    tests, excluded, deferred = [], {}, {}

    def classify(test_class, method, run_only=None):
        test_id = short_id(f"{module.__name__}.{test_class.__name__}.{method}")
        reason = module_plan.exclusion_reason(test_class.__name__, method)
        deferral = module_plan.deferral_reason(test_class.__name__, method)
        if reason:
            excluded[test_id] = reason
        elif deferral:
            deferred[test_id] = deferral
        elif run_only is not None and method not in run_only:
            deferred[test_id] = plan.DEFERRED_IO_REASON
        else:
            tests.append(test_class(method))

    module_classes = sorted(
        (
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, unittest.TestCase)
            and value.__module__ == module.__name__
        ),
        key=lambda cls: cls.__name__,
    )
    for test_class in module_classes:
        name = test_class.__name__
        if name in module_plan.replaced_classes:
            continue
        for method in loader.getTestCaseNames(test_class):
            if name not in module_plan.excluded_classes and not module_plan.run_unlisted_classes:
                test_id = short_id(f"{module.__name__}.{name}.{method}")
                deferred[test_id] = plan.DEFERRED_CLASS_REASON
            else:
                classify(test_class, method)

    for loop_class in module_plan.loop_classes:
        generated = build_loop_class(module, loop_class, make_loop)
        for method in loader.getTestCaseNames(generated):
            classify(generated, method, loop_class.run_only)
    return tests, excluded, deferred


def matches_any(test_id, patterns):
    """-k semantics: substring, or fnmatch pattern when it has wildcards."""
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            if fnmatch.fnmatchcase(test_id, pattern):
                return True
        elif pattern in test_id:
            return True
    return False


class ReportingResult(unittest.TestResult):
    """TestResult that reports each test's outcome on the report channel and
    arms the per-test watchdog."""

    SEVERITY: ClassVar[dict] = {"pass": 0, "skip": 1, "fail": 2, "error": 3}

    def __init__(self, report, timeout, tracker, install_fresh_policy):
        super().__init__()
        self._report = report
        self._timeout = timeout
        self._tracker = tracker
        self._install_fresh_policy = install_fresh_policy
        self._current = None

    def startTest(self, test):
        import faulthandler

        super().startTest(test)
        self._current = {
            "id": short_id(test.id()),
            "outcome": "pass",
            "message": "",
            "traceback": "",
            "started": time.monotonic(),
            "lut_before": self._tracker.lut_loops,
            "stock_before": self._tracker.stock_loops,
        }
        self._report(event="start", id=self._current["id"])
        faulthandler.dump_traceback_later(self._timeout, exit=True)
        self._install_fresh_policy()

    def stopTest(self, test):
        import faulthandler

        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)
        current, self._current = self._current, None
        if current is None:
            return
        self._report(
            event="end",
            id=current["id"],
            outcome=current["outcome"],
            message=current["message"],
            traceback=current["traceback"],
            seconds=round(time.monotonic() - current["started"], 3),
            lut_loops=self._tracker.lut_loops - current["lut_before"],
            stock_loops=self._tracker.stock_loops - current["stock_before"],
        )

    def _record(self, outcome, message, tb=""):
        """Keep the most severe outcome; among failures, the first message."""
        current = self._current
        if current is None:
            return
        if self.SEVERITY[outcome] < self.SEVERITY[current["outcome"]]:
            return
        if current["outcome"] in ("fail", "error") and outcome in ("fail", "error"):
            return
        current.update(outcome=outcome, message=message, traceback=tb)

    def addError(self, test, err):
        super().addError(test, err)
        if isinstance(test, unittest.TestCase):
            self._record("error", exception_line(err), format_traceback(err))
        else:  # setUpClass/tearDownModule and friends
            self._report(
                event="fixture_error",
                id=str(test),
                message=exception_line(err),
                traceback=format_traceback(err),
            )

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record("fail", exception_line(err), format_traceback(err))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            outcome = "fail" if issubclass(err[0], test.failureException) else "error"
            self._record(
                outcome, f"{subtest._subDescription()} {exception_line(err)}", format_traceback(err)
            )

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record("skip", str(reason))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record("fail", "unexpected success of a test marked expectedFailure")


def exception_line(err):
    """``ExceptionType: first line of the message`` (at most 300 chars);
    for an exception without a message, where it was raised."""
    lines = str(err[1]).strip().splitlines()
    if lines:
        return f"{err[0].__name__}: {lines[0][:300]}"
    frames = traceback.extract_tb(err[2])
    if not frames:
        return err[0].__name__
    where = frames[-1]
    return (
        f"{err[0].__name__} raised at {os.path.basename(where.filename)}:{where.lineno} "
        f"in {where.name}"
    )


def format_traceback(err, limit=6000):
    """The formatted traceback, keeping its last ``limit`` characters."""
    return "".join(traceback.format_exception(*err))[-limit:]


def read_id_file(path):
    """A JSON list of test ids, or an empty set when no path is given."""
    if not path:
        return set()
    with open(path) as f:
        return set(json.load(f))


def main(argv=None):
    """Run one module and report on the report channel."""
    import faulthandler

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", required=True)
    parser.add_argument("--loop", required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--skip", help="JSON list of test ids already done")
    parser.add_argument("--only", help="JSON list of the only test ids to run")
    parser.add_argument("-k", action="append", default=[])
    args = parser.parse_args(argv)
    # A worker started from a background job of a non-interactive shell (`cmd &` in a
    # script, as CI runners and nohup'd runs do) inherits SIGINT ignored, and Python then
    # leaves it ignored: _thread.interrupt_main() does nothing and test_runners' Ctrl+C
    # tests wait forever, on every loop.  CPython's own test runs have Python's handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    channel = os.fdopen(args.report_fd, "w", buffering=1)
    channel_lock = threading.Lock()

    def report(**event):
        line = json.dumps(event, default=repr)
        with channel_lock:
            channel.write(line + "\n")
            channel.flush()

    faulthandler.enable()
    tracker = LoopTracker(load_loop_factory(args.loop))
    install_fresh_policy = install_loop_under_test(tracker)
    probe = tracker.make_loop()
    loop_type = f"{type(probe).__module__}.{type(probe).__qualname__}"
    probe.close()

    module_plan = plan.MODULES_BY_NAME[args.module]
    module = importlib.import_module(f"{plan.TEST_PACKAGE}.{args.module}")
    if module_plan.adapter is not None:
        module_plan.adapter(module, tracker.make_loop)
    tests, excluded, deferred = collect_tests(module, module_plan, tracker.make_loop)

    only = read_id_file(args.only)
    if only:
        tests = [t for t in tests if short_id(t.id()) in only]
    if args.k:
        tests = [t for t in tests if matches_any(short_id(t.id()), args.k)]
    report(
        event="plan",
        tests=[short_id(t.id()) for t in tests],
        excluded=excluded,
        deferred=deferred,
        loop_type=loop_type,
    )

    already_done = read_id_file(args.skip)
    remaining = [t for t in tests if short_id(t.id()) not in already_done]
    result = ReportingResult(report, args.timeout, tracker, install_fresh_policy)
    unittest.TestSuite(remaining).run(result)
    report(event="finished")
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: leftover non-daemon threads of a failed
    # test must not keep the worker alive.
    os._exit(0)


if __name__ == "__main__":
    main()
