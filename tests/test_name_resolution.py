"""loop.getaddrinfo / loop.getnameinfo, and sock_connect's name resolution (issue #3).

Against CPython 3.11: ``loop.getaddrinfo(host, port, *, family, type, proto, flags)`` returns
exactly what ``socket.getaddrinfo`` returns (same list, same order, same enum types) or raises
what it raises, for numeric hosts (where ferroloop answers without a thread) as for names; it
runs in the default executor for names, as asyncio does; ``getnameinfo`` likewise.
``sock_connect`` of an AF_INET/AF_INET6 socket resolves a host name through
``loop.getaddrinfo`` with the socket's family and type, and skips resolution for a numeric
host.

Only numeric hosts, ``localhost`` (from /etc/hosts) and ``AI_NUMERICHOST`` lookups are used: no
test needs DNS.  ferroloop-only checks (marker ``ferroloop_only``): the numeric fast path starts
no executor and does not wait for a busy one.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

import pytest
from support import SAFETY_TIMEOUT, CountingExecutor, ipv6_available, run

STREAM = socket.SOCK_STREAM
DGRAM = socket.SOCK_DGRAM


def outcome(action: Callable[[], object]) -> tuple:
    """``("returned", repr(value))`` or ``("raised", type, errno, message)`` of ``action()``.

    The repr of a getaddrinfo result shows the enum types of family and type as well.
    """
    try:
        value = action()
    except Exception as exc:  # the type and message are what is compared
        return ("raised", type(exc), getattr(exc, "errno", None), str(exc))
    return ("returned", repr(value))


# ---------------------------------------------------------------- getaddrinfo

#: (host, port, keyword arguments) compared with socket.getaddrinfo.  Numeric hosts in every
#: form getaddrinfo(3) accepts (including the inet_aton shorthands that inet_pton refuses),
#: ports as int/str/bytes/None/service names/out of range, every family/type/proto/flags
#: combination that changes the answer or the error.
GETADDRINFO_CASES = [
    ("127.0.0.1", 80, {}),
    ("127.0.0.1", "80", {"type": STREAM}),
    ("127.0.0.1", b"80", {"type": STREAM}),
    (b"127.0.0.1", 80, {"type": STREAM}),
    ("127.0.0.1", None, {}),
    ("127.0.0.1", "", {}),
    ("127.0.0.1", 0, {"family": socket.AF_INET, "type": DGRAM}),
    ("127.0.0.1", 70000, {"type": STREAM}),
    ("127.0.0.1", -1, {"type": STREAM}),
    ("127.0.0.1", 80.5, {}),
    ("127.0.0.1", "http", {"type": STREAM}),
    ("127.0.0.1", "no-such-service", {"type": STREAM}),
    ("127.0.0.1", "http", {"flags": socket.AI_NUMERICSERV}),
    ("127.0.0.1", 80, {"flags": socket.AI_NUMERICSERV | socket.AI_NUMERICHOST}),
    ("127.0.0.1", 80, {"family": socket.AF_INET6, "type": STREAM}),
    ("127.0.0.1", 80, {"family": 12345}),
    ("127.0.0.1", 80, {"type": STREAM, "proto": socket.IPPROTO_UDP}),
    ("127.0.0.1", 80, {"type": DGRAM, "proto": socket.IPPROTO_UDP}),
    ("127.0.0.1", 80, {"type": socket.SOCK_RAW}),
    ("127.0.0.1", 80, {"type": STREAM, "flags": socket.AI_CANONNAME}),
    ("127.0.0.1", 80, {"type": STREAM, "flags": socket.AI_PASSIVE}),
    ("127.1", 80, {"type": STREAM}),
    ("1.2.3", 80, {"type": STREAM}),
    ("0x7f.0.0.1", 80, {"type": STREAM}),
    ("0127.0.0.1", 80, {"type": STREAM}),
    ("4294967295", 80, {"type": STREAM}),
    ("::1", 80, {}),
    ("::1", 80, {"family": socket.AF_INET6, "type": STREAM}),
    ("::1", 80, {"family": socket.AF_INET, "type": STREAM}),
    ("::ffff:127.0.0.1", 80, {"type": STREAM}),
    ("fe80::1%lo", 80, {"type": STREAM}),
    ("::1%lo", 80, {"type": STREAM, "flags": socket.AI_NUMERICHOST}),
    (" 127.0.0.1", 80, {"type": STREAM, "flags": socket.AI_NUMERICHOST}),
    ("not-numeric.invalid", 80, {"flags": socket.AI_NUMERICHOST}),
    (None, 80, {"type": STREAM}),
    (None, 80, {"type": STREAM, "flags": socket.AI_PASSIVE}),
    (None, None, {}),
    ("localhost", 80, {"type": STREAM}),
    ("localhost", "http", {"family": socket.AF_INET}),
    (1234, 80, {}),
    ("127.0.0.1", 80, {"family": "inet"}),
]


@pytest.mark.parametrize(
    ("host", "port", "options"),
    GETADDRINFO_CASES,
    ids=[f"{h!r}-{p!r}-{o}" for h, p, o in GETADDRINFO_CASES],
)
def test_getaddrinfo_matches_socket_module(loop, host, port, options):
    """loop.getaddrinfo gives socket.getaddrinfo's exact answer (list, order, enum types) or
    its exact error (type, errno, message)."""
    expected = outcome(lambda: socket.getaddrinfo(host, port, **options))
    actual = outcome(lambda: run(loop, loop.getaddrinfo(host, port, **options)))
    assert actual == expected


def test_getaddrinfo_options_are_keyword_only(loop):
    """family/type/proto/flags are keyword-only: a third positional argument is a TypeError
    raised when called."""
    with pytest.raises(TypeError):
        loop.getaddrinfo("127.0.0.1", 80, socket.AF_INET)


def test_getaddrinfo_is_a_coroutine_usable_as_task(loop):
    """getaddrinfo/getnameinfo return coroutines: create_task accepts them."""

    async def scenario():
        infos = await loop.create_task(loop.getaddrinfo("127.0.0.1", 80, type=STREAM))
        names = await loop.create_task(
            loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
        )
        return infos, names

    infos, names = run(loop, scenario())
    assert infos == [(socket.AF_INET, STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80))]
    assert names == ("127.0.0.1", "80")


def test_getaddrinfo_of_a_name_runs_in_default_executor(loop, counting_executor):
    """A host name is resolved in the default executor (as asyncio does)."""
    infos = run(loop, loop.getaddrinfo("localhost", 80, type=STREAM))
    assert infos == socket.getaddrinfo("localhost", 80, type=STREAM)
    assert len(counting_executor.submitted) == 1


def test_getaddrinfo_many_concurrent(loop):
    """Thirty concurrent lookups (names and numbers) all complete with the right answers."""
    hosts = ["localhost", "127.0.0.1", "::1"] * 10

    async def scenario():
        return await asyncio.gather(
            *(loop.getaddrinfo(host, 443, type=STREAM) for host in hosts), return_exceptions=True
        )

    results = run(loop, scenario())
    for host, result in zip(hosts, results, strict=True):
        expected = outcome(lambda h=host: socket.getaddrinfo(h, 443, type=STREAM))
        if isinstance(result, Exception):
            actual = ("raised", type(result), getattr(result, "errno", None), str(result))
        else:
            actual = ("returned", repr(result))
        assert actual == expected, host


def test_getaddrinfo_after_executor_shutdown(loop, stock_loop):
    """Once shutdown_default_executor() ran, resolving a name raises asyncio's RuntimeError."""
    results = []
    for current in (stock_loop, loop):
        run(current, current.shutdown_default_executor())
        results.append(outcome(lambda c=current: run(c, c.getaddrinfo("localhost", 80))))
    assert results[0] == ("raised", RuntimeError, None, "Executor shutdown has been called")
    assert results[1] == results[0]


