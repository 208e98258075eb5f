"""TLS glue: ``ssl=`` on connections and servers, and ``loop.start_tls``.

TLS runs the standard library's ``asyncio.sslproto.SSLProtocol`` (TLS through
``ssl.MemoryBIO``, a BufferedProtocol) over the native stream transport, as asyncio's own
loops do: the protocol the application sees gets ``SSLProtocol``'s app transport, with
asyncio's handshake/shutdown state machine, timeouts and errors. Checks and messages are
asyncio's. Our subclass hands the per-record data path of a wrapped connection (socket bytes
into the incoming BIO, ``SSLObject.read`` into the app protocol, app writes through
``SSLObject.write`` to the socket, and the flow-control checks) to the native ``TlsPump``
(``src/transport/tls_pump.rs``); the native stream transport feeds received bytes to it
directly, without ``get_buffer``/``buffer_updated``.
"""

from __future__ import annotations

import asyncio
import sys
from asyncio import constants, sslproto

try:
    import _ssl as _ssl_c
    import ssl as _ssl
except ImportError:  # pragma: no cover - CPython built without OpenSSL
    _ssl = _ssl_c = None

from ._ferroloop import TlsPump
from ._transports import SocketTransport

#: A server's start_tls() hands the TLS bytes a StreamReader already holds (the client's
#: hello, read before the upgrade) to the TLS protocol (asyncio 3.14+, gh-142352).
_START_TLS_TAKES_READER_BUFFER = sys.version_info >= (3, 14)


def check_no_tls_options(ssl, server_hostname=None, handshake=None, shutdown=None) -> None:
    """asyncio's checks of TLS-only arguments passed without ``ssl``."""
    if server_hostname is not None and not ssl:
        raise ValueError("server_hostname is only meaningful with ssl")
    if handshake is not None and not ssl:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if shutdown is not None and not ssl:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


def _hand_reader_buffer_to_tls(protocol, ssl_protocol) -> None:
    """Moves what a stream's reader buffered before start_tls() into the TLS protocol's
    incoming data, where the handshake reads it."""
    if not isinstance(protocol, asyncio.StreamReaderProtocol):
        return
    reader = getattr(protocol, "_stream_reader", None)
    pending = getattr(reader, "_buffer", None)
    if pending:
        ssl_protocol._incoming.write(pending)
        pending.clear()


class _PumpedSSLTransport(sslproto._SSLProtocolTransport):
    """The transport the application's protocol writes to; ``write`` goes to the pump."""

    def write(self, data):
        """Encrypts and sends ``data`` (bytes-like), or queues it until the handshake ends."""
        protocol = self._ssl_protocol
        protocol._ferroloop_tls_pump.app_write(protocol, data)


#: The ``SSLProtocol`` attributes ``TlsPump`` keeps a copy of (re-read on each assignment).
_MIRRORED = frozenset(
    {
        "_state",
        "_app_reading_paused",
        "_app_protocol_is_buffer",
        "_ssl_writing_paused",
        "_ssl_reading_paused",
        "_app_writing_paused",
        "_write_buffer_size",
        "_incoming_high_water",
        "_incoming_low_water",
        "_outgoing_high_water",
        "_outgoing_low_water",
        "_app_protocol",
        "_transport",
        "_write_backlog",
    }
)


class _CountedBufferUpdated:
    """A buffered app protocol's ``buffer_updated``, counting the bytes it is told of (the
    application bytes ``SSLProtocol._do_read__buffered`` delivers, which the pump does not
    see). Holds the counter, not the protocol: no reference cycle."""

    __slots__ = ("counter", "target")

    def __init__(self, counter: list, target):
        self.counter = counter
        self.target = target

    def __call__(self, nbytes):
        self.counter[0] += nbytes
        return self.target(nbytes)


