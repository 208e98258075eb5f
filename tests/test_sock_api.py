"""The loop's sock_* coroutines (issue #3), against CPython 3.11's selector loop.

sock_recv, sock_recv_into, sock_recvfrom, sock_recvfrom_into, sock_sendall, sock_sendto,
sock_connect, sock_accept and sock_sendfile over 127.0.0.1 TCP/UDP and AF_UNIX sockets:

* results and data integrity, both when the socket is ready at once and when the operation has
  to wait for readiness; large transfers; full duplex on one socket;
* asyncio's argument checks: a blocking socket (debug mode only, as in 3.11), an SSLSocket,
  sock_sendfile's file/offset/count checks; errors of the socket module pass through unchanged;
* error paths with the exact exception types and messages: refused connect (TCP and AF_UNIX),
  peer reset, closed socket;
* cancellation of a waiting operation leaves the socket unregistered (remove_reader /
  remove_writer return False) and usable by a later operation;
* sock_sendfile uses sendfile(2) for a regular file (no read of the file object, no executor
  job) and falls back to reading the file in the default executor otherwise.

Name resolution by sock_connect is tested in test_name_resolution.py.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import os
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import PAYLOAD, recv_exactly, recv_to_eof, reset_connection, run


def outcome(loop, make_coro: Callable[[], object]) -> tuple:
    """``("returned", value)`` or ``("raised", type, errno, message)`` of running a coroutine.

    ``make_coro()`` itself must not raise: asyncio's sock_* methods are coroutines, so every
    error appears when the coroutine runs.  The coroutine goes through ``create_task``, which
    accepts nothing but a coroutine.
    """
    coro = make_coro()

    async def as_task():
        return await loop.create_task(coro)

    try:
        value = run(loop, as_task())
    except Exception as exc:  # the type and message are what is compared
        return ("raised", type(exc), getattr(exc, "errno", None), str(exc))
    return ("returned", value)


async def drain(loop, sock: socket.socket, suffix: bytes) -> bytes:
    """Read with sock_recv until the data received ends with ``suffix``."""
    data = bytearray()
    while not data.endswith(suffix):
        chunk = await loop.sock_recv(sock, 1 << 20)
        assert chunk, "EOF before the expected suffix"
        data += chunk
    return bytes(data)


def make_non_blocking(*socks: socket.socket) -> None:
    for sock in socks:
        sock.setblocking(False)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def listener(listener: socket.socket) -> socket.socket:
    """The shared listening socket (conftest), non-blocking as sock_accept wants it."""
    listener.setblocking(False)
    return listener


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of non-blocking TCP sockets on 127.0.0.1: (client, accepted)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    make_non_blocking(client, accepted)
    yield client, accepted
    client.close()
    accepted.close()


@pytest.fixture
def unix_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected non-blocking AF_UNIX stream socketpair with a small send buffer on the
    first socket, so that large writes have to wait for the peer."""
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    make_non_blocking(a, b)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two non-blocking UDP sockets bound to 127.0.0.1 (not connected)."""
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock in (a, b):
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory for AF_UNIX socket paths (108-byte limit)."""
    path = Path(tempfile.mkdtemp(prefix="fl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def payload_file(tmp_path) -> Iterator[io.BufferedReader]:
    """A regular file holding PAYLOAD, opened for binary reading."""
    path = tmp_path / "payload.bin"
    path.write_bytes(PAYLOAD)
    with open(path, "rb") as f:
        yield f


class CountingFileIO(io.FileIO):
    """A binary file that counts the calls reading its data through Python."""

    reads = 0

    def read(self, *args):
        self.reads += 1
        return super().read(*args)

    def readinto(self, buffer):
        self.reads += 1
        return super().readinto(buffer)

    def readall(self):
        self.reads += 1
        return super().readall()


# ---------------------------------------------------------------- receiving


def test_sock_recv_ready_and_waiting(loop, tcp_pair):
    """sock_recv returns data already queued, waits for data sent later, honours nbytes,
    and returns b'' at EOF."""
    client, server = tcp_pair

    async def scenario():
        server.send(b"queued")
        first = await loop.sock_recv(client, 100)
        loop.call_later(0.02, server.send, b"later-data")
        second = await loop.sock_recv(client, 5)
        rest = await loop.sock_recv(client, 100)
        server.close()
        eof = await loop.sock_recv(client, 100)
        return first, second, rest, eof

    assert run(loop, scenario()) == (b"queued", b"later", b"-data", b"")


def test_sock_recv_into_ready_and_waiting(loop, tcp_pair):
    """sock_recv_into fills the buffer (or a memoryview slice of it) and returns the count,
    when data is queued and when it arrives later."""
    client, server = tcp_pair
    buffer = bytearray(10)

    async def scenario():
        server.send(b"abc")
        first = await loop.sock_recv_into(client, buffer)
        loop.call_later(0.02, server.send, b"defgh")
        second = await loop.sock_recv_into(client, memoryview(buffer)[3:])
        return first, second

    assert run(loop, scenario()) == (3, 5)
    assert buffer == b"abcdefgh\x00\x00"


def test_sock_recvfrom_ready_waiting_and_truncated(loop, udp_pair):
    """sock_recvfrom returns (datagram, sender address); a datagram longer than bufsize is
    truncated and its rest discarded, as recvfrom(2) does."""
    a, b = udp_pair

    async def scenario():
        b.sendto(b"first datagram", a.getsockname())
        first = await loop.sock_recvfrom(a, 100)
        loop.call_later(0.02, b.sendto, b"0123456789", a.getsockname())
        truncated = await loop.sock_recvfrom(a, 4)
        b.sendto(b"next", a.getsockname())
        following = await loop.sock_recvfrom(a, 100)
        return first, truncated, following

    sender = b.getsockname()
    assert run(loop, scenario()) == (
        (b"first datagram", sender),
        (b"0123", sender),
        (b"next", sender),
    )


def test_sock_recvfrom_into_nbytes(loop, udp_pair):
    """sock_recvfrom_into returns (count, address); nbytes=0 means the whole buffer, a
    smaller nbytes truncates the datagram."""
    a, b = udp_pair
    buffer = bytearray(8)

    async def scenario():
        b.sendto(b"12345678", a.getsockname())
        whole = await loop.sock_recvfrom_into(a, buffer)
        whole_data = bytes(buffer)
        loop.call_later(0.02, b.sendto, b"abcdefgh", a.getsockname())
        part = await loop.sock_recvfrom_into(a, buffer, 3)
        return whole, whole_data, part

    sender = b.getsockname()
    whole, whole_data, part = run(loop, scenario())
    assert whole == (8, sender)
    assert whole_data == b"12345678"
    assert part == (3, sender)
    assert buffer == b"abc45678"


def test_full_duplex_on_one_socket(loop, unix_pair):
    """A sock_sendall and a sock_recv waiting on the same socket at the same time (reader and
    writer on one descriptor) both complete with intact data."""
    a, b = unix_pair
    outgoing = PAYLOAD * 2
    incoming = PAYLOAD[::-1]

    async def scenario():
        send_task = loop.create_task(loop.sock_sendall(a, outgoing))
        recv_task = loop.create_task(recv_exactly(loop, a, len(incoming)))
        peer_recv = loop.create_task(recv_exactly(loop, b, len(outgoing)))
        await asyncio.sleep(0.01)
        await loop.sock_sendall(b, incoming)
        return await asyncio.gather(send_task, recv_task, peer_recv)

    sent, received, peer_received = run(loop, scenario())
    assert sent is None
    assert received == incoming
    assert peer_received == outgoing


# ---------------------------------------------------------------- sending


def test_sock_sendall_large_payload_integrity(loop, tcp_pair):
    """sock_sendall of 8 MiB (far beyond the socket buffers) returns None once everything is
    sent; the peer receives every byte in order."""
    client, server = tcp_pair
    data = os.urandom(1 << 20) * 8

    async def scenario():
        receiver = loop.create_task(recv_exactly(loop, server, len(data)))
        result = await loop.sock_sendall(client, data)
        return result, await receiver

    result, received = run(loop, scenario())
    assert result is None
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()


def test_sock_sendall_buffer_types_and_order(loop, tcp_pair):
    """bytes, bytearray and memoryview are all accepted; consecutive sock_sendall calls
    arrive in order; an empty buffer returns None at once."""
    client, server = tcp_pair
    parts = [b"one,", bytearray(b"two,"), memoryview(b"xthree,")[1:], b""]

    async def scenario():
        results = [await loop.sock_sendall(client, part) for part in parts]
        return results, await recv_exactly(loop, server, len(b"one,two,three,"))

    results, received = run(loop, scenario())
    assert results == [None, None, None, None]
    assert received == b"one,two,three,"


def test_sock_sendto_returns_count(loop, udp_pair):
    """sock_sendto returns the number of bytes sent; the datagram arrives from the sender's
    address."""
    a, b = udp_pair

    async def scenario():
        count = await loop.sock_sendto(a, b"datagram", b.getsockname())
        return count, await loop.sock_recvfrom(b, 100)

    assert run(loop, scenario()) == (8, (b"datagram", a.getsockname()))


# ---------------------------------------------------------------- connect and accept


def test_sock_connect_and_accept_tcp(loop, listener):
    """sock_accept waiting for a client returns (non-blocking conn, client address);
    sock_connect returns None; the connection carries data both ways."""

    async def scenario():
        accept_task = loop.create_task(loop.sock_accept(listener))
        await asyncio.sleep(0.01)
        assert not accept_task.done()
        client = socket.socket()
        client.setblocking(False)
        with client:
            assert await loop.sock_connect(client, listener.getsockname()) is None
            conn, address = await accept_task
            with conn:
                assert conn.gettimeout() == 0
                assert address == client.getsockname()
                assert conn.getpeername() == client.getsockname()
                await loop.sock_sendall(client, b"hello")
                assert await recv_exactly(loop, conn, 5) == b"hello"
                await loop.sock_sendall(conn, b"world")
                assert await recv_exactly(loop, client, 5) == b"world"

    run(loop, scenario())


def test_sock_accept_several_queued_connections(loop, listener):
    """Connections already queued are accepted one per sock_accept, each with its own
    client's address."""
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    try:

        async def scenario():
            accepted = [await loop.sock_accept(listener) for _ in clients]
            for conn, _ in accepted:
                assert conn.gettimeout() == 0
                conn.close()
            return sorted(address for _, address in accepted)

        assert run(loop, scenario()) == sorted(c.getsockname() for c in clients)
    finally:
        for client in clients:
            client.close()


def test_sock_connect_and_accept_unix(loop, short_tmp):
    """AF_UNIX: sock_connect to a path (no name resolution) and sock_accept."""
    path = str(short_tmp / "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    server.setblocking(False)
    client = socket.socket(socket.AF_UNIX)
    client.setblocking(False)

    async def scenario():
        accept_task = loop.create_task(loop.sock_accept(server))
        await loop.sock_connect(client, path)
        conn, _ = await accept_task
        with conn:
            await loop.sock_sendall(client, b"over unix")
            return await recv_exactly(loop, conn, 9)

    with server, client:
        assert run(loop, scenario()) == b"over unix"


def test_sock_connect_refused_tcp(loop, stock_loop):
    """A refused TCP connect raises ConnectionRefusedError with asyncio's message
    '[Errno 111] Connect call failed (host, port)'."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()  # closed again: nothing listens there

    results = []
    for current in (stock_loop, loop):
        with socket.socket() as sock:
            sock.setblocking(False)
            results.append(outcome(current, lambda s=sock, c=current: c.sock_connect(s, address)))
    expected = (
        "raised",
        ConnectionRefusedError,
        errno.ECONNREFUSED,
        f"[Errno {errno.ECONNREFUSED}] Connect call failed {address}",
    )
    assert results[0] == expected, "stock asyncio changed behaviour"
    assert results[1] == expected


@pytest.mark.parametrize("case", ["missing path", "path without listener"])
def test_sock_connect_unix_errors(loop, stock_loop, short_tmp, case):
    """AF_UNIX connect errors are raised as the socket reports them: FileNotFoundError for a
    missing path, ConnectionRefusedError for a socket file nobody listens on."""
    path = str(short_tmp / "gone.sock")
    if case == "path without listener":
        with socket.socket(socket.AF_UNIX) as bound:
            bound.bind(path)
    results = []
    for current in (stock_loop, loop):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.setblocking(False)
            results.append(outcome(current, lambda s=sock, c=current: c.sock_connect(s, path)))
    expected_type = FileNotFoundError if case == "missing path" else ConnectionRefusedError
    assert results[0][:2] == ("raised", expected_type), "stock asyncio changed behaviour"
    assert results[1] == results[0]


# ---------------------------------------------------------------- peer reset, closed socket


def test_sock_recv_peer_reset(loop, tcp_pair):
    """A RST from the peer: ConnectionResetError (ECONNRESET) whether it arrived before the
    call or while sock_recv was waiting."""
    client, server = tcp_pair

    async def waiting_recv():
        loop.call_later(0.02, reset_connection, server)
        return await loop.sock_recv(client, 100)

    with pytest.raises(ConnectionResetError) as waiting:
        run(loop, waiting_recv())
    assert waiting.value.errno == errno.ECONNRESET

    with socket.create_server(("127.0.0.1", 0)) as srv:
        other = socket.create_connection(srv.getsockname())
        peer, _ = srv.accept()
    other.setblocking(False)
    with other:
        reset_connection(peer)
        with pytest.raises(ConnectionResetError) as ready:
            run(loop, loop.sock_recv_into(other, bytearray(10)))
        assert ready.value.errno == errno.ECONNRESET


def test_sock_sendall_peer_reset(loop, tcp_pair):
    """A RST while sock_sendall waits for buffer space: ConnectionResetError; a later send on
    the dead connection: BrokenPipeError."""
    client, server = tcp_pair

    async def scenario():
        loop.call_later(0.05, reset_connection, server)
        await loop.sock_sendall(client, b"x" * (64 << 20))

    with pytest.raises(ConnectionResetError) as reset:
        run(loop, scenario(), timeout=10)
    assert reset.value.errno == errno.ECONNRESET
    with pytest.raises(BrokenPipeError):
        run(loop, loop.sock_sendall(client, b"more"))
    assert loop.remove_writer(client) is False


#: Every sock_* call on a closed socket: name -> (socket family/type, call).
CLOSED_SOCKET_CALLS: dict[str, tuple[int, Callable]] = {
    "sock_recv": (socket.SOCK_STREAM, lambda loop, s: loop.sock_recv(s, 10)),
    "sock_recv_into": (socket.SOCK_STREAM, lambda loop, s: loop.sock_recv_into(s, bytearray(4))),
    "sock_recvfrom": (socket.SOCK_DGRAM, lambda loop, s: loop.sock_recvfrom(s, 10)),
    "sock_recvfrom_into": (
        socket.SOCK_DGRAM,
        lambda loop, s: loop.sock_recvfrom_into(s, bytearray(4)),
    ),
    "sock_sendall": (socket.SOCK_STREAM, lambda loop, s: loop.sock_sendall(s, b"x")),
    "sock_sendto": (socket.SOCK_DGRAM, lambda loop, s: loop.sock_sendto(s, b"x", ("127.0.0.1", 9))),
    "sock_connect": (socket.SOCK_STREAM, lambda loop, s: loop.sock_connect(s, ("127.0.0.1", 9))),
    "sock_accept": (socket.SOCK_STREAM, lambda loop, s: loop.sock_accept(s)),
}


@pytest.mark.parametrize("method", list(CLOSED_SOCKET_CALLS))
def test_closed_socket_raises_ebadf(loop, stock_loop, method):
    """Any sock_* call on a closed socket: OSError EBADF, as with asyncio (and nothing is left
    registered)."""
    kind, call = CLOSED_SOCKET_CALLS[method]
    results = []
    for current in (stock_loop, loop):
        sock = socket.socket(socket.AF_INET, kind)
        sock.setblocking(False)
        sock.close()
        results.append(outcome(current, lambda c=current, s=sock: call(c, s)))
    assert results[0] == ("raised", OSError, errno.EBADF, "[Errno 9] Bad file descriptor")
    assert results[1] == results[0]


def test_sock_sendfile_closed_socket(loop, stock_loop, tmp_path):
    """sock_sendfile on a closed socket ends, as with asyncio, in OSError EBADF."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"data")
    results = []
    for current in (stock_loop, loop):
        sock = socket.socket()
        sock.close()
        with open(path, "rb") as f:
            results.append(outcome(current, lambda c=current, s=sock, f=f: c.sock_sendfile(s, f)))
    assert results[0][:3] == ("raised", OSError, errno.EBADF), "stock asyncio changed behaviour"
    assert results[1][:3] == results[0][:3]


# ---------------------------------------------------------------- argument checks


def _ssl_socket() -> ssl.SSLSocket:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(socket.socket(), do_handshake_on_connect=False)


#: One call per sock_* method, given the loop and a socket; none may reach the socket when
#: asyncio's checks refuse it.
EVERY_SOCK_METHOD: dict[str, Callable] = {
    "sock_recv": lambda loop, s: loop.sock_recv(s, 10),
    "sock_recv_into": lambda loop, s: loop.sock_recv_into(s, bytearray(4)),
    "sock_recvfrom": lambda loop, s: loop.sock_recvfrom(s, 10),
    "sock_recvfrom_into": lambda loop, s: loop.sock_recvfrom_into(s, bytearray(4)),
    "sock_sendall": lambda loop, s: loop.sock_sendall(s, b"x"),
    "sock_sendto": lambda loop, s: loop.sock_sendto(s, b"x", ("127.0.0.1", 9)),
    "sock_connect": lambda loop, s: loop.sock_connect(s, ("127.0.0.1", 9)),
    "sock_accept": lambda loop, s: loop.sock_accept(s),
    "sock_sendfile": lambda loop, s: loop.sock_sendfile(s, io.BytesIO(b"x")),
}


@pytest.mark.parametrize("timeout", [None, 1.0], ids=["blocking", "with-timeout"])
@pytest.mark.parametrize("method", list(EVERY_SOCK_METHOD))
def test_blocking_socket_refused_in_debug_mode(loop, stock_loop, method, timeout):
    """In debug mode every sock_* method refuses a socket that is not non-blocking (blocking
    or with a timeout): ValueError('the socket must be non-blocking')."""
    call = EVERY_SOCK_METHOD[method]
    results = []
    for current in (stock_loop, loop):
        current.set_debug(True)
        with socket.socket() as sock:
            sock.settimeout(timeout)
            results.append(outcome(current, lambda c=current, s=sock: call(c, s)))
    assert results[0] == ("raised", ValueError, None, "the socket must be non-blocking")
    assert results[1] == results[0]


def test_blocking_socket_accepted_outside_debug_mode(loop, tcp_pair):
    """Outside debug mode CPython 3.11 does not check the blocking flag: with data ready,
    sock_recv on a blocking socket returns it, and sock_sendall of a small buffer completes."""
    client, server = tcp_pair
    client.setblocking(True)
    server.send(b"ready")
    assert run(loop, loop.sock_recv(client, 100)) == b"ready"
    assert run(loop, loop.sock_sendall(client, b"small")) is None
    assert run(loop, recv_exactly(loop, server, 5)) == b"small"


@pytest.mark.parametrize("method", list(EVERY_SOCK_METHOD))
def test_ssl_socket_refused(loop, stock_loop, method):
    """Every sock_* method refuses an ssl.SSLSocket: TypeError('Socket cannot be of type
    SSLSocket')."""
    call = EVERY_SOCK_METHOD[method]
    results = []
    for current in (stock_loop, loop):
        with _ssl_socket() as sock:
            results.append(outcome(current, lambda c=current, s=sock: call(c, s)))
    assert results[0] == ("raised", TypeError, None, "Socket cannot be of type SSLSocket")
    assert results[1] == results[0]


#: Calls whose errors come from the socket module itself: name -> call(loop, udp socket).
SOCKET_MODULE_ERRORS: dict[str, Callable] = {
    "sock_recv negative nbytes": lambda loop, s: loop.sock_recv(s, -1),
    "sock_recv str nbytes": lambda loop, s: loop.sock_recv(s, "10"),
    "sock_recv huge nbytes": lambda loop, s: loop.sock_recv(s, 1 << 64),
    "sock_recv_into str buffer": lambda loop, s: loop.sock_recv_into(s, "buffer"),
    "sock_recvfrom_into negative nbytes": (
        lambda loop, s: loop.sock_recvfrom_into(s, bytearray(4), -1)
    ),
    "sock_recvfrom negative bufsize": lambda loop, s: loop.sock_recvfrom(s, -1),
    "sock_recv_into read-only buffer": lambda loop, s: loop.sock_recv_into(s, b"immutable"),
    "sock_recvfrom_into nbytes too large": (
        lambda loop, s: loop.sock_recvfrom_into(s, bytearray(4), 10)
    ),
    "sock_sendall str": lambda loop, s: loop.sock_sendall(s, "text"),
    "sock_sendto bad address": lambda loop, s: loop.sock_sendto(s, b"x", "not an address"),
}


@pytest.mark.parametrize("case", list(SOCKET_MODULE_ERRORS))
def test_socket_module_errors_pass_through(loop, stock_loop, udp_pair, case):
    """Errors the socket call itself raises (bad sizes, buffers, addresses) reach the caller
    with the socket module's exception type and message."""
    call = SOCKET_MODULE_ERRORS[case]
    sock = udp_pair[0]
    expected = outcome(stock_loop, lambda: call(stock_loop, sock))
    assert expected[0] == "raised", "stock asyncio changed behaviour"
    assert outcome(loop, lambda: call(loop, sock)) == expected


# ---------------------------------------------------------------- cancellation


#: Waiting read operations: name -> call(loop, socket) on the UDP socket a of udp_pair.
READ_OPERATIONS: dict[str, Callable] = {
    "sock_recv": lambda loop, s: loop.sock_recv(s, 100),
    "sock_recv_into": lambda loop, s: loop.sock_recv_into(s, bytearray(100)),
    "sock_recvfrom": lambda loop, s: loop.sock_recvfrom(s, 100),
    "sock_recvfrom_into": lambda loop, s: loop.sock_recvfrom_into(s, bytearray(100)),
}


def _result_data(result) -> bytes | int:
    """The data part of a read result: bytes for recv, count for recv_into, ... ."""
    return result[0] if isinstance(result, tuple) else result


@pytest.mark.parametrize("how", ["task.cancel", "wait_for timeout"])
@pytest.mark.parametrize("method", list(READ_OPERATIONS))
def test_cancelled_read_unregisters_and_socket_stays_usable(loop, udp_pair, method, how):
    """Cancelling a waiting read removes its reader (remove_reader then returns False); the
    next read on the socket gets the next data."""
    a, b = udp_pair
    call = READ_OPERATIONS[method]

    async def scenario():
        if how == "task.cancel":
            task = loop.create_task(call(loop, a))
            await asyncio.sleep(0.01)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(call(loop, a), 0.02)
        registered_after_cancel = loop.remove_reader(a)
        b.sendto(b"after cancel", a.getsockname())
        result = await call(loop, a)
        return registered_after_cancel, _result_data(result), loop.remove_reader(a)

    registered_after_cancel, data, registered_after_read = run(loop, scenario())
    assert registered_after_cancel is False
    assert data in (b"after cancel", len(b"after cancel"))
    assert registered_after_read is False


def test_cancelled_accept_unregisters_and_socket_stays_usable(loop, listener):
    """Cancelling a waiting sock_accept removes its reader; a later sock_accept gets the next
    connection."""

    async def scenario():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_accept(listener), 0.02)
        assert loop.remove_reader(listener) is False
        with socket.create_connection(listener.getsockname()) as client:
            conn, address = await loop.sock_accept(listener)
            conn.close()
            return address == client.getsockname()

    assert run(loop, scenario()) is True


def test_cancelled_sendall_unregisters_and_socket_stays_usable(loop, unix_pair):
    """Cancelling a sock_sendall waiting for buffer space removes its writer; after the peer
    drains what was sent, a later sock_sendall goes through (its data last in the stream)."""
    a, b = unix_pair

    async def scenario():
        task = loop.create_task(loop.sock_sendall(a, b"x" * (4 << 20)))
        await asyncio.sleep(0.02)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.remove_writer(a) is False
        reader = loop.create_task(drain(loop, b, b"END"))
        await loop.sock_sendall(a, b"END")
        return await reader

    received = run(loop, scenario())
    assert received.endswith(b"xEND")
    assert set(received[:-3]) == {ord("x")}


class StalledSendtoSocket(socket.socket):
    """A UDP socket whose sendto reports a full buffer (BlockingIOError) while ``stalled``,
    so that sock_sendto has to wait (a real UDP send on loopback never does)."""

    stalled = True

    def sendto(self, *args):
        if self.stalled:
            raise BlockingIOError(errno.EAGAIN, "stalled for the test")
        return super().sendto(*args)


def test_sock_sendto_waits_then_sends(loop, udp_pair):
    """When sendto would block, sock_sendto waits for writability and retries; the datagram
    then arrives once."""
    receiver = udp_pair[1]
    with StalledSendtoSocket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)

        async def scenario():
            task = loop.create_task(loop.sock_sendto(sock, b"late", receiver.getsockname()))
            await asyncio.sleep(0.01)
            assert not task.done()
            sock.stalled = False
            count = await task
            return count, await loop.sock_recvfrom(receiver, 100)

        count, (data, address) = run(loop, scenario())
        assert (count, data, address) == (4, b"late", sock.getsockname())
        assert loop.remove_writer(sock) is False


def test_cancelled_sendto_unregisters_and_socket_stays_usable(loop, udp_pair):
    """Cancelling a waiting sock_sendto removes its writer; once sendto works again, a later
    sock_sendto delivers its datagram (and only that one)."""
    receiver = udp_pair[1]
    with StalledSendtoSocket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)

        async def scenario():
            task = loop.create_task(loop.sock_sendto(sock, b"never", receiver.getsockname()))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert loop.remove_writer(sock) is False
            sock.stalled = False
            await loop.sock_sendto(sock, b"after cancel", receiver.getsockname())
            return await loop.sock_recvfrom(receiver, 100)

        assert run(loop, scenario()) == (b"after cancel", sock.getsockname())
        with pytest.raises(BlockingIOError):
            receiver.recvfrom(100)


