"""TLS over the loop's transports: ``ssl=`` on connections and servers, ``start_tls``,
sendfile through TLS, verification failures, handshake timeout. Certificates are CPython's
own test certificates (``test.test_asyncio.utils``: ``keycert3.pem`` for ``localhost``,
signed by ``pycacert.pem``). Every test runs on both loops (``FERROLOOP_TEST_LOOP=asyncio``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import sys
import tempfile

import pytest
from support import run

try:
    from test.test_asyncio import utils as cpython_test_utils
except ImportError:  # pragma: no cover - an interpreter without its test package
    cpython_test_utils = None

pytestmark = pytest.mark.skipif(
    cpython_test_utils is None, reason="needs CPython's test package for its certificates"
)

TIMEOUT = 10


def server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cpython_test_utils.SIGNED_CERTFILE)
    return context


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cpython_test_utils.SIGNING_CA)
    return context


#: Server-side handlers still running (so tests can wait for them before the loop closes:
#: on 3.11, Server.wait_closed does not wait for connections).
RUNNING_HANDLERS: set = set()


async def echo_lines(reader, writer):
    task = asyncio.current_task()
    RUNNING_HANDLERS.add(task)
    try:
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()
        RUNNING_HANDLERS.discard(task)


async def close_server(server):
    """Closes ``server`` and waits (up to 2 s) for its connection handlers to finish."""
    server.close()
    await server.wait_closed()
    for _ in range(400):
        if not RUNNING_HANDLERS:
            return
        await asyncio.sleep(0.005)


def test_tls_echo_with_verified_certificate(loop):
    async def main():
        server = await asyncio.start_server(echo_lines, "127.0.0.1", 0, ssl=server_context())
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
        )
        writer.write(b"hello\n")
        answer = await reader.readline()
        info = (
            writer.get_extra_info("peercert")["subject"],
            isinstance(writer.get_extra_info("ssl_object"), ssl.SSLObject),
            writer.get_extra_info("peername")[0],
            isinstance(writer.transport, asyncio.Transport),
        )
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return answer, info

    answer, (subject, is_ssl_object, peer_host, is_transport) = run(loop, main(), TIMEOUT)
    assert answer == b"HELLO\n"
    assert (("commonName", "localhost"),) in subject
    assert is_ssl_object
    assert peer_host == "127.0.0.1"
    assert is_transport


def test_tls_echo_through_a_program_sslobject_class(loop):
    """An ``SSLContext.sslobject_class`` of the program's own gets every record through its
    own ``read``/``write`` (ferroloop hands it memoryviews, not the buffers it lends the
    ``_ssl`` C methods), records of 1 KiB and of 64 KiB alike."""
    calls = {"read": 0, "write": 0}

    class CountingSSLObject(ssl.SSLObject):
        def read(self, len=1024, buffer=None):
            calls["read"] += 1
            return super().read(len, buffer)

        def write(self, data):
            calls["write"] += 1
            return super().write(data)

    async def main():
        context = server_context()
        context.sslobject_class = CountingSSLObject
        server = await asyncio.start_server(echo_lines, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
        )
        answers = []
        for size in (1024, 65536):
            writer.write(b"x" * size + b"\n")
            answers.append(await reader.readline())
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return answers

    answers = run(loop, main(), TIMEOUT)
    assert answers == [b"X" * 1024 + b"\n", b"X" * 65536 + b"\n"]
    assert calls["read"] >= 2
    assert calls["write"] >= 2


def test_tls_over_unix_socket(loop):
    async def main():
        path = os.path.join(tempfile.mkdtemp(), "tls.sock")
        server = await asyncio.start_unix_server(echo_lines, path, ssl=server_context())
        reader, writer = await asyncio.open_unix_connection(
            path, ssl=client_context(), server_hostname="localhost"
        )
        writer.write(b"unix\n")
        answer = await reader.readline()
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return answer

    assert run(loop, main(), TIMEOUT) == b"UNIX\n"


def test_failed_verification_raises_and_server_keeps_serving(loop):
    async def main():
        server = await asyncio.start_server(echo_lines, "127.0.0.1", 0, ssl=server_context())
        port = server.sockets[0].getsockname()[1]
        untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # knows no CA
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=untrusting, server_hostname="localhost"
            )
        # ssl=True: asyncio's default context (system CAs), server_hostname from the host.
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("localhost", port, ssl=True)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
        )
        writer.write(b"still here\n")
        answer = await reader.readline()
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return answer

    assert run(loop, main(), TIMEOUT) == b"STILL HERE\n"


def test_large_transfer_with_flow_control(loop):
    payload = os.urandom(3 * 1024 * 1024 + 17)

    async def sink(reader, writer):
        digest = hashlib.sha256()
        received = 0
        while received < len(payload):
            chunk = await reader.read(65536)
            if not chunk:
                break
            digest.update(chunk)
            received += len(chunk)
        writer.write(digest.hexdigest().encode() + b"\n")
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(sink, "127.0.0.1", 0, ssl=server_context())
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
        )
        for start in range(0, len(payload), 100_000):
            writer.write(payload[start : start + 100_000])
            await writer.drain()
        answer = await reader.readline()
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return answer

    assert run(loop, main(), TIMEOUT).strip().decode() == hashlib.sha256(payload).hexdigest()


def test_start_tls_upgrades_a_plain_connection(loop):
    requests = []

    async def upgrading_server(reader, writer):
        # A start_server handler is a task nobody awaits: record, assert after the run.
        requests.append(await reader.readline())
        writer.write(b"OK\n")
        await writer.drain()
        await writer.start_tls(server_context())
        await echo_lines(reader, writer)

    async def main():
        server = await asyncio.start_server(upgrading_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"OK\n"
        await writer.start_tls(client_context(), server_hostname="localhost")
        writer.write(b"secret\n")
        answer = await reader.readline()
        cipher = writer.get_extra_info("cipher")
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return answer, cipher

    answer, cipher = run(loop, main(), TIMEOUT)
    assert requests == [b"STARTTLS\n"]
    assert answer == b"SECRET\n"
    assert cipher is not None


@pytest.mark.skipif(
    sys.version_info < (3, 14), reason="asyncio hands the reader's buffer over from 3.14"
)
def test_server_start_tls_with_the_client_hello_already_buffered(loop):
    """3.14+: a server's ``StreamWriter.start_tls()`` after its reader has already buffered
    the client's TLS hello hands those bytes to the handshake (the upgrade completes)."""
    events = []

    async def upgrading_server(reader, writer):
        while not reader._buffer:  # wait until the client's hello sits in the reader
            await asyncio.sleep(0.005)
        events.append("hello buffered")
        await writer.start_tls(server_context())
        events.append(await reader.readline())
        writer.write(b"pong\n")
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(upgrading_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await writer.start_tls(client_context(), server_hostname="localhost")
        writer.write(b"ping\n")
        answer = await reader.readline()
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return answer

    assert run(loop, main(), TIMEOUT) == b"pong\n"
    assert events == ["hello buffered", b"ping\n"]


@pytest.mark.skipif(
    sys.version_info < (3, 14), reason="asyncio's start_tls leaves a reference cycle before 3.14"
)
def test_failed_start_tls_leaves_no_reference_cycle(loop):
    """3.14+: after a start_tls() whose certificate check fails, the plain transport is freed
    by reference counting alone (no cycle through the failure's traceback)."""
    import gc
    import weakref

    async def tls_server(reader, writer):
        try:
            await writer.start_tls(server_context())
        except (OSError, ssl.SSLError):
            pass
        writer.close()

    async def main():
        server = await asyncio.start_server(tls_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, protocol = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        ref = weakref.ref(transport)
        untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # knows no CA
        failed = False
        try:
            await loop.start_tls(transport, protocol, untrusting, server_hostname="localhost")
        except ssl.SSLCertVerificationError:
            failed = True
        del transport, protocol
        await asyncio.sleep(0.05)  # let the closing transport report connection_lost
        alive = ref() is not None
        await close_server(server)
        return failed, alive

    gc.collect()
    gc.disable()
    try:
        assert run(loop, main(), TIMEOUT) == (True, False)
    finally:
        gc.enable()


def test_start_tls_argument_checks(loop):
    async def main():
        server = await asyncio.start_server(echo_lines, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        with pytest.raises(TypeError, match="sslcontext is expected to be an instance"):
            await loop.start_tls(transport, transport.get_protocol(), object())
        transport.close()
        await close_server(server)

    run(loop, main(), TIMEOUT)


def test_sendfile_through_a_tls_transport(loop):
    content = os.urandom(3_000_000)  # well past the high-water mark: sendfile must wait
    with tempfile.NamedTemporaryFile() as file:
        file.write(content)
        file.flush()

        async def collect(reader, writer):
            await asyncio.sleep(0.3)  # a slow reader: the sender's buffers fill up
            data = await reader.readexactly(len(content))
            writer.write(hashlib.sha256(data).hexdigest().encode())
            await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_server(collect, "127.0.0.1", 0, ssl=server_context())
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
            )
            with open(file.name, "rb") as source:
                with pytest.raises(RuntimeError, match="fallback is disabled"):
                    await loop.sendfile(writer.transport, source, fallback=False)
                sent = await loop.sendfile(writer.transport, source)
            answer = await reader.read()
            writer.close()
            server.close()
            await server.wait_closed()
            return sent, answer

        sent, answer = run(loop, main(), TIMEOUT)
    assert sent == len(content)
    assert answer == hashlib.sha256(content).hexdigest().encode()


def test_handshake_timeout_closes_a_silent_client(loop):
    async def main():
        server = await asyncio.start_server(
            echo_lines, "127.0.0.1", 0, ssl=server_context(), ssl_handshake_timeout=0.2
        )
        port = server.sockets[0].getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        client.setblocking(False)
        started = loop.time()
        try:
            data = await asyncio.wait_for(loop.sock_recv(client, 1024), 5)
        except ConnectionResetError:
            data = b""
        waited = loop.time() - started
        client.close()
        await close_server(server)
        return data, waited

    data, waited = run(loop, main(), TIMEOUT)
    assert data == b""
    assert 0.1 < waited < 3


class _CountingServer(asyncio.Protocol):
    """Server side of the protocol-level TLS test: hashes what arrives, pauses its reading
    for a moment after the first chunk, records eof and connection_lost."""

    def __init__(self, done: asyncio.Future, sender_paused: asyncio.Event) -> None:
        self.done = done
        self.sender_paused = sender_paused
        self.digest = hashlib.sha256()
        self.received = 0
        self.events: list[str] = []
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.events.append("made")

    def _take(self, data) -> None:
        if self.received == 0:
            self.transport.pause_reading()
            self.events.append("paused")
            asyncio.get_running_loop().call_later(0.05, self._resume)
        self.digest.update(data)
        self.received += len(data)

    def _resume(self, waited: float = 0.0) -> None:
        # Stay paused until the sender's buffers are full (it got pause_writing), at most 5 s.
        if not self.sender_paused.is_set() and waited < 5.0:
            asyncio.get_running_loop().call_later(0.01, self._resume, waited + 0.01)
            return
        self.events.append("resumed")
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._take(data)

    def eof_received(self) -> None:
        self.events.append("eof")

    def connection_lost(self, exc) -> None:
        self.events.append("lost")
        if not self.done.done():
            self.done.set_result(None)


class _CountingBufferedServer(_CountingServer, asyncio.BufferedProtocol):
    """The same, as a BufferedProtocol (TLS then reads into the app's buffer)."""

    def get_buffer(self, sizehint: int):
        self._buffer = bytearray(8192)
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._take(bytes(self._buffer[:nbytes]))


class _PausingClient(asyncio.Protocol):
    def __init__(self, paused: asyncio.Event) -> None:
        self.events: list[str] = []
        self.paused = paused
        self.writable = asyncio.Event()
        self.writable.set()

    def pause_writing(self) -> None:
        self.events.append("pause_writing")
        self.paused.set()
        self.writable.clear()

    def resume_writing(self) -> None:
        self.events.append("resume_writing")
        self.writable.set()


@pytest.mark.parametrize("server_class", [_CountingServer, _CountingBufferedServer])
def test_protocol_level_tls_flow_control_pause_and_close_notify(loop, server_class):
    """Protocol-level TLS: the app's write flow control (pause/resume_writing), the receiver
    pausing its reading in the middle, bytes-like arguments of every kind, an empty write, a
    wrong type, and the client's close (close_notify) reaching the server as eof_received."""
    # 6 MiB: ~90 times the 64 KiB high-water mark, so the writer pauses and resumes many
    # times; 24 MiB took over 5 s on a loaded 2-core CI machine.
    payload = os.urandom(6 * 1024 * 1024 + 5)

    async def main():
        done = loop.create_future()
        client_paused = asyncio.Event()
        server_protocol = server_class(done, client_paused)
        server = await loop.create_server(
            lambda: server_protocol, "127.0.0.1", 0, ssl=server_context()
        )
        port = server.sockets[0].getsockname()[1]
        transport, client = await loop.create_connection(
            lambda: _PausingClient(client_paused),
            "127.0.0.1",
            port,
            ssl=client_context(),
            server_hostname="localhost",
        )
        transport.set_write_buffer_limits(high=64 * 1024)
        type_error = None
        try:
            transport.write("text")
        except TypeError as exc:
            type_error = str(exc)
        transport.write(b"")
        view = memoryview(payload)
        for index, start in enumerate(range(0, len(payload), 96 * 1024)):
            chunk = view[start : start + 96 * 1024]
            transport.write(
                bytes(chunk) if index % 3 == 0 else chunk if index % 3 == 1 else bytearray(chunk)
            )
            await client.writable.wait()
        transport.close()
        await asyncio.wait_for(done, TIMEOUT)
        server.close()
        await server.wait_closed()
        return server_protocol, client, type_error

    server_protocol, client, type_error = run(loop, main(), 4 * TIMEOUT)
    assert type_error == "data: expecting a bytes-like instance, got str"
    assert server_protocol.received == len(payload)
    assert server_protocol.digest.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert server_protocol.events == ["made", "paused", "resumed", "eof", "lost"]
    assert "pause_writing" in client.events
    assert client.events[-1] == "resume_writing"


class _Collector(asyncio.Protocol):
    """Records what arrives; the first protocol of the set_protocol test hands the transport
    to ``successor`` once its first message is in."""

    def __init__(self, got: asyncio.Queue, successor=None) -> None:
        self.got = got
        self.successor = successor
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got.put_nowait((type(self).__name__, bytes(data)))
        if self.successor is not None:
            self.transport.set_protocol(self.successor)
            self.successor.transport = self.transport


class _BufferedCollector(_Collector, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint: int):
        self._buffer = bytearray(4096)
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.got.put_nowait((type(self).__name__, bytes(self._buffer[:nbytes])))

    def data_received(self, data: bytes) -> None:  # a BufferedProtocol never gets this
        self.got.put_nowait(("data_received", bytes(data)))


class _EchoServer(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def test_set_protocol_on_a_tls_transport_mid_stream(loop):
    """The app transport's set_protocol() while wrapped: later records go to the new
    protocol (a BufferedProtocol here, so the read path switches kind), writes, the buffer
    size and the transport's state queries stay asyncio's; a write after close is ignored."""

    async def main():
        server = await loop.create_server(_EchoServer, "127.0.0.1", 0, ssl=server_context())
        port = server.sockets[0].getsockname()[1]
        got: asyncio.Queue = asyncio.Queue()
        second = _BufferedCollector(got)
        transport, _ = await loop.create_connection(
            lambda: _Collector(got, successor=second),
            "127.0.0.1",
            port,
            ssl=client_context(),
            server_hostname="localhost",
        )
        results = []
        for message in (b"first", b"second", b"third"):
            transport.write(message)
            results.append(await asyncio.wait_for(got.get(), TIMEOUT))
        state = (transport.is_closing(), transport.get_write_buffer_size())
        transport.close()
        transport.write(b"after close")
        closing = transport.is_closing()
        await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()
        return results, state, closing

    results, state, closing = run(loop, main(), 2 * TIMEOUT)
    assert results == [
        ("_Collector", b"first"),
        ("_BufferedCollector", b"second"),
        ("_BufferedCollector", b"third"),
    ]
    assert state == (False, 0)
    assert closing is True


def test_write_patched_on_the_socket_transport_instance_sees_the_records(loop):
    """A ``write`` set on the underlying transport object (``mock.patch.object``, as CPython's
    own TLS tests do) is what the TLS layer writes its records through, as on stock asyncio."""
    from unittest import mock

    async def main():
        server = await asyncio.start_server(echo_lines, "127.0.0.1", 0, ssl=server_context())
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
        )
        writer.write(b"one\n")
        first = await reader.readline()
        socket_transport = writer.transport._ssl_protocol._transport
        with mock.patch.object(socket_transport, "write", wraps=socket_transport.write) as patched:
            writer.write(b"two\n")
            second = await reader.readline()
            records = [bytes(call.args[0]) for call in patched.call_args_list]
        writer.close()
        await writer.wait_closed()
        await close_server(server)
        return first, second, records

    first, second, records = run(loop, main(), TIMEOUT)
    assert (first, second) == (b"ONE\n", b"TWO\n")
    # One TLS application-data record (content type 23) went through the patched write.
    assert records and records[0][:1] == b"\x17"