class _PumpedSSLProtocol(sslproto.SSLProtocol):
    """asyncio's ``SSLProtocol`` with its wrapped-state data path in ``TlsPump``."""

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in _MIRRORED:
            pump = self.__dict__.get("_ferroloop_tls_pump")
            if pump is not None:
                pump.sync(self)

    def __init__(self, *args, **kwargs):
        # Application bytes a buffered app protocol received (see _CountedBufferUpdated);
        # set before asyncio's __init__, which calls _set_app_protocol.
        self._ferroloop_buffered_in = [0]
        super().__init__(*args, **kwargs)
        sslobj = self._sslobj
        # Under the stdlib's pure-Python wrapper sits the ``_ssl`` object with the same
        # read/write/pending: call it directly. A program's own sslobject_class keeps its own.
        if type(sslobj) is _ssl.SSLObject:
            sslobj = sslobj._sslobj
        self._ferroloop_tls_pump = TlsPump(
            self._incoming,
            self._outgoing,
            sslobj,
            sslproto.SSLProtocolState.WRAPPED,
            sslproto.SSLProtocolState.FLUSHING,
            sslproto.SSLAgainErrors,
            # C methods that release the buffer they get before returning: the pump lends
            # them a reusable buffer object instead of a memoryview per call.
            type(self._incoming) is _ssl.MemoryBIO and type(sslobj) is _ssl_c._SSLSocket,
        )
        self._ferroloop_tls_pump.sync(self)

    def _set_app_protocol(self, app_protocol):
        super()._set_app_protocol(app_protocol)
        if self._app_protocol_is_buffer:
            self._app_protocol_buffer_updated = _CountedBufferUpdated(
                self._ferroloop_buffered_in, self._app_protocol_buffer_updated
            )

    def _ferroloop_app_counts(self):
        """Application bytes so far: ``(received, sent)``, sent being those TLS encrypted
        (written by the app, minus what still waits in the backlog); for
        ``ferroloop.inspect_transports``."""
        received, accepted = self._ferroloop_tls_pump._app_counts()
        received += self._ferroloop_buffered_in[0]
        return received, max(0, accepted - self._write_buffer_size)

    def _get_app_transport(self):
        if self._app_transport is None:
            if self._app_transport_created:
                raise RuntimeError("Creating _SSLProtocolTransport twice")
            self._app_transport_created = True
            self._app_transport = _PumpedSSLTransport(self._loop, self)
        return self._app_transport

    def _ferroloop_after_incoming(self):
        """What ``buffer_updated`` does once the bytes are in the incoming BIO, outside the
        wrapped state (the pump handles that one itself)."""
        state = self._state
        if state is sslproto.SSLProtocolState.DO_HANDSHAKE:
            self._do_handshake()
        elif state is sslproto.SSLProtocolState.WRAPPED:
            self._do_read()
        elif state is sslproto.SSLProtocolState.FLUSHING:
            self._do_flush()
        elif state is sslproto.SSLProtocolState.SHUTDOWN:
            self._do_shutdown()

    def _do_read(self):
        self._ferroloop_tls_pump.do_read(self)

    def _process_outgoing(self):
        self._ferroloop_tls_pump.process_outgoing(self)


class TLSAPI:
    """Mixin of ``ferroloop.EventLoop``: TLS transports over native stream transports."""

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
    ):
        """The standard library's TLS protocol over a native stream transport; returns the
        transport the application's protocol talks to. ``sslcontext`` None: asyncio's
        default client context."""
        ssl_protocol = _PumpedSSLProtocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        SocketTransport(self, rawsock, ssl_protocol, None, extra, server)
        return ssl_protocol._app_transport

    async def start_tls(
        self,
        transport,
        protocol,
        sslcontext,
        *,
        server_side=False,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Upgrades an existing connection to TLS; returns the new (TLS) transport once the
        handshake is done. The old transport must no longer be used."""
        if _ssl is None:
            raise RuntimeError("Python ssl module is not available")
        if not isinstance(sslcontext, _ssl.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
            )
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()
        ssl_protocol = _PumpedSSLProtocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            call_connection_made=False,
        )
        # Pause first: data already buffered must reach the TLS protocol, not the old one.
        transport.pause_reading()
        if server_side and _START_TLS_TAKES_READER_BUFFER:
            _hand_reader_buffer_to_tls(protocol, ssl_protocol)
        transport.set_protocol(ssl_protocol)
        made = self.call_soon(ssl_protocol.connection_made, transport)
        resume = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resume.cancel()
            # The waiter holds the exception, whose traceback holds this frame and so the
            # waiter: drop it, or the transport lives on in that cycle until a gc pass.
            waiter = None
            raise
        return ssl_protocol._app_transport
