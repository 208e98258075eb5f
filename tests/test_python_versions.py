"""Python 3.14+ (event loop policies deprecated, removed in 3.16): ferroloop's entry points
do not warn, ``install()`` keeps its documented warning, and the package works without
asyncio's policy classes."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import warnings

import pytest

# A program run with DeprecationWarning as an error: it must finish and say which loop ran it.
_LOOP_REPORTING_PROGRAM = """
    import asyncio

    async def main():
        await asyncio.sleep(0.001)
        return type(asyncio.get_running_loop()).__module__

    print(asyncio.run(main()))
"""

# Removes asyncio's policy classes and setters, as Python 3.16 removes them.  asyncio's own
# default policy is made first: asyncio.run()/set_event_loop() still use it internally.
_HIDE_POLICIES = """
    import asyncio, sys
    from asyncio import events
    (events._get_event_loop_policy if sys.version_info >= (3, 14)
     else asyncio.get_event_loop_policy)()
    for module in (asyncio, events, sys.modules.get("asyncio.unix_events")):
        for name in ("AbstractEventLoopPolicy", "DefaultEventLoopPolicy",
                     "_AbstractEventLoopPolicy", "_BaseDefaultEventLoopPolicy",
                     "_DefaultEventLoopPolicy", "_UnixDefaultEventLoopPolicy",
                     "set_event_loop_policy", "_set_event_loop_policy"):
            vars(module).pop(name, None)
    import warnings
    with warnings.catch_warnings(action="ignore"):
        assert not hasattr(asyncio, "DefaultEventLoopPolicy")
"""

_WARNINGS_AS_ERRORS = ("-W", "error::DeprecationWarning")


def test_program_runs_without_deprecation_warning(child, loop_kind):
    """``python -m ferroloop script.py`` (stock: ``python script.py``) warns about nothing."""
    script = child.script("prog.py", _LOOP_REPORTING_PROGRAM)
    proc = child.run(child.command(str(script), python_options=_WARNINGS_AS_ERRORS))
    results = (proc.returncode, proc.stdout, proc.stderr)
    expected_module = "ferroloop._loop" if loop_kind == "ferroloop" else "asyncio.unix_events"
    assert results == (0, expected_module + "\n", "")


@pytest.mark.ferroloop_only
def test_import_run_and_loop_factory_do_not_warn(child):
    """``import ferroloop``, ``ferroloop.run()`` and ``loop_factory=`` warn about nothing."""
    source = """
        import asyncio, ferroloop

        async def main():
            return type(asyncio.get_running_loop()).__name__

        print(ferroloop.run(main()))
        with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
            print(runner.run(main()))
    """
    proc = child.run([sys.executable, *_WARNINGS_AS_ERRORS, "-c", textwrap.dedent(source)])
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "EventLoop\nEventLoop\n", "")


@pytest.mark.ferroloop_only
def test_install_warns_only_where_policies_are_deprecated(restore_policy):
    """``install()`` keeps its documented DeprecationWarning on 3.14+, and none before."""
    import ferroloop

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ferroloop.install()
    policy_warnings = [str(w.message) for w in caught if w.category is DeprecationWarning]
    loop = asyncio.new_event_loop()
    try:
        loop_type = type(loop)
    finally:
        loop.close()
    assert loop_type is ferroloop.EventLoop
    if sys.version_info >= (3, 14):
        assert len(policy_warnings) == 1
        assert "deprecated since Python 3.14" in policy_warnings[0]
    else:
        assert policy_warnings == []


@pytest.mark.ferroloop_only
def test_package_works_without_policy_classes(child):
    """With asyncio's policy classes gone (Python 3.16), ferroloop imports, ``run()`` works,
    ``EventLoopPolicy`` is a clear AttributeError, and the ``python -m ferroloop`` entry
    point still puts ferroloop behind an unmodified program's ``asyncio.run()``."""
    program = child.script("prog.py", _LOOP_REPORTING_PROGRAM)
    source = textwrap.dedent(_HIDE_POLICIES) + textwrap.dedent(f"""
        import ferroloop, ferroloop.__main__

        async def main():
            return type(asyncio.get_running_loop()).__name__

        print(ferroloop.run(main()))
        try:
            ferroloop.EventLoopPolicy
        except AttributeError as error:
            print("AttributeError", "no longer has" in str(error))
        ferroloop.__main__.main([{str(program)!r}])
    """)
    proc = child.run([sys.executable, "-c", source])
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        "EventLoop\nAttributeError True\nferroloop._loop\n",
        "",
    )


