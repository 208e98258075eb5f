"""loop.add_reader / add_writer / remove_reader / remove_writer (issue #3).

What is checked, against CPython 3.11's selector loop:

* a descriptor is an int or any object with ``fileno()``; a registration made with one form is
  found again with the other;
* ``add_*`` return None, ``remove_*`` return True only when a callback of that kind was
  registered; a second ``add_*`` replaces the first callback;
* callbacks are level-triggered: they keep being called while the descriptor stays ready, and
  stop once it is drained or removed;
* a reader and a writer on one descriptor are independent;
* callbacks run in the context captured at registration; their exceptions reach the exception
  handler and the registration stays;
* bad descriptors (invalid objects, negative numbers, closed sockets, closed descriptors, regular
  files) raise the same exception types and messages as stock asyncio, and leave nothing
  registered; a closed loop refuses registrations but still validates the descriptor first.

The RuntimeError for a descriptor owned by a transport is not tested: ferroloop has no
transports yet (issue #4).
"""

from __future__ import annotations

import contextvars
import os
import socket
from collections.abc import Callable, Iterator

import pytest
from support import SAFETY_TIMEOUT

_context_var: contextvars.ContextVar[str] = contextvars.ContextVar("io_readiness_var")


class FilenoObject:
    """A minimal object with a ``fileno()`` method, as add_reader accepts."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def __repr__(self) -> str:
        return f"<FilenoObject fd={self.fd}>"


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected non-blocking AF_UNIX stream socketpair, closed after the test."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _outcome(action: Callable[[], object]) -> tuple:
    """``("returned", value)`` or ``("raised", exception type, message)`` of ``action()``."""
    try:
        value = action()
    except Exception as exc:  # the type and message are what is compared
        return ("raised", type(exc), str(exc))
    return ("returned", value)


def _run_with_safety_stop(loop) -> None:
    """Run the loop until a callback stops it, or SAFETY_TIMEOUT elapses."""
    guard = loop.call_later(SAFETY_TIMEOUT, loop.stop)
    loop.run_forever()
    guard.cancel()


# ---------------------------------------------------------------- registration forms


@pytest.mark.parametrize("form", ["int", "socket", "fileno_object"])
def test_reader_accepts_int_or_fileno_object(loop, socket_pair, form):
    """add_reader takes an int or an object with fileno(), returns None, and passes the
    registered arguments to the callback when the descriptor becomes readable."""
    reader, writer = socket_pair
    fd = {"int": reader.fileno(), "socket": reader, "fileno_object": FilenoObject(reader.fileno())}
    calls = []

    def on_readable(*args):
        calls.append(args)
        loop.remove_reader(fd[form])
        loop.stop()

    assert loop.add_reader(fd[form], on_readable, "a", 2) is None
    loop.call_soon(writer.send, b"x")
    _run_with_safety_stop(loop)
    assert calls == [("a", 2)]


@pytest.mark.parametrize("form", ["int", "socket", "fileno_object"])
def test_writer_accepts_int_or_fileno_object(loop, socket_pair, form):
    """add_writer takes an int or an object with fileno(), returns None, and passes the
    registered arguments to the callback (a connected socket is writable at once)."""
    sock, _ = socket_pair
    fd = {"int": sock.fileno(), "socket": sock, "fileno_object": FilenoObject(sock.fileno())}
    calls = []

    def on_writable(*args):
        calls.append(args)
        loop.remove_writer(fd[form])
        loop.stop()

    assert loop.add_writer(fd[form], on_writable, "w") is None
    _run_with_safety_stop(loop)
    assert calls == [("w",)]


def test_registration_found_by_int_or_object(loop, socket_pair):
    """A registration made with a socket is removed through its fd number and vice versa;
    remove_* returns True once, then False."""
    sock, _ = socket_pair
    loop.add_reader(sock, print)
    loop.add_writer(sock.fileno(), print)
    assert loop.remove_reader(sock.fileno()) is True
    assert loop.remove_reader(sock) is False
    assert loop.remove_writer(FilenoObject(sock.fileno())) is True
    assert loop.remove_writer(sock.fileno()) is False


def test_remove_returns_false_when_nothing_registered(loop, socket_pair):
    """remove_reader/remove_writer of a valid descriptor that has no such callback: False;
    removing the other kind leaves the registered one in place."""
    sock, _ = socket_pair
    assert loop.remove_reader(sock) is False
    assert loop.remove_writer(sock) is False
    loop.add_reader(sock, print)
    assert loop.remove_writer(sock) is False
    assert loop.remove_reader(sock) is True
    loop.add_writer(sock, print)
    assert loop.remove_reader(sock) is False
    assert loop.remove_writer(sock) is True


def test_second_add_reader_replaces_the_first(loop, socket_pair):
    """A second add_reader on the same descriptor replaces the callback: only the new one runs,
    and a single remove_reader clears the registration."""
    reader, writer = socket_pair
    calls = []

    def first():
        calls.append("first")

    def second():
        calls.append("second")
        loop.remove_reader(reader)
        loop.stop()

    loop.add_reader(reader, first)
    loop.add_reader(reader.fileno(), second)
    writer.send(b"x")
    _run_with_safety_stop(loop)
    assert calls == ["second"]
    assert loop.remove_reader(reader) is False


def test_second_add_writer_replaces_the_first(loop, socket_pair):
    """A second add_writer on the same descriptor replaces the callback."""
    sock, _ = socket_pair
    calls = []

    def second():
        calls.append("second")
        loop.remove_writer(sock)
        loop.stop()

    loop.add_writer(sock, calls.append, "first")
    loop.add_writer(sock, second)
    _run_with_safety_stop(loop)
    assert calls == ["second"]


# ---------------------------------------------------------------- level-triggered dispatch


def test_reader_is_level_triggered(loop, socket_pair):
    """A reader that does not consume the data is called again and again (level-triggered,
    as asyncio's selectors are); the data is still there afterwards."""
    reader, writer = socket_pair
    calls = []

    def on_readable():
        calls.append(None)
        if len(calls) == 5:
            loop.remove_reader(reader)
            loop.stop()

    loop.add_reader(reader, on_readable)
    writer.send(b"unread")
    _run_with_safety_stop(loop)
    assert len(calls) == 5
    assert reader.recv(100) == b"unread"


def test_reader_stops_once_drained(loop, socket_pair):
    """A reader consuming one byte per call is called exactly once per byte: it keeps firing
    while data remains, and not after the descriptor is drained."""
    reader, writer = socket_pair
    received = []

    def on_readable():
        received.append(reader.recv(1))

    loop.add_reader(reader, on_readable)
    writer.send(b"abc")
    loop.call_later(0.2, loop.stop)
    _run_with_safety_stop(loop)
    assert loop.remove_reader(reader) is True
    assert received == [b"a", b"b", b"c"]


def test_writer_is_level_triggered(loop, socket_pair):
    """A writer on a socket that stays writable is called on every iteration until removed."""
    sock, _ = socket_pair
    calls = []
    removed = []

    def on_writable():
        calls.append(None)
        if len(calls) == 5:
            removed.append(loop.remove_writer(sock))
            loop.stop()

    loop.add_writer(sock, on_writable)
    _run_with_safety_stop(loop)
    assert len(calls) == 5
    assert removed == [True]


def test_removed_reader_is_not_called(loop, socket_pair):
    """After remove_reader, readiness no longer calls the callback."""
    reader, writer = socket_pair
    calls = []
    loop.add_reader(reader, calls.append, "called")
    assert loop.remove_reader(reader) is True
    writer.send(b"x")
    loop.call_later(0.05, loop.stop)
    _run_with_safety_stop(loop)
    assert calls == []


def test_reader_fires_on_peer_close(loop, socket_pair):
    """The peer closing its end makes the descriptor readable (recv then returns b'')."""
    reader, writer = socket_pair
    seen = []

    def on_readable():
        seen.append(reader.recv(10))
        loop.remove_reader(reader)
        loop.stop()

    loop.add_reader(reader, on_readable)
    loop.call_soon(writer.close)
    _run_with_safety_stop(loop)
    assert seen == [b""]


def test_reader_and_writer_on_one_descriptor_are_independent(loop, socket_pair):
    """A reader and a writer on the same socket both run; removing the writer keeps the reader
    and removing the reader keeps the writer."""
    sock, peer = socket_pair
    events = []

    def on_writable():
        events.append(("writable", loop.remove_writer(sock)))
        peer.send(b"ping")

    def on_readable():
        events.append(("readable", sock.recv(10), loop.remove_reader(sock)))
        loop.stop()

    loop.add_reader(sock, on_readable)
    loop.add_writer(sock, on_writable)
    _run_with_safety_stop(loop)
    # remove_writer/remove_reader inside the callbacks found their registration (True).
    assert events == [("writable", True), ("readable", b"ping", True)]

    # Now the other way round: the writer survives the reader's removal.
    loop.add_reader(sock, print)
    writes = []

    def on_writable_again():
        writes.append(None)
        loop.remove_writer(sock)
        loop.stop()

    loop.add_writer(sock, on_writable_again)
    assert loop.remove_reader(sock) is True
    _run_with_safety_stop(loop)
    assert writes == [None]


def test_many_descriptors_each_get_their_callback(loop):
    """Readers on 40 socketpairs: each callback gets its own descriptor's data."""
    pairs = [socket.socketpair() for _ in range(40)]
    try:
        received: dict[int, bytes] = {}

        def on_readable(index, sock):
            received[index] = sock.recv(100)
            loop.remove_reader(sock)
            if len(received) == len(pairs):
                loop.stop()

        for index, (reader, writer) in enumerate(pairs):
            reader.setblocking(False)
            loop.add_reader(reader, on_readable, index, reader)
            writer.send(f"message {index}".encode())
        _run_with_safety_stop(loop)
        assert received == {i: f"message {i}".encode() for i in range(len(pairs))}
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_callback_may_remove_itself_and_others(loop, socket_pair):
    """A reader callback that removes the writer of the same descriptor and itself runs once;
    the writer (already ready in the same iteration or not) does not run afterwards."""
    sock, peer = socket_pair
    calls = []
    peer.send(b"x")

    def on_readable():
        calls.append("reader")
        loop.remove_writer(sock)
        loop.remove_reader(sock)
        loop.call_later(0.05, loop.stop)

    def on_writable():
        calls.append("writer")

    loop.add_writer(sock, on_writable)
    loop.add_reader(sock, on_readable)
    _run_with_safety_stop(loop)
    # Whether the writer ran before the reader in their common first iteration is not
    # specified; once the reader removed it, the writer never runs, even if it was already
    # due in that iteration.
    assert calls in (["reader"], ["writer", "reader"])


# ---------------------------------------------------------------- context and errors


def test_callback_runs_in_context_of_registration(loop, socket_pair):
    """The callback sees the contextvars of the context that called add_reader."""
    reader, writer = socket_pair
    seen = []

    def on_readable():
        seen.append(_context_var.get("unset"))
        loop.remove_reader(reader)
        loop.stop()

    def register():
        _context_var.set("registered")
        loop.add_reader(reader, on_readable)

    contextvars.copy_context().run(register)
    assert _context_var.get("unset") == "unset"
    writer.send(b"x")
    _run_with_safety_stop(loop)
    assert seen == ["registered"]


def test_callback_exception_reaches_handler_and_registration_stays(loop, socket_pair):
    """An exception in a reader callback goes to the exception handler ('Exception in
    callback ...', the exception object itself); the reader stays registered and is called
    again."""
    reader, writer = socket_pair
    errors = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    failure = RuntimeError("reader failed")
    calls = []

    def on_readable():
        calls.append(None)
        if len(calls) == 1:
            raise failure
        loop.remove_reader(reader)
        loop.stop()

    loop.add_reader(reader, on_readable)
    writer.send(b"x")
    _run_with_safety_stop(loop)
    assert len(calls) == 2
    assert len(errors) == 1
    assert errors[0]["exception"] is failure
    assert errors[0]["message"].startswith("Exception in callback ")


# ---------------------------------------------------------------- bad descriptors


def _closed_socket() -> socket.socket:
    sock = socket.socket()
    sock.close()
    return sock


def _unused_fd() -> int:
    """A descriptor number that is not open in this process."""
    for fd in range(1000, 2000):
        try:
            os.fstat(fd)
        except OSError:
            return fd
    raise RuntimeError("no unused descriptor number between 1000 and 2000")


#: Bad descriptors: name -> (factory, exception type, message or None to compare with stock).
BAD_DESCRIPTORS = {
    "object without fileno": (object, ValueError, None),
    "str": (lambda: "3", ValueError, "Invalid file object: '3'"),
    "float": (lambda: 1.5, ValueError, "Invalid file object: 1.5"),
    "None": (lambda: None, ValueError, "Invalid file object: None"),
    "negative int": (lambda: -1, ValueError, "Invalid file descriptor: -1"),
    "fileno() returning -1": (lambda: FilenoObject(-1), ValueError, "Invalid file descriptor: -1"),
    "closed socket": (_closed_socket, ValueError, "Invalid file descriptor: -1"),
}


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
@pytest.mark.parametrize("bad", list(BAD_DESCRIPTORS))
def test_invalid_descriptor_raises_value_error_like_asyncio(loop, stock_loop, method, bad):
    """Objects that are not descriptors, negative numbers and closed sockets: ValueError with
    asyncio's message ('Invalid file object: ...' / 'Invalid file descriptor: -1')."""
    factory, exc_type, message = BAD_DESCRIPTORS[bad]
    fd = factory()
    args = (fd, print) if method.startswith("add") else (fd,)
    expected = _outcome(lambda: getattr(stock_loop, method)(*args))
    assert expected[:2] == ("raised", exc_type), "stock asyncio changed behaviour"
    if message is not None:
        assert expected[2] == message, "stock asyncio changed behaviour"
    assert _outcome(lambda: getattr(loop, method)(*args)) == expected


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_closed_descriptor_number_raises_ebadf(loop, stock_loop, method):
    """A number that is no open descriptor: OSError EBADF, as epoll reports it; nothing stays
    registered."""
    fd = _unused_fd()
    expected = _outcome(lambda: getattr(stock_loop, method)(fd, print))
    assert expected == ("raised", OSError, "[Errno 9] Bad file descriptor")
    assert _outcome(lambda: getattr(loop, method)(fd, print)) == expected
    assert loop.remove_reader(fd) is False
    assert loop.remove_writer(fd) is False


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_regular_file_raises_permission_error(loop, stock_loop, method, tmp_path):
    """A regular file cannot be polled by epoll: PermissionError (EPERM), as with asyncio;
    nothing stays registered."""
    path = tmp_path / "regular.txt"
    path.write_bytes(b"data")
    with open(path, "rb") as f:
        expected = _outcome(lambda: getattr(stock_loop, method)(f, print))
        assert expected == ("raised", PermissionError, "[Errno 1] Operation not permitted")
        assert _outcome(lambda: getattr(loop, method)(f, print)) == expected
        assert loop.remove_reader(f) is False
        assert loop.remove_writer(f.fileno()) is False


@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_remove_after_socket_closed_while_registered(loop, stock_loop, kind):
    """A socket registered (as an object, for one kind only) and closed afterwards is still
    found by remove_reader/remove_writer on that object: True, no exception, as asyncio's
    selector does.  Once removed, the closed socket is an invalid descriptor again."""
    for current in (stock_loop, loop):
        a, b = socket.socketpair()
        getattr(current, f"add_{kind}")(a, print)
        a.close()
        b.close()
        assert getattr(current, f"remove_{kind}")(a) is True, current
        with pytest.raises(ValueError, match=r"^Invalid file descriptor: -1$"):
            getattr(current, f"remove_{kind}")(a)


# ---------------------------------------------------------------- closed loop


def test_closed_loop_refuses_registration(new_loop, socket_pair):
    """After close(): add_reader/add_writer raise RuntimeError('Event loop is closed'),
    remove_reader/remove_writer return False, and a bad descriptor is still reported as a
    ValueError first (as asyncio validates it before checking the loop)."""
    sock, _ = socket_pair
    loop = new_loop()
    loop.add_reader(sock, print)
    loop.close()
    for method in ("add_reader", "add_writer"):
        with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
            getattr(loop, method)(sock, print)
        with pytest.raises(ValueError, match=r"^Invalid file object: "):
            getattr(loop, method)(object(), print)
    assert loop.remove_reader(sock) is False
    assert loop.remove_writer(sock) is False
    with pytest.raises(ValueError, match=r"^Invalid file object: "):
        loop.remove_reader(object())


def test_close_drops_registrations(new_loop, socket_pair):
    """Closing a loop with registered callbacks neither calls them nor fails; the descriptor
    can be registered on another loop afterwards."""
    sock, peer = socket_pair
    first = new_loop()
    calls = []
    first.add_reader(sock, calls.append, "first")
    first.add_writer(sock, calls.append, "first writer")
    first.close()

    second = new_loop()

    def on_readable():
        calls.append(sock.recv(10))
        second.remove_reader(sock)
        second.stop()

    second.add_reader(sock, on_readable)
    peer.send(b"again")
    _run_with_safety_stop(second)
    assert calls == [b"again"]
