"""What ferroloop's conformance run takes from CPython's ``test.test_asyncio``.

This file is data plus the few fixture adapters the data refers to.  The
harness (``conformance_run.py``) and its worker (``conformance_worker.py``)
read it; nothing else in the project does.

Each entry of ``MODULES`` says how one module of ``test.test_asyncio`` is
run against the loop under test (LUT):

* Loop-agnostic test classes (the default) run unchanged: the worker makes
  every public way of getting a new loop (the event loop policy,
  ``asyncio.run``/``Runner``, ``IsolatedAsyncioTestCase``,
  ``test_utils.TestCase.new_test_loop()`` without a time generator) return
  the LUT.
* Mixins parameterised by the loop class run through one generated class
  (``LoopClass``, e.g. ``LoopUnderTestEventLoopTests``) whose hook returns the
  LUT.  The stock-loop variants of the mixins are listed in
  ``replaced_classes`` and are neither run nor counted.  ``run_only`` narrows
  a generated class to some of its tests; the others are reported as
  *deferred* (not yet in scope).
* ``excluded_classes``/``excluded_tests`` name tests that exercise asyncio's
  own private implementation; no other loop could pass them without copying
  asyncio's private names.  They are not run and are reported as *excluded*
  with the reason.

Adding a module is one ``Module(...)`` line; widening a mixin is editing (or
dropping) the ``run_only`` of its ``LoopClass``.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

TEST_PACKAGE = 'test.test_asyncio'

VIRTUAL_TIME_SKIP_REASON = (
    "conformance: builds asyncio's virtual-time TestLoop (new_test_loop(gen)), "
    "which never runs on the loop under test")

DEFERRED_IO_REASON = ('deferred: needs sockets, pipes or subprocesses '
                      '(issue #2 covers the loop core only)')

DEFERRED_CLASS_REASON = "deferred: class outside this module's current scope"


@dataclass(frozen=True)
class LoopClass:
    """A test class the worker generates from loop-parameterised mixins.

    ``bases`` name classes of the test module (or ``test_utils.TestCase``);
    the generated class ``name`` gets a ``hook`` method returning a new LUT.
    ``run_only`` (method names) limits which of its tests run, the others
    being reported as deferred; ``None`` runs them all.
    """

    name: str
    bases: tuple
    hook: str = 'create_event_loop'
    run_only: frozenset | None = None


@dataclass(frozen=True)
class Module:
    """How one module of ``test.test_asyncio`` is run against the LUT."""

    name: str
    note: str
    excluded_classes: Mapping[str, str] = field(default_factory=dict)
    excluded_tests: Mapping[str, str] = field(default_factory=dict)
    replaced_classes: frozenset = frozenset()
    loop_classes: tuple = ()
    run_unlisted_classes: bool = True
    adapter: Callable | None = None

    def exclusion_reason(self, class_name: str, method: str) -> str | None:
        """Why a test is excluded, or None when it runs."""
        if class_name in self.excluded_classes:
            return self.excluded_classes[class_name]
        return (self.excluded_tests.get(f'{class_name}.{method}')
                or self.excluded_tests.get(method))


# ---------------------------------------------------------------- adapters
# An adapter gets the imported test module and ``make_loop`` (returns a new
# LUT) and rewires fixtures that construct a stock loop so that they
# construct the LUT.  The same adapted code runs for stock asyncio, so stock
# and LUT numbers stay comparable.

def adapt_test_tasks(module, make_loop):
    """Gather tests drain ``loop._ready`` (BaseEventLoop's private ready
    queue); drive the loop through a fixed number of public iterations
    instead."""
    from test.test_asyncio import utils as test_utils

    def run_pending_callbacks(self, loop):
        for _ in range(10):
            test_utils.run_briefly(loop)

    module.GatherTestsBase._run_loop = run_pending_callbacks


def adapt_test_pep492(module, make_loop):
    """The fixture builds ``asyncio.BaseEventLoop()`` with a mocked
    selector; use the LUT."""
    from test.test_asyncio import utils as test_utils

    def set_up_with_loop_under_test(self):
        test_utils.TestCase.setUp(self)
        self.loop = make_loop()
        self.set_event_loop(self.loop)

    module.BaseTest.setUp = set_up_with_loop_under_test


def adapt_test_runners(module, make_loop):
    """The fixture builds a mocked ``asyncio.BaseEventLoop()`` whose
    ``shutdown_asyncgens`` is a stub recording that it was awaited.  Use the
    LUT instead, with its real ``shutdown_asyncgens`` wrapped so the same
    record is kept (the package contract says loop instances accept
    attribute assignment)."""
    import asyncio
    import unittest

    def new_loop_under_test(self):
        loop = make_loop()
        real_shutdown_asyncgens = loop.shutdown_asyncgens

        async def recording_shutdown_asyncgens():
            loop.shutdown_ag_run = True
            await real_shutdown_asyncgens()

        loop.shutdown_ag_run = False
        loop.shutdown_asyncgens = recording_shutdown_asyncgens
        return loop

    def tear_down_checking_runner_cleanup(self):
        policy = asyncio.get_event_loop_policy()
        if policy.loop is not None:
            self.assertTrue(policy.loop.is_closed())
            self.assertTrue(policy.loop.shutdown_ag_run)
        asyncio.set_event_loop_policy(None)
        unittest.TestCase.tearDown(self)

    module.BaseTest.new_loop = new_loop_under_test
    module.BaseTest.tearDown = tear_down_checking_runner_cleanup


# ------------------------------------------------ test_events selection
# EventLoopTestsMixin tests that use no socket, pipe, pty or subprocess:
# scheduling, run_until_complete/run_forever/stop/close, executors and
# signal handlers.  (test_timeout_rounding also needs none, but is excluded
# below: it counts calls to the private _run_once.)
EVENT_LOOP_TESTS_WITHOUT_IO = frozenset({
    'test_run_until_complete_nesting',
    'test_run_until_complete',
    'test_run_until_complete_stopped',
    'test_call_later',
    'test_call_soon',
    'test_call_soon_threadsafe',
    'test_call_soon_threadsafe_same_thread',
    'test_run_in_executor',
    'test_run_in_executor_cancel',
    'test_add_signal_handler',
    'test_signal_handling_while_selecting',
    'test_signal_handling_args',
    'test_internal_fds',
    'test_close_running_event_loop',
    'test_close',
})

_TASK_REGISTRY_INTERNALS = ("asyncio's task registry internals "
                            '(_register_task/_enter_task) driven by a mock loop')

MODULES = (
    Module('test_tasks', 'Task (C/Py x Future C/Py x subclass), gather, sleep, '
           'run_coroutine_threadsafe',
           excluded_classes={
               'PyIntrospectionTests': _TASK_REGISTRY_INTERNALS,
               'CIntrospectionTests': _TASK_REGISTRY_INTERNALS,
               'GenericTaskTests': 'no loop is involved (Task subclassing, '
                                   '_asyncio importability)',
           },
           excluded_tests={
               'test_issue46672': 'patches the private '
                                  'asyncio.base_events.BaseEventLoop.call_exception_handler',
               'test_log_destroyed_pending_task': 'steps the loop with the private '
                                                  'loop._run_once() and reads loop._ready',
           },
           adapter=adapt_test_tasks),
    Module('test_futures', 'Future (C and Py) and its callbacks'),
    Module('test_futures2', 'Future tracebacks and repr (IsolatedAsyncioTestCase)'),
    Module('test_locks', 'Lock, Event, Condition, Semaphore, Barrier'),
    Module('test_queues', 'Queue, LifoQueue, PriorityQueue'),
    Module('test_taskgroups', 'TaskGroup'),
    Module('test_timeouts', 'timeout() and timeout_at()'),
    Module('test_waitfor', 'wait_for()'),
    Module('test_runners', 'asyncio.run() and Runner', adapter=adapt_test_runners),
    Module('test_context', 'decimal context across tasks'),
    Module('test_pep492', 'async with/for, coroutine wrappers', adapter=adapt_test_pep492),
    Module('test_threads', 'to_thread()'),
    Module('test_events', 'EventLoopTestsMixin without I/O (later: sockets, pipes, '
           'subprocesses)',
           loop_classes=(
               LoopClass('LoopUnderTestEventLoopTests',
                         ('EventLoopTestsMixin', 'SubprocessTestsMixin', 'test_utils.TestCase'),
                         run_only=EVENT_LOOP_TESTS_WITHOUT_IO),
           ),
           replaced_classes=frozenset({
               'SelectEventLoopTests', 'PollEventLoopTests', 'EPollEventLoopTests',
               'KqueueEventLoopTests', 'ProactorEventLoopTests'}),
           excluded_classes={
               'TestPyGetEventLoop': "swaps in asyncio's pure-Python _set_running_loop, "
                                     'which a compiled loop does not call',
               'HandleTests': 'asyncio.Handle internals and repr with a mock loop',
               'TimerTests': 'asyncio.TimerHandle internals and repr with a mock loop',
               'AbstractEventLoopTests': 'the AbstractEventLoop ABC raises '
                                         'NotImplementedError; no loop is run',
               'PolicyTests': "asyncio's own default policy class",
           },
           excluded_tests={
               'test_timeout_rounding': 'wraps the private loop._run_once to count '
                                        'selector iterations',
               'test_prompt_cancellation': 'ends with the private loop._stop_serving()',
               'test_unclosed_pipe_transport': 'sets the private _pipe attribute of '
                                               "the loop's pipe transports",
               'test_create_server_multiple_hosts_ipv4': 'patches asyncio.base_events.socket '
                                                         'and private serving methods',
               'test_create_server_multiple_hosts_ipv6': 'patches asyncio.base_events.socket '
                                                         'and private serving methods',
           },
           # TestCGetEventLoop, TestServer, TestAbstractServer: a later issue.
           run_unlisted_classes=False),
)

MODULES_BY_NAME = {module.name: module for module in MODULES}
