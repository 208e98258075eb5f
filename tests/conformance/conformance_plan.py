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

The scope of issue #3 (I/O readiness, ``sock_*``, name resolution: the
reader/writer tests of test_events, test_sock_lowlevel, the public
signal-handler and add_reader tests of test_unix_events) is switched by
``ISSUE_3_IN_SCOPE``: on unless the environment sets
``FERROLOOP_CONFORMANCE_ISSUE3=0``.  Switched off, the plan is issue #2's
(those test_events tests are deferred again, the two modules are not run);
``expected_pass.txt`` must then not list issue-#3 tests of test_events.

The scope of issue #4 (stream transports and servers: create_connection,
create_server, Server, the UNIX variants, connect_accepted_socket, streams,
BufferedProtocol, loop.sendfile/sock_sendfile over TCP) is switched the same
way by ``ISSUE_4_IN_SCOPE``: on unless ``FERROLOOP_CONFORMANCE_ISSUE4=0`` (and
off whenever issue #3 is off).  Switched off, the plan is issue #3's; the
issue-#4 ids of test_events, test_sock_lowlevel and test_unix_events must then
not be in ``expected_pass.txt``.  Within issue #4, subprocesses stay
deferred, each test with its reason (``deferred_tests``); the pipe and pty
tests of test_events (issue #9, ``EVENT_LOOP_TESTS_PIPES``) run with it.
"""

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

TEST_PACKAGE = "test.test_asyncio"

VIRTUAL_TIME_SKIP_REASON = (
    "conformance: builds asyncio's virtual-time TestLoop (new_test_loop(gen)), "
    "which never runs on the loop under test"
)

#: Whether the tests of issue #3 (I/O readiness, sock_*, getaddrinfo) are run.
ISSUE_3_IN_SCOPE = os.environ.get("FERROLOOP_CONFORMANCE_ISSUE3", "1").strip() != "0"

#: Whether the tests of issue #4 (stream transports, servers, streams) are run.
ISSUE_4_IN_SCOPE = (
    ISSUE_3_IN_SCOPE and os.environ.get("FERROLOOP_CONFORMANCE_ISSUE4", "1").strip() != "0"
)

if ISSUE_4_IN_SCOPE:
    DEFERRED_IO_REASON = "deferred: needs UDP, TLS, pipes, ptys or subprocesses (later issues)"
elif ISSUE_3_IN_SCOPE:
    DEFERRED_IO_REASON = (
        "deferred: needs transports, servers, pipes, ptys or subprocesses (later issues)"
    )
else:
    DEFERRED_IO_REASON = (
        "deferred: needs sockets, pipes or subprocesses (issue #2 covers the loop core only)"
    )

# Why a test of issue #4's modules is still deferred (one reason per missing
# feature of the loop under test).
DEFERRED_TLS = "deferred: TLS (ssl=, start_tls) is not implemented yet"
DEFERRED_SUBPROCESS = "deferred: subprocesses are a later issue"

DEFERRED_CLASS_REASON = "deferred: class outside this module's current scope"


@dataclass(frozen=True)
class LoopClass:
    """A test class the worker generates from loop-parameterised mixins.

    ``bases`` name classes of the test module (or ``test_utils.TestCase``);
    the generated class ``name`` gets a ``hook`` method returning a new LUT.
    ``run_only`` (method names) limits which of its tests run, the others
    being reported as deferred; ``None`` runs them all.  A ``deferred_tests``
    entry of the module defers a test even when ``run_only`` lists it.
    """

    name: str
    bases: tuple
    hook: str = "create_event_loop"
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
    # Not yet in scope: class -> reason, and "Class.method" or "method" ->
    # reason (keyed like the exclusions, but reported as deferred).
    deferred_classes: Mapping[str, str] = field(default_factory=dict)
    deferred_tests: Mapping[str, str] = field(default_factory=dict)
    # The first Python whose test_asyncio has this module (run from there on).
    since: tuple = (3, 11)

    def exclusion_reason(self, class_name: str, method: str) -> str | None:
        """Why a test is excluded, or None when it runs."""
        if class_name in self.excluded_classes:
            return self.excluded_classes[class_name]
        return self.excluded_tests.get(f"{class_name}.{method}") or self.excluded_tests.get(method)

    def deferral_reason(self, class_name: str, method: str) -> str | None:
        """Why a test that is not excluded is deferred, or None."""
        if class_name in self.deferred_classes:
            return self.deferred_classes[class_name]
        return self.deferred_tests.get(f"{class_name}.{method}") or self.deferred_tests.get(method)


# ------------------------------------------------- policies across versions
# Python 3.14 deprecates the public policy functions and classes (they warn;
# 3.16 removes them); its own tests use the private, silent equivalents.


def get_policy():
    """The current event loop policy, without 3.14's deprecation warning."""
    import asyncio

    if sys.version_info >= (3, 14):
        return asyncio.events._get_event_loop_policy()
    return asyncio.get_event_loop_policy()


def set_policy(policy):
    """Sets the event loop policy (None: a new default one), without a warning."""
    import asyncio

    if sys.version_info >= (3, 14):
        asyncio.events._set_event_loop_policy(policy)
    else:
        asyncio.set_event_loop_policy(policy)


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
        policy = get_policy()
        if policy.loop is not None:
            self.assertTrue(policy.loop.is_closed())
            self.assertTrue(policy.loop.shutdown_ag_run)
        set_policy(None)
        unittest.TestCase.tearDown(self)

    module.BaseTest.new_loop = new_loop_under_test
    module.BaseTest.tearDown = tear_down_checking_runner_cleanup


def adapt_test_unix_events(module, make_loop):
    """The fixtures of the signal tests and of the UNIX socket tests build
    ``asyncio.SelectorEventLoop()`` directly; use the LUT (only the public
    signal test runs, see ``UNIX_SIGNAL_TESTS_PRIVATE``)."""
    from test.test_asyncio import utils as test_utils

    def set_up_with_loop_under_test(self):
        test_utils.TestCase.setUp(self)
        self.loop = make_loop()
        self.set_event_loop(self.loop)

    module.SelectorEventLoopSignalTests.setUp = set_up_with_loop_under_test
    module.SelectorEventLoopUnixSocketTests.setUp = set_up_with_loop_under_test


# ------------------------------------------------ test_events selection
# EventLoopTestsMixin tests that use no socket, pipe, pty or subprocess:
# scheduling, run_until_complete/run_forever/stop/close, executors and
# signal handlers.  (test_timeout_rounding also needs none, but is excluded
# below: it counts calls to the private _run_once.)
EVENT_LOOP_TESTS_WITHOUT_IO = frozenset(
    {
        "test_run_until_complete_nesting",
        "test_run_until_complete",
        "test_run_until_complete_stopped",
        "test_call_later",
        "test_call_soon",
        "test_call_soon_threadsafe",
        "test_call_soon_threadsafe_same_thread",
        "test_run_in_executor",
        "test_run_in_executor_cancel",
        "test_add_signal_handler",
        "test_signal_handling_while_selecting",
        "test_signal_handling_args",
        "test_internal_fds",
        "test_close_running_event_loop",
        "test_close",
    }
)

# EventLoopTestsMixin tests of issue #3: add_reader/add_writer/remove_*
# (signal tests are above; the socket tests of the mixin all need transports,
# servers or pipes, except test_prompt_cancellation, excluded below).
EVENT_LOOP_TESTS_ISSUE_3 = frozenset(
    {
        "test_add_fds_after_closing",
        "test_remove_fds_after_closing",
        "test_reader_callback",
        "test_writer_callback",
    }
)

# EventLoopTestsMixin tests of issue #4: TCP and UNIX connections and
# servers through protocols (create_connection, create_server, Server.close,
# create_unix_*, connect_accepted_socket), including the argument checks of
# the ssl_* parameters that need no TLS.  (The multiple-hosts create_server
# tests are excluded below: they patch asyncio.base_events.socket.)
EVENT_LOOP_TESTS_ISSUE_4 = frozenset(
    {
        "test_create_ssl_connection",
        "test_create_ssl_unix_connection",
        "test_ssl_connect_accepted_socket",
        "test_create_server_ssl",
        "test_create_unix_server_ssl",
        "test_create_server_ssl_verify_failed",
        "test_create_unix_server_ssl_verify_failed",
        "test_create_server_ssl_match_failed",
        "test_create_server_ssl_verified",
        "test_create_unix_server_ssl_verified",
        "test_create_connection",
        "test_create_unix_connection",
        "test_create_connection_local_addr",
        "test_create_connection_local_addr_skip_different_family",
        "test_create_connection_local_addr_nomatch_family",
        "test_create_connection_local_addr_in_use",
        "test_connect_accepted_socket",
        "test_connect_accepted_socket_ssl_timeout_for_plain_socket",
        "test_create_server",
        "test_create_server_reuse_port",
        "test_create_unix_server",
        "test_create_unix_server_path_socket_error",
        "test_create_server_sock",
        "test_create_server_addr_in_use",
        "test_create_server_dual_stack",
        "test_server_close",
        # Datagram endpoints (UDP).
        "test_create_datagram_endpoint",
        "test_create_datagram_endpoint_ipv6",
        "test_create_datagram_endpoint_sock",
        # From 3.12: a server's sockets are asyncio.trsock.TransportSocket.
        "test_create_server_trsock",
        # From 3.13: a UDP endpoint keeps receiving after sending to a closed port.
        "test_datagram_send_to_non_listening_address",
    }
)

# Issue #9, pipes and ptys: the pipe/pty tests of EventLoopTestsMixin
# (connect_read_pipe/connect_write_pipe), run with issue #4's scope.
EVENT_LOOP_TESTS_PIPES = frozenset(
    {
        "test_read_pipe",
        "test_unclosed_pipe_transport",
        "test_read_pty_output",
        "test_write_pipe",
        "test_write_pipe_disconnect_on_close",
        "test_write_pty",
        "test_bidirectional_pty",
    }
)

# SubprocessTestsMixin (test_events): loop.subprocess_exec/subprocess_shell.
EVENT_LOOP_TESTS_SUBPROCESS = frozenset(
    {
        "test_subprocess_exec",
        "test_subprocess_interactive",
        "test_subprocess_shell",
        "test_subprocess_exitcode",
        "test_subprocess_close_after_finish",
        "test_subprocess_kill",
        "test_subprocess_terminate",
        "test_subprocess_send_signal",
        "test_subprocess_stderr",
        "test_subprocess_stderr_redirect_to_stdout",
        "test_subprocess_close_client_stream",
        "test_subprocess_wait_no_same_group",
        "test_subprocess_exec_invalid_args",
        "test_subprocess_shell_invalid_args",
    }
)

# Nothing of EventLoopTestsMixin/SubprocessTestsMixin stays deferred once
# issue #4 is in scope (pipes, ptys and subprocesses are in).
EVENT_LOOP_TESTS_DEFERRED_AFTER_ISSUE_4 = {}

# BaseSockTestsMixin (test_sock_lowlevel): every test but the one that also
# needs create_connection (a transport: issue #4).
SOCK_TESTS_WITHOUT_TRANSPORTS = frozenset(
    {
        "test_cancel_sock_accept",
        "test_huge_content",
        "test_huge_content_recvinto",
        "test_recvfrom",
        "test_recvfrom_into",
        "test_sendto_blocking",
        "test_sock_accept",
        "test_sock_client_connect_racing",
        "test_sock_client_fail",
        "test_sock_client_ops",
        "test_sock_client_racing",
        "test_unix_sock_client_ops",
    }
)

_UNIX_SIGNAL_INTERNALS = (
    "mocks asyncio.unix_events.signal and/or reads "
    "_UnixSelectorEventLoop's private signal state "
    "(_signal_handlers, _handle_signal, _check_signal); public "
    "behaviour is covered by test_events' signal tests"
)

# test_unix_events.SelectorEventLoopSignalTests: every test but
# test_add_signal_handler_coroutine_error (public: the TypeError for a
# coroutine callback, raised before any signal call) observes asyncio's
# private implementation.
UNIX_SIGNAL_TESTS_PRIVATE = (
    "test_add_signal_handler",
    "test_add_signal_handler_install_error",
    "test_add_signal_handler_install_error2",
    "test_add_signal_handler_install_error3",
    "test_add_signal_handler_setup_error",
    "test_check_signal",
    "test_close",
    "test_close_on_finalizing",
    "test_handle_signal_cancelled_handler",
    "test_handle_signal_no_handler",
    "test_remove_signal_handler",
    "test_remove_signal_handler_2",
    "test_remove_signal_handler_cleanup_error",
    "test_remove_signal_handler_error",
    "test_remove_signal_handler_error2",
)

# test_streams.StreamTests: what is still deferred within issue #4.
STREAM_TESTS_DEFERRED = {}

# test_sendfile: the TLS variants are deferred; four tests reach into asyncio's
# sendfile internals (excluded).
SENDFILE_TESTS_DEFERRED = {}
_SENDFILE_NATIVE_SWAP = (
    "replaces the private loop._sendfile_native with asyncio's BaseEventLoop._sendfile_native"
)
SENDFILE_TESTS_PRIVATE = {
    "test_sendfile_force_fallback": _SENDFILE_NATIVE_SWAP,
    "test_sendfile_force_unsupported_native": _SENDFILE_NATIVE_SWAP,
    "test_sendfile_fallback_close_peer_in_the_middle_of_receiving": _SENDFILE_NATIVE_SWAP,
    "test_sendfile_no_fallback_for_fallback_transport": "gives a mock transport the private "
    "_sendfile_compatible attribute",
}

_SERVER_INTERNALS = "asserts the private srv._sockets and srv._waiters of asyncio's Server"

_STOCK_LOOP_VARIANTS = frozenset(
    {
        "SelectEventLoopTests",
        "PollEventLoopTests",
        "EPollEventLoopTests",
        "KqueueEventLoopTests",
        "ProactorEventLoopTests",
    }
)

_CHILD_WATCHERS = "asyncio's child watchers"

_TASK_REGISTRY_INTERNALS = (
    "asyncio's task registry internals (_register_task/_enter_task) driven by a mock loop"
)

MODULES = (
    Module(
        "test_tasks",
        "Task (C/Py x Future C/Py x subclass), gather, sleep, run_coroutine_threadsafe",
        excluded_classes={
            "PyIntrospectionTests": _TASK_REGISTRY_INTERNALS,
            "CIntrospectionTests": _TASK_REGISTRY_INTERNALS,
            "GenericTaskTests": "no loop is involved (Task subclassing, _asyncio importability)",
        },
        excluded_tests={
            "test_issue46672": "patches the private "
            "asyncio.base_events.BaseEventLoop.call_exception_handler",
            "test_log_destroyed_pending_task": "steps the loop with the private "
            "loop._run_once() and reads loop._ready",
        },
        adapter=adapt_test_tasks,
    ),
    Module("test_futures", "Future (C and Py) and its callbacks"),
    Module("test_futures2", "Future tracebacks and repr (IsolatedAsyncioTestCase)"),
    Module("test_locks", "Lock, Event, Condition, Semaphore, Barrier"),
    Module("test_queues", "Queue, LifoQueue, PriorityQueue"),
    Module("test_taskgroups", "TaskGroup"),
    Module("test_timeouts", "timeout() and timeout_at()"),
    Module("test_waitfor", "wait_for()"),
    Module("test_runners", "asyncio.run() and Runner", adapter=adapt_test_runners),
    Module("test_context", "decimal context across tasks"),
    Module("test_pep492", "async with/for, coroutine wrappers", adapter=adapt_test_pep492),
    Module("test_threads", "to_thread()"),
    Module(
        "test_events",
        "EventLoopTestsMixin: scheduling, executors, signals, "
        "readers/writers, TCP/UNIX connections and servers, Server.get_loop, "
        "UDP, TLS, pipes and ptys (later: subprocesses)"
        if ISSUE_4_IN_SCOPE
        else "EventLoopTestsMixin without transports: scheduling, "
        "executors, signals, readers/writers (later: servers, pipes, subprocesses)"
        if ISSUE_3_IN_SCOPE
        else "EventLoopTestsMixin without I/O (later: sockets, pipes, subprocesses)",
        loop_classes=(
            LoopClass(
                "LoopUnderTestEventLoopTests",
                ("EventLoopTestsMixin", "SubprocessTestsMixin", "test_utils.TestCase"),
                run_only=EVENT_LOOP_TESTS_WITHOUT_IO
                | (EVENT_LOOP_TESTS_ISSUE_3 if ISSUE_3_IN_SCOPE else frozenset())
                | (EVENT_LOOP_TESTS_ISSUE_4 if ISSUE_4_IN_SCOPE else frozenset())
                | (EVENT_LOOP_TESTS_PIPES if ISSUE_4_IN_SCOPE else frozenset())
                | (EVENT_LOOP_TESTS_SUBPROCESS if ISSUE_4_IN_SCOPE else frozenset()),
            ),
        ),
        replaced_classes=_STOCK_LOOP_VARIANTS,
        excluded_classes={
            "TestPyGetEventLoop": "swaps in asyncio's pure-Python _set_running_loop, "
            "which a compiled loop does not call",
            "HandleTests": "asyncio.Handle internals and repr with a mock loop",
            "TimerTests": "asyncio.TimerHandle internals and repr with a mock loop",
            "AbstractEventLoopTests": "the AbstractEventLoop ABC raises "
            "NotImplementedError; no loop is run",
            "PolicyTests": "asyncio's own default policy class",
            **(
                {
                    "TestAbstractServer": "the AbstractServer ABC raises "
                    "NotImplementedError; no server is run"
                }
                if ISSUE_4_IN_SCOPE
                else {}
            ),
        },
        excluded_tests={
            "test_timeout_rounding": "wraps the private loop._run_once to count "
            "selector iterations",
            "test_prompt_cancellation": "ends with the private loop._stop_serving()",
            "test_create_server_multiple_hosts_ipv4": "patches asyncio.base_events.socket "
            "and private serving methods",
            "test_create_server_multiple_hosts_ipv6": "patches asyncio.base_events.socket "
            "and private serving methods",
        },
        deferred_tests=(EVENT_LOOP_TESTS_DEFERRED_AFTER_ISSUE_4 if ISSUE_4_IN_SCOPE else {}),
        # TestServer (Server.get_loop) runs with issue #4; TestCGetEventLoop
        # is not in any issue's scope yet.
        deferred_classes={"TestCGetEventLoop": DEFERRED_CLASS_REASON},
        run_unlisted_classes=ISSUE_4_IN_SCOPE,
    ),
)

# Issue #3: the sock_* mixin, and the public parts of test_unix_events.
ISSUE_3_MODULES = (
    Module(
        "test_sock_lowlevel",
        "BaseSockTestsMixin: loop.sock_* over TCP, UDP and UNIX "
        "sockets"
        + (
            "" if ISSUE_4_IN_SCOPE else " (test_create_connection_sock deferred: needs a transport)"
        ),
        loop_classes=(
            LoopClass(
                "LoopUnderTestSockTests",
                ("BaseSockTestsMixin", "test_utils.TestCase"),
                run_only=None if ISSUE_4_IN_SCOPE else SOCK_TESTS_WITHOUT_TRANSPORTS,
            ),
        ),
        replaced_classes=_STOCK_LOOP_VARIANTS,
    ),
    Module(
        "test_unix_events",
        (
            "TestFunctional (add_reader/add_writer argument checks, "
            "a transport's descriptor refused), UNIX servers and "
            "connections, the public signal-handler test"
            if ISSUE_4_IN_SCOPE
            else "TestFunctional's add_reader/add_writer argument check and "
            "the public signal-handler test; UNIX servers/connections "
            "deferred (a later issue)"
        )
        + "; the rest is _UnixSelectorEventLoop/pipe-transport/child-watcher internals",
        loop_classes=(
            LoopClass(
                "LoopUnderTestFunctionalTests",
                ("TestFunctional",),
                run_only=frozenset({"test_add_reader_invalid_argument"})
                | (
                    frozenset({"test_add_reader_or_writer_transport_fd"})
                    if ISSUE_4_IN_SCOPE
                    else frozenset()
                ),
            ),
            LoopClass(
                "LoopUnderTestUnixSignalTests",
                ("SelectorEventLoopSignalTests",),
                run_only=frozenset({"test_add_signal_handler_coroutine_error"}),
            ),
        ),
        replaced_classes=frozenset({"TestFunctional", "SelectorEventLoopSignalTests"}),
        excluded_classes={
            "SelectorEventLoopUnixSockSendfileTests": "the selector loop's private "
            "_sock_sendfile_native(_impl)",
            "UnixReadPipeTransportTests": "_UnixReadPipeTransport with a mock loop",
            "UnixWritePipeTransportTests": "_UnixWritePipeTransport with a mock loop",
            "AbstractChildWatcherTests": _CHILD_WATCHERS,
            "BaseChildWatcherTests": _CHILD_WATCHERS,
            "SafeChildWatcherTests": _CHILD_WATCHERS,
            "FastChildWatcherTests": _CHILD_WATCHERS,
            "MultiLoopChildWatcherTests": _CHILD_WATCHERS,
            "PolicyTests": "asyncio's unix policy and its child watcher",
        },
        excluded_tests={
            **{
                f"LoopUnderTestUnixSignalTests.{method}": _UNIX_SIGNAL_INTERNALS
                for method in UNIX_SIGNAL_TESTS_PRIVATE
            },
            "SelectorEventLoopUnixSocketTests.test_create_unix_server_bind_error": (
                "patches asyncio.unix_events.socket (the module the stock loop makes "
                "its socket with)"
            ),
        },
        # SelectorEventLoopUnixSocketTests (create_unix_server/connection,
        # loop-agnostic once the adapter gives it the LUT) runs with issue #4.
        run_unlisted_classes=ISSUE_4_IN_SCOPE,
        adapter=adapt_test_unix_events,
    ),
)

# Issue #4: streams, BufferedProtocol, start_server and sendfile over
# transports (the mixins' stock-loop variants are replaced by a LUT class).
ISSUE_4_MODULES = (
    Module(
        "test_streams",
        "asyncio streams (StreamReader/StreamWriter, open_connection, "
        "start_server, the UNIX variants) over TCP and UNIX sockets (TLS and pipe "
        "tests deferred)",
        deferred_tests=STREAM_TESTS_DEFERRED,
    ),
    Module(
        "test_subprocess",
        "asyncio.subprocess (create_subprocess_exec/shell, Process, communicate, "
        "cancellation, kill, stdin flow control) on the loop's subprocess_exec; the "
        "watcher-parameterised classes run as they are (ferroloop registers its children with "
        "a policy watcher that reaps every child, FastChildWatcher, and ignores the others)",
        excluded_classes={
            "SubprocessTransportTests": "asyncio's BaseSubprocessTransport with a mock loop",
            "GenericWatcherTests": _CHILD_WATCHERS,
            "MultiLoopChildWatcherTests": _CHILD_WATCHERS,
        },
    ),
    Module(
        "test_buffered_proto",
        "BufferedProtocol (get_buffer/buffer_updated) over TCP",
        loop_classes=(
            LoopClass(
                "LoopUnderTestBufferedProtocolTests",
                ("BufferedProtocolSelectorTests",),
                hook="new_loop",
            ),
        ),
        replaced_classes=frozenset(
            {"BufferedProtocolSelectorTests", "BufferedProtocolProactorTests"}
        ),
    ),
    Module(
        "test_server",
        "start_server/start_unix_server with start_serving=False, "
        "serve_forever cancelled (both tests excluded: they read Server internals)",
        loop_classes=(
            LoopClass(
                "LoopUnderTestStartServerTests", ("SelectorStartServerTests",), hook="new_loop"
            ),
        ),
        replaced_classes=frozenset({"SelectorStartServerTests", "ProactorStartServerTests"}),
        excluded_tests={
            "test_start_server_1": _SERVER_INTERNALS,
            "test_start_unix_server_1": _SERVER_INTERNALS,
        },
    ),
    Module(
        "test_sendfile",
        "loop.sendfile over TCP transports and loop.sock_sendfile "
        "with a create_server peer, TLS included",
        loop_classes=(
            LoopClass("LoopUnderTestSendfileTests", ("SendfileTestsBase", "test_utils.TestCase")),
        ),
        replaced_classes=_STOCK_LOOP_VARIANTS,
        excluded_tests=SENDFILE_TESTS_PRIVATE,
        deferred_tests=SENDFILE_TESTS_DEFERRED,
    ),
    Module(
        "test_sslproto",
        "TLS over the loop's transports: asyncio's SSLProtocol handshake "
        "and shutdown (also with mock transports), start_tls, buffered and plain protocols",
        loop_classes=(
            LoopClass("LoopUnderTestStartTLSTests", ("SelectorStartTLSTests",), hook="new_loop"),
        ),
        replaced_classes=frozenset({"SelectorStartTLSTests", "ProactorStartTLSTests"}),
    ),
    Module(
        "test_ssl",
        "TLS connections and servers: handshake/shutdown timeouts, errors, "
        "flow control, start_tls, close during handshake",
    ),
)

# Modules of later Pythons' test_asyncio (issue #17): loop-agnostic, they get
# the LUT through the policy, asyncio.run()/Runner and asyncio.EventLoop.
LATER_PYTHON_MODULES = (
    Module(
        "test_eager_task_factory",
        "eager_task_factory, create_eager_task_factory, create_task(eager_start=)",
        since=(3, 12),
    ),
    Module("test_staggered", "staggered_race (happy eyeballs)", since=(3, 12)),
    Module(
        "test_graph",
        "call-graph introspection: capture_call_graph, print_call_graph, future_add_to_awaited_by",
        since=(3, 14),
    ),
    Module(
        "test_free_threading",
        "all_tasks/current_task and task bookkeeping from several threads",
        since=(3, 14),
    ),
    Module(
        "test_server_context",
        "the contextvars context of server protocols and callbacks",
        replaced_classes=frozenset(
            {"AsyncioSelectorEventLoopTests", "AsyncioProactorEventLoopTests"}
        ),
        since=(3, 15),
    ),
)

if ISSUE_3_IN_SCOPE:
    MODULES += ISSUE_3_MODULES
if ISSUE_4_IN_SCOPE:
    MODULES += ISSUE_4_MODULES
MODULES += LATER_PYTHON_MODULES


def _in_this_python(module):
    """Whether the running Python's test_asyncio has ``module``: from its ``since``
    version on, and only if the file is there (test_staggered came with a 3.12
    bugfix release: 3.12.1's test package lacks it)."""
    if sys.version_info < module.since:
        return False
    if module.since == (3, 11):
        return True
    import importlib.util

    package = importlib.util.find_spec("test")
    if package is None or not package.submodule_search_locations:
        return True  # let the worker report the missing test package
    return any(
        os.path.exists(os.path.join(root, "test_asyncio", module.name + ".py"))
        for root in package.submodule_search_locations
    )


MODULES = tuple(module for module in MODULES if _in_this_python(module))

MODULES_BY_NAME = {module.name: module for module in MODULES}