# ---------------------------------------------------------------- getnameinfo

#: (sockaddr, flags) compared with socket.getnameinfo (no case needs DNS).
GETNAMEINFO_CASES = [
    (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    (("127.0.0.1", 80), 0),
    (("127.0.0.1", 80), socket.NI_NAMEREQD),
    (("127.0.0.1", 80), socket.NI_NUMERICSERV),
    (("127.0.0.1", 70000), socket.NI_NUMERICHOST),
    (("::1", 80, 0, 0), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    (("127.0.0.1",), 0),
    ("127.0.0.1", 0),
    (("127.0.0.1", 80), "flags"),
    (("127.0.0.1", "80"), 0),
]


@pytest.mark.parametrize(
    ("sockaddr", "flags"), GETNAMEINFO_CASES, ids=[f"{a!r}-{f!r}" for a, f in GETNAMEINFO_CASES]
)
def test_getnameinfo_matches_socket_module(loop, sockaddr, flags):
    """loop.getnameinfo gives socket.getnameinfo's answer or its exact error."""
    expected = outcome(lambda: socket.getnameinfo(sockaddr, flags))
    actual = outcome(lambda: run(loop, loop.getnameinfo(sockaddr, flags)))
    assert actual == expected


def test_getnameinfo_flags_default_to_zero(loop):
    """flags defaults to 0."""
    expected = socket.getnameinfo(("127.0.0.1", 80), 0)
    assert run(loop, loop.getnameinfo(("127.0.0.1", 80))) == expected


def test_getnameinfo_reverse_lookup_runs_in_default_executor(loop, counting_executor):
    """A reverse lookup (no NI_NUMERIC* flags) runs in the default executor (as asyncio
    does)."""
    assert run(loop, loop.getnameinfo(("127.0.0.1", 80), 0)) == socket.getnameinfo(
        ("127.0.0.1", 80), 0
    )
    assert len(counting_executor.submitted) == 1


# ---------------------------------------------------------------- sock_connect resolution


def _fake_resolver(loop, table: dict[str, str]):
    """Replace loop.getaddrinfo by a resolver answering from ``table`` (name -> IPv4 address)
    and recording its calls; returns the list of recorded calls."""
    calls = []

    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        calls.append({"host": host, "port": port, "family": family, "type": type})
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, STREAM, socket.IPPROTO_TCP, "", (table[host], port))]

    loop.getaddrinfo = getaddrinfo
    return calls