_EAGER_START = sys.version_info >= (3, 14)


@pytest.mark.parametrize("eager", [True, False])
def test_create_task_eager_start(loop, eager):
    """3.14's ``create_task(..., eager_start=)`` runs the coroutine up to its first
    suspension inside the call when true; before 3.14 the keyword is a TypeError."""
    events = []

    async def child():
        events.append("child started")
        await asyncio.sleep(0)
        events.append("child resumed")
        return "done"

    async def main():
        if not _EAGER_START:
            coro = child()
            try:
                loop.create_task(coro, eager_start=eager)
            except TypeError as error:
                return str(error)
            finally:
                coro.close()
        task = loop.create_task(child(), eager_start=eager)
        events.append("create_task returned")
        return await task

    result = loop.run_until_complete(main())
    if _EAGER_START:
        first = ["child started", "create_task returned"]
        assert events == (first if eager else first[::-1]) + ["child resumed"]
        assert result == "done"
    else:
        assert "eager_start" in result
        assert events == []


@pytest.mark.skipif(not _EAGER_START, reason="create_task passes keywords on from 3.14")
def test_create_task_passes_keywords_to_task_factory(loop):
    """3.14+: the task factory gets every keyword of create_task, ``name`` included."""
    received = []

    def factory(loop, coro, **kwargs):
        received.append(sorted(kwargs.items(), key=lambda item: item[0]))
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def child():
        return asyncio.current_task().get_name()

    async def main():
        return await loop.create_task(child(), name="worker", eager_start=True)

    loop.set_task_factory(factory)
    assert loop.run_until_complete(main()) == "worker"
    # The first call made run_until_complete's task for main(), with no keyword.
    assert received == [[], [("eager_start", True), ("name", "worker")]]


def test_create_task_and_future_follow_swapped_asyncio_classes(loop, monkeypatch):
    """Like asyncio, the loop reads ``asyncio.tasks.Task``/``asyncio.futures.Future`` when it
    makes one (CPython's tests swap in the pure-Python classes this way)."""
    from asyncio import futures, tasks

    monkeypatch.setattr(tasks, "Task", tasks._PyTask)
    monkeypatch.setattr(futures, "Future", futures._PyFuture)

    async def child():
        return "child done"

    async def main():
        future = loop.create_future()
        task = loop.create_task(child())
        return type(future), type(task), await task

    assert loop.run_until_complete(main()) == (futures._PyFuture, tasks._PyTask, "child done")


@pytest.mark.parametrize("source", ["handle", "task"])
def test_exception_handler_runs_in_the_failing_context(loop, source):
    """3.12+: a custom exception handler runs in the context of the handle or task that
    failed (it sees the variables they set); before 3.12 in the loop's own context."""
    import contextvars

    name = contextvars.ContextVar("name", default="outer")
    seen = []

    def handler(loop, context):
        seen.append(name.get())

    def callback():
        name.set("inner")
        raise ZeroDivisionError

    async def failing_task():
        callback()

    async def main():
        loop.set_exception_handler(handler)
        if source == "handle":
            loop.call_soon(callback, context=contextvars.copy_context())
        else:
            task = loop.create_task(failing_task())
            await asyncio.sleep(0)
            del task  # its exception is never retrieved: reported when collected
            import gc

            gc.collect()
        await asyncio.sleep(0.01)

    loop.run_until_complete(main())
    assert seen == (["inner"] if sys.version_info >= (3, 12) else ["outer"])


_SOCKET_CLEANUP = sys.version_info >= (3, 13)