def test_cancelled_connect_unregisters(loop):
    """Cancelling a sock_connect still in progress (the listener's queue is full, so the
    handshake does not complete) removes its writer."""
    with socket.socket() as full_listener, socket.socket() as first:
        full_listener.bind(("127.0.0.1", 0))
        full_listener.listen(0)
        first.connect(full_listener.getsockname())  # fills the accept queue
        pending = socket.socket()
        pending.setblocking(False)

        async def scenario():
            task = loop.create_task(loop.sock_connect(pending, full_listener.getsockname()))
            await asyncio.sleep(0.05)
            assert not task.done(), "the connect was expected to stay in progress"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return loop.remove_writer(pending)

        with pending:
            assert run(loop, scenario()) is False


def test_cancelled_sendfile_unregisters_and_socket_stays_usable(loop, unix_pair, tmp_path):
    """Cancelling a sock_sendfile waiting for buffer space removes its writer; the socket
    then works for sock_sendall."""
    a, b = unix_pair
    path = tmp_path / "big.bin"
    path.write_bytes(b"y" * (4 << 20))

    async def scenario():
        with open(path, "rb") as f:
            task = loop.create_task(loop.sock_sendfile(a, f))
            await asyncio.sleep(0.02)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert loop.remove_writer(a) is False
        reader = loop.create_task(drain(loop, b, b"END"))
        await loop.sock_sendall(a, b"END")
        return await reader

    received = run(loop, scenario())
    assert received.endswith(b"yEND")