def test_sock_connect_resolves_a_name_through_loop_getaddrinfo(loop, listener):
    """sock_connect of an AF_INET socket to (name, port) asks loop.getaddrinfo with the
    socket's family and type, then connects to the first address returned."""
    calls = _fake_resolver(loop, {"service.test": "127.0.0.1"})
    port = listener.getsockname()[1]
    with socket.socket() as client:
        client.setblocking(False)
        run(loop, loop.sock_connect(client, ("service.test", port)))
        assert client.getpeername() == ("127.0.0.1", port)
    assert calls == [
        {"host": "service.test", "port": port, "family": socket.AF_INET, "type": STREAM}
    ]


def test_sock_connect_resolution_error_propagates(loop, listener):
    """A resolution error from loop.getaddrinfo reaches the caller unchanged; the socket is
    left unconnected and unregistered."""
    _fake_resolver(loop, {})
    with socket.socket() as client:
        client.setblocking(False)
        with pytest.raises(socket.gaierror) as error:
            run(loop, loop.sock_connect(client, ("unknown.test", 80)))
        assert error.value.errno == socket.EAI_NONAME
        assert loop.remove_writer(client) is False
        with pytest.raises(OSError):
            client.getpeername()


def test_sock_connect_numeric_host_needs_no_resolution(loop, listener, counting_executor):
    """A numeric host is connected to directly: loop.getaddrinfo is not called and no
    executor job runs (asyncio's _ipaddr_info shortcut)."""
    calls = _fake_resolver(loop, {})
    with socket.socket() as client:
        client.setblocking(False)
        run(loop, loop.sock_connect(client, listener.getsockname()))
        assert client.getpeername() == listener.getsockname()
    assert calls == []
    assert counting_executor.submitted == []