@pytest.mark.parametrize("how", ["default", "keep", "replaced", "sock"])
def test_unix_server_socket_file_cleanup(loop, tmp_path, how):
    """3.13+: a Unix server removes its socket file when closed (``cleanup_socket=True``, the
    default, also for ``sock=``), unless told not to or the file is no longer its own;
    before 3.13 the file stays and the keyword is a TypeError."""
    import os
    import socket

    path = str(tmp_path / "server.sock")

    async def main():
        kwargs = {"cleanup_socket": False} if how == "keep" else {}
        if not _SOCKET_CLEANUP and kwargs:
            try:
                await loop.create_unix_server(asyncio.Protocol, path, **kwargs)
            except TypeError as error:
                return str(error)
        if how == "sock":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            server = await loop.create_unix_server(asyncio.Protocol, sock=sock)
        else:
            server = await loop.create_unix_server(asyncio.Protocol, path, **kwargs)
        if how == "replaced":
            os.unlink(path)
            with open(path, "w") as f:
                f.write("someone else's file")
        server.close()
        await server.wait_closed()
        return os.path.exists(path)

    result = loop.run_until_complete(main())
    if not _SOCKET_CLEANUP and how == "keep":
        assert "cleanup_socket" in result
    elif _SOCKET_CLEANUP and how in ("default", "sock"):
        assert result is False
    else:
        assert result is True


@pytest.mark.parametrize("offset", [0, 3, 10])
def test_sock_sendfile_leaves_the_file_after_what_it_sent(loop, tmp_path, offset):
    """Native sendfile leaves the file at ``offset + sent``; from 3.14 also when it sent
    nothing (``offset`` at the end of the file), before 3.14 the position is left alone."""
    import socket

    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789")
    left, right = socket.socketpair()
    left.setblocking(False)

    async def main():
        with open(path, "rb") as file:
            file.seek(7)
            sent = await loop.sock_sendfile(left, file, offset, fallback=False)
            return sent, file.tell()

    try:
        sent, position = loop.run_until_complete(main())
        received = right.recv(100) if sent else b""
    finally:
        left.close()
        right.close()
    assert (sent, received) == (10 - offset, b"0123456789"[offset:])
    if offset == 10 and sys.version_info < (3, 14):
        assert position == 7
    else:
        assert position == 10


def test_cancelled_serve_forever_with_a_hanging_client(loop):
    """3.14+: cancelling serve_forever() closes the server's connections too, so it ends
    even while a client stays connected; before 3.14 the connection stays open."""
    import socket

    async def main():
        connected = asyncio.Event()
        transports = []

        class Proto(asyncio.Protocol):
            def connection_made(self, transport):
                transports.append(transport)
                connected.set()

        server = await loop.create_server(Proto, "127.0.0.1", 0)
        serving = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        client = socket.create_connection(server.sockets[0].getsockname())
        try:
            await connected.wait()
            serving.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(serving), 1.0)
            except asyncio.CancelledError:
                ended = "cancelled"
            except TimeoutError:
                ended = "still waiting"
            closing = transports[0].is_closing()
            if not serving.done():  # before 3.14: let it end
                transports[0].close()
                await asyncio.gather(serving, return_exceptions=True)
        finally:
            client.close()
        return ended, closing, server.is_serving()

    if sys.version_info >= (3, 14):
        expected = ("cancelled", True, False)
    elif sys.version_info >= (3, 12):
        expected = ("still waiting", False, False)  # wait_closed waits for the connection
    else:
        expected = ("cancelled", False, False)  # 3.11's wait_closed does not wait for it
    assert loop.run_until_complete(main()) == expected


def test_callback_checks_do_not_warn(loop):
    """The coroutine-function checks of call_soon (debug mode) and add_signal_handler use
    asyncio's own test, not the public ``asyncio.iscoroutinefunction`` that 3.14 deprecates."""
    import signal

    ran = []
    loop.set_debug(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        loop.call_soon(ran.append, "call_soon")
        loop.add_signal_handler(signal.SIGUSR1, ran.append, "signal")
        try:
            loop.run_until_complete(asyncio.sleep(0))
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
    assert ran == ["call_soon"]