# ---------------------------------------------------------------- sock_sendfile


def test_sock_sendfile_whole_file_zero_copy(loop, tcp_pair, counting_executor, tmp_path):
    """A regular file is sent whole with sendfile(2): the result is its size, the peer gets
    every byte, the file position ends after the data, the file object is never read through
    Python and no executor job runs."""
    client, server = tcp_pair
    path = tmp_path / "payload.bin"
    path.write_bytes(PAYLOAD)
    with CountingFileIO(path, "r") as f:

        async def scenario():
            receiver = loop.create_task(recv_exactly(loop, server, len(PAYLOAD)))
            sent = await loop.sock_sendfile(client, f)
            return sent, await receiver

        sent, received = run(loop, scenario())
        assert sent == len(PAYLOAD)
        assert received == PAYLOAD
        assert f.tell() == len(PAYLOAD)
        assert f.reads == 0
    assert counting_executor.submitted == []


@pytest.mark.parametrize(
    ("offset", "count", "expected_slice"),
    [
        (1000, 5000, slice(1000, 6000)),
        (len(PAYLOAD) - 100, 1000, slice(len(PAYLOAD) - 100, None)),
        (0, None, slice(None)),
        (12345, None, slice(12345, None)),
    ],
    ids=["offset+count", "count past EOF", "whole", "offset only"],
)
def test_sock_sendfile_offset_and_count(
    loop, unix_pair, payload_file, offset, count, expected_slice
):
    """offset/count select the bytes sent; the result is the number sent and the file
    position ends right after them."""
    a, b = unix_pair
    expected = PAYLOAD[expected_slice]

    async def scenario():
        receiver = loop.create_task(recv_exactly(loop, b, len(expected)))
        sent = await loop.sock_sendfile(a, payload_file, offset, count)
        return sent, await receiver

    sent, received = run(loop, scenario())
    assert sent == len(expected)
    assert received == expected
    assert payload_file.tell() == offset + len(expected)