def test_sock_connect_localhost(loop, listener):
    """A real name resolution ('localhost', from /etc/hosts) before connecting."""
    port = listener.getsockname()[1]
    expected = socket.getaddrinfo("localhost", port, socket.AF_INET, STREAM)[0][4]
    with socket.socket() as client:
        client.setblocking(False)
        run(loop, loop.sock_connect(client, ("localhost", port)))
        assert client.getpeername() == expected


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 on loopback")
def test_sock_connect_ipv6_numeric(loop):
    """An AF_INET6 socket connects to ('::1', port) (the 2-tuple is completed as asyncio's
    resolution does)."""
    with (
        socket.create_server(("::1", 0), family=socket.AF_INET6) as server,
        socket.socket(socket.AF_INET6) as client,
    ):
        client.setblocking(False)
        port = server.getsockname()[1]
        run(loop, loop.sock_connect(client, ("::1", port)))
        assert client.getpeername()[:2] == ("::1", port)


# ---------------------------------------------------------------- ferroloop's fast path


def _asyncio_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("asyncio")}


#: Numeric lookups the fast path must answer: IPv4/IPv6 literals, a bytes host, ports as
#: int, str and None (asyncio's own numeric shortcut, _ipaddr_info, accepts all of these).
NUMERIC_LOOKUPS = [
    ("127.0.0.1", 80, {}),
    ("127.0.0.1", "8080", {"type": STREAM}),
    ("127.0.0.1", None, {"family": socket.AF_INET, "type": DGRAM}),
    ("::1", 443, {"type": STREAM}),
    (None, 80, {"type": STREAM, "flags": socket.AI_PASSIVE}),
    (b"127.0.0.1", 80, {"type": STREAM}),
]


@pytest.mark.ferroloop_only
@pytest.mark.parametrize(
    ("host", "port", "options"),
    NUMERIC_LOOKUPS,
    ids=[f"{h!r}-{p!r}-{o}" for h, p, o in NUMERIC_LOOKUPS],
)
def test_numeric_getaddrinfo_starts_no_executor(loop, host, port, options):
    """Numeric hosts are answered without the default executor: none is created and no
    'asyncio_*' thread starts; the answer is socket.getaddrinfo's."""
    threads_before = _asyncio_threads()
    result = run(loop, loop.getaddrinfo(host, port, **options))
    assert result == socket.getaddrinfo(host, port, **options)
    assert loop._default_executor is None
    assert _asyncio_threads() <= threads_before


@pytest.mark.ferroloop_only
def test_numeric_getaddrinfo_does_not_wait_for_a_busy_executor(loop):
    """With the default executor's only worker blocked, a numeric lookup still completes
    (and submits nothing), while a name lookup waits for the worker."""
    executor = CountingExecutor(max_workers=1)
    loop.set_default_executor(executor)
    release = threading.Event()
    executor.submit(release.wait, SAFETY_TIMEOUT)
    try:

        async def scenario():
            name_lookup = loop.create_task(loop.getaddrinfo("localhost", 80, type=STREAM))
            numeric = await loop.getaddrinfo("127.0.0.1", 80, type=STREAM)
            name_done_early = name_lookup.done()
            release.set()
            return numeric, name_done_early, await name_lookup

        numeric, name_done_early, by_name = run(loop, scenario())
    finally:
        release.set()
        executor.shutdown(wait=True)
    assert numeric == socket.getaddrinfo("127.0.0.1", 80, type=STREAM)
    assert name_done_early is False
    assert by_name == socket.getaddrinfo("localhost", 80, type=STREAM)
    assert len(executor.submitted) == 2  # the blocker and the name lookup only