def test_sock_sendfile_empty_file(loop, tcp_pair, tmp_path):
    """An empty file: 0 bytes sent, nothing arrives, the position stays 0."""
    client, server = tcp_pair
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with open(path, "rb") as f:
        assert run(loop, loop.sock_sendfile(client, f)) == 0
        assert f.tell() == 0
    client.shutdown(socket.SHUT_WR)
    assert run(loop, recv_to_eof(loop, server)) == b""


def test_sock_sendfile_fallback_for_non_regular_file(loop, tcp_pair, counting_executor):
    """A file object without a descriptor (BytesIO) is sent by asyncio's fallback: read in
    the default executor, written with sock_sendall; position updated."""
    client, server = tcp_pair
    source = io.BytesIO(PAYLOAD)

    async def scenario():
        receiver = loop.create_task(recv_exactly(loop, server, len(PAYLOAD) - 10))
        sent = await loop.sock_sendfile(client, source, 10)
        return sent, await receiver

    sent, received = run(loop, scenario())
    assert sent == len(PAYLOAD) - 10
    assert received == PAYLOAD[10:]
    assert source.tell() == len(PAYLOAD)
    assert counting_executor.submitted, "the fallback reads the file in the default executor"


def test_sock_sendfile_without_fallback(loop, stock_loop, tcp_pair):
    """fallback=False with a file sendfile(2) cannot send: SendfileNotAvailableError with
    asyncio's message; nothing is sent."""
    client, _ = tcp_pair
    results = [
        outcome(
            current, lambda c=current: c.sock_sendfile(client, io.BytesIO(b"x"), fallback=False)
        )
        for current in (stock_loop, loop)
    ]
    assert results[0][:2] == ("raised", asyncio.SendfileNotAvailableError)
    assert results[1] == results[0]


#: Bad sock_sendfile arguments: name -> keyword arguments replacing the defaults.
SENDFILE_BAD_ARGUMENTS = {
    "text file": {"text": True},
    "datagram socket": {"sock_type": socket.SOCK_DGRAM},
    "count 0": {"count": 0},
    "count negative": {"count": -1},
    "count str": {"count": "1"},
    "count float": {"count": 1.5},
    "offset negative": {"offset": -1},
    "offset str": {"offset": "0"},
    "offset float": {"offset": 0.5},
}


@pytest.mark.parametrize("case", list(SENDFILE_BAD_ARGUMENTS))
def test_sock_sendfile_argument_checks(loop, stock_loop, tmp_path, case):
    """asyncio's sock_sendfile checks: binary file, SOCK_STREAM socket, positive int count,
    non-negative int offset; same exception types and messages."""
    options = SENDFILE_BAD_ARGUMENTS[case]
    path = tmp_path / "f.bin"
    path.write_bytes(b"content")
    results = []
    for current in (stock_loop, loop):
        with (
            socket.socket(socket.AF_INET, options.get("sock_type", socket.SOCK_STREAM)) as sock,
            open(path, "r" if options.get("text") else "rb") as f,
        ):
            sock.setblocking(False)
            results.append(
                outcome(
                    current,
                    lambda c=current, s=sock, f=f: c.sock_sendfile(
                        s, f, options.get("offset", 0), options.get("count")
                    ),
                )
            )
    assert results[0][0] == "raised" and results[0][1] in (ValueError, TypeError)
    assert results[1] == results[0]
