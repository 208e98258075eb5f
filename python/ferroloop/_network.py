"""Connections and servers: create_connection, create_server, their Unix variants,
connect_accepted_socket, and the Server object. Stream transports are in ``_transports``.

Name resolution, socket creation and argument checks are cold paths and live here; the
checks and their messages are asyncio's (CPython 3.11).

TLS (``ssl=``, ``start_tls``) runs the standard library's ``asyncio.sslproto.SSLProtocol``
(TLS through ``ssl.MemoryBIO``, a BufferedProtocol) over the native stream transport, as
asyncio's own loops do: the protocol the application sees gets ``SSLProtocol``'s app
transport, with asyncio's handshake/shutdown timeouts and errors.
"""

from __future__ import annotations

import asyncio
import collections.abc
import errno
import itertools
import logging
import os
import socket
import stat
import sys
import warnings
from asyncio import constants, sslproto, staggered, trsock

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover - CPython built without OpenSSL
    _ssl = None

from ._ferroloop import accept_connection
from ._transports import DatagramTransport, SocketTransport, StreamTransport

logger = logging.getLogger("asyncio")

#: Seconds before accepting again after the process ran out of descriptors (asyncio's).
ACCEPT_RETRY_DELAY = 1
_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_HAS_IPV6 = hasattr(socket, "AF_INET6")
#: Server.wait_closed waits for the connections too (asyncio 3.12.1+; 3.11 returns at once
#: once the server is closed).
_WAIT_FOR_CONNECTIONS = sys.version_info >= (3, 12)
#: Servers keep their connections for close_clients/abort_clients (asyncio 3.13+).
_CLIENTS_TRACKED = sys.version_info >= (3, 13)
#: Marks "argument not given" where None is meaningful (reuse_address).
_UNSET = object()


def _check_no_tls_options(ssl, server_hostname=None, handshake=None, shutdown=None) -> None:
    """asyncio's checks of TLS-only arguments passed without ``ssl``."""
    if server_hostname is not None and not ssl:
        raise ValueError("server_hostname is only meaningful with ssl")
    if handshake is not None and not ssl:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if shutdown is not None and not ssl:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


def _enable_reuse_port(sock: socket.socket) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        ) from None


def _interleave_by_family(infos: list, first_family_count: int = 1) -> list:
    """Address infos reordered to alternate between families (RFC 8305 §4), the first family
    leading with ``first_family_count`` entries."""
    by_family: dict = collections.OrderedDict()
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    queues = list(by_family.values())
    ordered = []
    if first_family_count > 1 and queues:
        ordered.extend(queues[0][: first_family_count - 1])
        del queues[0][: first_family_count - 1]
    for round_ in itertools.zip_longest(*queues):
        ordered.extend(info for info in round_ if info is not None)
    return ordered


def _combined_connect_error(errors: list[OSError]) -> OSError:
    """asyncio's single error for a connection that failed on every address."""
    if len(errors) == 1:
        return errors[0]
    first = str(errors[0])
    if all(str(err) == first for err in errors):
        return errors[0]
    return OSError("Multiple exceptions: {}".format(", ".join(str(err) for err in errors)))


class Server(asyncio.AbstractServer):
    """A listening server (what create_server returns)."""

    def __init__(
        self,
        loop,
        sockets,
        protocol_factory,
        backlog,
        ssl_context=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        self._loop = loop
        self._sockets = sockets
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._active_count = 0
        #: The open connections (3.13+, for close_clients/abort_clients).
        self._clients: set = set()
        self._waiters: list | None = []
        self._serving = False
        self._serving_forever_fut = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} sockets={self.sockets!r}>"

    def _attach(self, transport=None) -> None:
        self._active_count += 1
        if _CLIENTS_TRACKED and transport is not None:
            self._clients.add(transport)

    def _detach(self, transport=None) -> None:
        self._active_count -= 1
        if _CLIENTS_TRACKED and transport is not None:
            self._clients.discard(transport)
        if self._active_count == 0 and self._sockets is None:
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(waiter)

    def _start_serving(self) -> None:
        if self._serving:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._loop._start_accepting(self._protocol_factory, sock, self, self._backlog)

    if sys.version_info >= (3, 13):

        def close_clients(self) -> None:
            """Closes every connection this server accepted (3.13+)."""
            for transport in self._clients.copy():
                transport.close()

        def abort_clients(self) -> None:
            """Aborts every connection this server accepted (3.13+)."""
            for transport in self._clients.copy():
                transport.abort()

    def get_loop(self):
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    @property
    def sockets(self) -> tuple:
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(s) for s in self._sockets)

    def close(self) -> None:
        sockets, self._sockets = self._sockets, None
        if sockets is None:
            return
        for sock in sockets:
            self._loop._stop_accepting(sock)
        self._serving = False
        forever, self._serving_forever_fut = self._serving_forever_fut, None
        if forever is not None and not forever.done():
            forever.cancel()
        if self._active_count == 0:
            self._wake_waiters()

    async def start_serving(self) -> None:
        self._start_serving()
        await asyncio.sleep(0)  # let the listening sockets' readers register

    async def serve_forever(self) -> None:
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self) -> None:
        """3.11: returns at once if the server is already closed (even with connections
        still open), as asyncio 3.11 does. 3.12+: waits until the server is closed and every
        connection it accepted is gone, as asyncio 3.12.1+ does."""
        if self._waiters is None or (not _WAIT_FOR_CONNECTIONS and self._sockets is None):
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter


class _FlowControlStandIn(asyncio.Protocol):
    """Takes a transport's protocol seat during a copying sendfile: records pause_writing /
    resume_writing so the sender can wait, passes connection_lost on to the real protocol,
    and gives the seat back (reading and writing state included) at the end."""

    def __init__(self, loop, transport):
        self._loop = loop
        self._transport = transport
        self._protocol = transport.get_protocol()
        self._resume_reading = transport.is_reading()
        self._paused_before = bool(getattr(transport, "_protocol_paused", False))
        self._writable_again = loop.create_future() if self._paused_before else None
        transport.pause_reading()
        transport.set_protocol(self)

    async def writable(self) -> None:
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        if self._writable_again is not None:
            await self._writable_again

    def pause_writing(self) -> None:
        if self._writable_again is None:
            self._writable_again = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable_again is not None:
            self._writable_again.set_result(None)
            self._writable_again = None

    def connection_lost(self, exc) -> None:
        if self._writable_again is not None and not self._writable_again.done():
            self._writable_again.set_exception(
                exc if exc is not None else ConnectionError("Connection is closed by peer")
            )
        self._protocol.connection_lost(exc)

    def data_received(self, data) -> None:
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self):
        raise RuntimeError("Invalid state: reading should be paused")

    def restore(self) -> None:
        self._transport.set_protocol(self._protocol)
        if self._resume_reading:
            self._transport.resume_reading()
        if self._writable_again is not None:
            self._writable_again.cancel()
        if self._paused_before:
            self._protocol.resume_writing()


class NetworkAPI:
    """Mixin of ``ferroloop.EventLoop``: stream connections and servers."""

    # -------------------------------------------------------------- transports

    async def _make_stream_transport(
        self,
        sock,
        protocol_factory,
        extra=None,
        *,
        ssl=None,
        server_side=False,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Wraps a connected socket: protocol, transport (TLS with ``ssl``), and
        connection_made run; with TLS, returns once the handshake is done."""
        sock.setblocking(False)
        protocol = protocol_factory()
        waiter = self.create_future()
        if ssl:
            transport = self._make_ssl_transport(
                sock,
                protocol,
                None if isinstance(ssl, bool) else ssl,
                waiter,
                server_side=server_side,
                server_hostname=server_hostname,
                extra=extra,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
            )
        else:
            transport = SocketTransport(self, sock, protocol, waiter, extra)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

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
        ssl_protocol = sslproto.SSLProtocol(
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
        ssl_protocol = sslproto.SSLProtocol(
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
        transport.set_protocol(ssl_protocol)
        made = self.call_soon(ssl_protocol.connection_made, transport)
        resume = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resume.cancel()
            raise
        return ssl_protocol._app_transport

    # ---------------------------------------------------------------- sendfile

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        """Sends ``file`` over a stream transport: zero-copy ``os.sendfile`` on its socket
        when possible, else (with ``fallback``) reads and writes with flow control."""
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        if not isinstance(transport, StreamTransport):
            # A TLS transport: data must go through it (asyncio's FALLBACK mode).
            mode = getattr(transport, "_sendfile_compatible", constants._SendfileMode.UNSUPPORTED)
            if mode is not constants._SendfileMode.FALLBACK:
                raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
            if not fallback:
                raise RuntimeError(
                    "fallback is disabled and native sendfile is not supported "
                    f"for transport {transport!r}"
                )
            return await self._sendfile_through_protocol_swap(transport, file, offset, count)
        raw = transport._sock
        try:
            transport.pause_reading()
            await transport._wait_buffer_empty()
            try:
                return await self.sock_sendfile(raw, file, offset, count, fallback=False)
            finally:
                transport._end_sendfile()
                transport.resume_reading()
        except asyncio.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sendfile_through_transport(transport, file, offset, count)

    async def _sendfile_through_protocol_swap(self, transport, file, offset, count) -> int:
        """The copying path for a transport that is not ours (TLS): while the file is
        written, a stand-in protocol takes the transport's flow-control calls, so that writing
        waits whenever the transport asks its protocol to pause."""
        stand_in = _FlowControlStandIn(self, transport)
        try:
            return await self._sendfile_copy(transport, file, offset, count, stand_in.writable)
        finally:
            stand_in.restore()

    async def _sendfile_through_transport(self, transport, file, offset, count) -> int:
        """The copying path over a native transport: between chunks, wait for its buffer to
        drain below the high-water mark."""

        async def below_high_water():
            while transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
                if transport.is_closing():
                    raise ConnectionError("Connection closed by peer")
                await transport._wait_buffer_empty()
                transport._end_sendfile()
            if transport.is_closing():
                raise ConnectionError("Connection closed by peer")

        return await self._sendfile_copy(transport, file, offset, count, below_high_water)

    async def _sendfile_copy(self, transport, file, offset, count, writable) -> int:
        """File chunks read in the executor and written to ``transport``, awaiting
        ``writable()`` before each write; the file is left positioned after what was sent."""
        if offset:
            file.seek(offset)
        size = min(count, 16384) if count else 16384
        buffer = bytearray(size)
        sent = 0
        try:
            while True:
                if count:
                    size = min(count - sent, size)
                    if size <= 0:
                        return sent
                view = memoryview(buffer)[:size]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    return sent
                await writable()
                transport.write(bytes(view[:read]))
                sent += read
        finally:
            if sent > 0 and hasattr(file, "seek"):
                file.seek(offset + sent)

    # ---------------------------------------------------------------- clients

    async def create_connection(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        ssl=None,
        family=0,
        proto=0,
        flags=0,
        sock=None,
        local_addr=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        happy_eyeballs_delay=None,
        interleave=None,
        all_errors=False,
    ):
        """Connects to ``host:port`` (each resolved address in turn) or wraps ``sock``."""
        _check_no_tls_options(ssl, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)
        if ssl and server_hostname is None:
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1  # RFC 8305's default when Happy Eyeballs is on
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            infos = await self._resolve_stream(host, port, family, proto, flags)
            local_infos = None
            if local_addr is not None:
                local_infos = await self._resolve_stream(*local_addr, family, proto, flags)
            if interleave:
                infos = _interleave_by_family(infos, interleave)
            errors: list[list[OSError]] = []
            if happy_eyeballs_delay is None:
                for info in infos:
                    try:
                        sock = await self._connect_one(errors, info, local_infos)
                        break
                    except OSError:
                        continue
            else:
                attempts = [
                    (lambda info=info: self._connect_one(errors, info, local_infos))
                    for info in infos
                ]
                sock, _, _ = await staggered.staggered_race(
                    attempts, happy_eyeballs_delay, loop=self
                )
            if sock is None:
                flat = [err for attempt in errors for err in attempt]
                if all_errors:
                    raise ExceptionGroup("create_connection failed", flat)
                raise _combined_connect_error(flat)
        else:
            if sock is None:
                raise ValueError("host and port was not specified and no sock specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        return await self._make_stream_transport(
            sock,
            protocol_factory,
            ssl=ssl,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    async def _resolve_stream(self, host, port, family, proto, flags) -> list:
        infos = await self.getaddrinfo(
            host, port, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
        )
        if not infos:
            raise OSError("getaddrinfo() returned empty list")
        return infos

    async def _connect_one(self, errors: list, info, local_infos):
        """Creates, binds (local_addr) and connects one socket; records failures."""
        mine: list[OSError] = []
        errors.append(mine)
        family, type_, proto, _, address = info
        sock = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            sock.setblocking(False)
            if local_infos is not None:
                for local_family, _, _, _, local_address in local_infos:
                    if local_family != family:
                        continue
                    try:
                        sock.bind(local_address)
                        break
                    except OSError as exc:
                        message = (
                            f"error while attempting to bind on address {local_address!r}: "
                            f"{exc.strerror.lower()}"
                        )
                        mine.append(OSError(exc.errno, message))
                else:
                    if mine:
                        raise mine.pop()
                    raise OSError(f"no matching local address with {family=} found")
            await self.sock_connect(sock, address)
            return sock
        except OSError as exc:
            mine.append(exc)
            if sock is not None:
                sock.close()
            raise
        except BaseException:
            if sock is not None:
                sock.close()
            raise

    async def create_unix_connection(
        self,
        protocol_factory,
        path=None,
        *,
        ssl=None,
        sock=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Connects to the Unix socket ``path`` (or wraps ``sock``)."""
        if ssl:
            if server_hostname is None:
                raise ValueError("you have to pass server_hostname when using ssl")
        else:
            _check_no_tls_options(ssl, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
        return await self._make_stream_transport(
            sock,
            protocol_factory,
            ssl=ssl,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    async def connect_accepted_socket(
        self,
        protocol_factory,
        sock,
        *,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Wraps a socket accepted outside the loop."""
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        _check_no_tls_options(ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        return await self._make_stream_transport(
            sock,
            protocol_factory,
            ssl=ssl,
            server_side=True,
            server_hostname="",
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    # --------------------------------------------------------------- datagrams

    async def create_datagram_endpoint(
        self,
        protocol_factory,
        local_addr=None,
        remote_addr=None,
        *,
        family=0,
        proto=0,
        flags=0,
        reuse_address=_UNSET,
        reuse_port=None,
        allow_broadcast=None,
        sock=None,
    ):
        """A datagram endpoint (UDP, or AF_UNIX datagrams): bound to ``local_addr``,
        connected to ``remote_addr``, or over ``sock``."""
        remote = None
        if sock is not None:
            if sock.type == socket.SOCK_STREAM:
                raise ValueError(f"A datagram socket was expected, got {sock!r}")
            options = dict(
                local_addr=local_addr,
                remote_addr=remote_addr,
                family=family,
                proto=proto,
                flags=flags,
                reuse_address=reuse_address,
                reuse_port=reuse_port,
                allow_broadcast=allow_broadcast,
            )
            used = {k: v for k, v in options.items() if v and v is not _UNSET}
            if used:
                problems = ", ".join(f"{k}={v}" for k, v in used.items())
                raise ValueError(
                    "socket modifier keyword arguments can not be used "
                    f"when sock is specified. ({problems})"
                )
            sock.setblocking(False)
        else:
            pairs = await self._datagram_address_pairs(
                local_addr, remote_addr, family, proto, flags
            )
            if reuse_address is not _UNSET:
                if reuse_address:
                    raise ValueError(
                        "Passing `reuse_address=True` is no longer supported, as the usage "
                        "of SO_REUSEPORT in UDP poses a significant security concern."
                    )
                warnings.warn(
                    "The *reuse_address* parameter has been deprecated as of 3.5.10 and is "
                    "scheduled for removal in 3.11.",
                    DeprecationWarning,
                    stacklevel=2,
                )
            errors = []
            for (af, pr), (local, remote_address) in pairs:
                sock = None
                try:
                    sock = socket.socket(family=af, type=socket.SOCK_DGRAM, proto=pr)
                    if reuse_port:
                        _enable_reuse_port(sock)
                    if allow_broadcast:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    sock.setblocking(False)
                    if local_addr:
                        sock.bind(local)
                    if remote_addr:
                        if not allow_broadcast:
                            await self.sock_connect(sock, remote_address)
                        remote = remote_address
                except OSError as exc:
                    if sock is not None:
                        sock.close()
                    errors.append(exc)
                except BaseException:
                    if sock is not None:
                        sock.close()
                    raise
                else:
                    break
            else:
                raise errors[0]
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = DatagramTransport(self, sock, protocol, remote, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def _datagram_address_pairs(self, local_addr, remote_addr, family, proto, flags):
        """The (family, proto) -> (local, remote) address pairs to try, as asyncio pairs them."""
        if not (local_addr or remote_addr):
            if family == 0:
                raise ValueError("unexpected address family")
            return [((family, proto), (None, None))]
        if hasattr(socket, "AF_UNIX") and family == socket.AF_UNIX:
            for address in (local_addr, remote_addr):
                if address is not None and not isinstance(address, str):
                    raise TypeError("string is expected")
            if local_addr and local_addr[0] not in (0, "\x00"):
                try:
                    if stat.S_ISSOCK(os.stat(local_addr).st_mode):
                        os.remove(local_addr)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    logger.error(
                        "Unable to check or remove stale UNIX socket %r: %r", local_addr, err
                    )
            return [((family, proto), (local_addr, remote_addr))]
        by_key: dict = {}
        for index, address in ((0, local_addr), (1, remote_addr)):
            if address is None:
                continue
            if not (isinstance(address, tuple) and len(address) == 2):
                raise TypeError("2-tuple is expected")
            infos = await self.getaddrinfo(
                *address, family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags
            )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            for af, _, pr, _, resolved in infos:
                by_key.setdefault((af, pr), [None, None])[index] = resolved
        pairs = [
            (key, pair)
            for key, pair in by_key.items()
            if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))
        ]
        if not pairs:
            raise ValueError("can not get address information")
        return pairs

    # ---------------------------------------------------------------- servers

    async def create_server(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        family=socket.AF_UNSPEC,
        flags=socket.AI_PASSIVE,
        sock=None,
        backlog=100,
        ssl=None,
        reuse_address=None,
        reuse_port=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
    ):
        """Listens on ``host`` (None, a name, or several) and ``port``, or on ``sock``."""
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        _check_no_tls_options(ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if reuse_address is None:
                reuse_address = os.name == "posix"
            sockets = await self._bind_listeners(
                host, port, family, flags, reuse_address, reuse_port
            )
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]
        return await self._serve(
            sockets,
            protocol_factory,
            backlog,
            start_serving,
            ssl,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )

    async def _bind_listeners(self, host, port, family, flags, reuse_address, reuse_port):
        if host == "":
            hosts = [None]
        elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
            hosts = [host]
        else:
            hosts = list(host)
        resolved = await asyncio.gather(
            *(self._resolve_listener(h, port, family, flags) for h in hosts)
        )
        infos = set(itertools.chain.from_iterable(resolved))
        sockets = []
        done = False
        try:
            for af, socktype, proto, _, address in infos:
                try:
                    sock = socket.socket(af, socktype, proto)
                except OSError:
                    continue  # a family/type/protocol this host does not support
                sockets.append(sock)
                if reuse_address:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                if reuse_port:
                    _enable_reuse_port(sock)
                if _HAS_IPV6 and af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    # One socket per family: no dual-stack IPv6 socket taking IPv4 too.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                try:
                    sock.bind(address)
                except OSError as err:
                    message = (
                        f"error while attempting to bind on address {address!r}: "
                        f"{err.strerror.lower()}"
                    )
                    if err.errno == errno.EADDRNOTAVAIL:
                        sockets.pop()
                        sock.close()
                        continue  # that family is not enabled here
                    raise OSError(err.errno, message) from None
            if not sockets:
                raise OSError(
                    f"could not bind on any address out of {[info[4] for info in infos]!r}"
                )
            done = True
        finally:
            if not done:
                for sock in sockets:
                    sock.close()
        return sockets

    async def _resolve_listener(self, host, port, family, flags) -> list:
        infos = await self.getaddrinfo(
            host, port, family=family, type=socket.SOCK_STREAM, flags=flags
        )
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return infos

    async def create_unix_server(
        self,
        protocol_factory,
        path=None,
        *,
        sock=None,
        backlog=100,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
    ):
        """Listens on the Unix socket ``path`` (a stale socket file is replaced) or ``sock``."""
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        _check_no_tls_options(ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if path[0] not in (0, "\x00"):  # not in the abstract namespace
                try:
                    if stat.S_ISSOCK(os.stat(path).st_mode):
                        os.remove(path)  # a stale socket left by an earlier server
                except FileNotFoundError:
                    pass
                except OSError as err:
                    logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
                raise
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("path was not specified, and no sock specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
        return await self._serve(
            [sock],
            protocol_factory,
            backlog,
            start_serving,
            ssl,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )

    async def _serve(
        self,
        sockets,
        protocol_factory,
        backlog,
        start_serving,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ) -> Server:
        for sock in sockets:
            sock.setblocking(False)
        server = Server(
            self,
            sockets,
            protocol_factory,
            backlog,
            ssl,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        if start_serving:
            server._start_serving()
            await asyncio.sleep(0)  # let the listening sockets' readers register
        if self.get_debug():
            logger.info("%r is serving", server)
        return server

    # -------------------------------------------------------------- accepting

    def _start_accepting(self, protocol_factory, sock, server, backlog) -> None:
        self._add_reader(sock.fileno(), self._accept_ready, protocol_factory, sock, server, backlog)

    def _stop_accepting(self, sock) -> None:
        self._remove_reader(sock.fileno())
        sock.close()

    def _accept_ready(self, protocol_factory, sock, server, backlog) -> None:
        """Accepts up to ``backlog`` connections; a failing protocol factory is reported and
        the server keeps serving; running out of descriptors pauses accepting for a second."""
        listen_fd = sock.fileno()
        for _ in range(backlog):
            try:
                # Native accept4: no socket object or address tuple per connection until
                # someone asks (see src/accept.rs); None when nothing is waiting.
                conn = accept_connection(listen_fd)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    raise
                self.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": exc,
                        "socket": trsock.TransportSocket(sock),
                    }
                )
                self._remove_reader(sock.fileno())
                self.call_later(ACCEPT_RETRY_DELAY, self._resume_accepting, server, sock)
                return
            if conn is None:
                return
            self._start_connection(protocol_factory, conn, None, server)

    async def _start_tls_connection(self, protocol_factory, conn, extra, server) -> None:
        """An incoming TLS connection: protocol, TLS transport, handshake. A failure (a
        client that never completes the handshake, say) is reported in debug mode only, as
        asyncio does: such clients are common and not the server's error."""
        protocol = transport = None
        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            transport = self._make_ssl_transport(
                conn,
                protocol,
                server._ssl_context,
                waiter,
                server_side=True,
                extra=extra,
                server=server,
                ssl_handshake_timeout=server._ssl_handshake_timeout,
                ssl_shutdown_timeout=server._ssl_shutdown_timeout,
            )
            try:
                await waiter
            except BaseException:
                transport.close()
                raise
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if transport is None:
                conn.close()
            if self.get_debug():
                context = {
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc,
                }
                if protocol is not None:
                    context["protocol"] = protocol
                if transport is not None:
                    context["transport"] = transport
                self.call_exception_handler(context)

    def _resume_accepting(self, server, sock) -> None:
        if server.is_serving() and sock.fileno() >= 0:
            self._start_accepting(server._protocol_factory, sock, server, server._backlog)

    def _start_connection(self, protocol_factory, conn, extra, server) -> None:
        if server._ssl_context is not None:
            self.create_task(self._start_tls_connection(protocol_factory, conn, extra, server))
            return
        protocol = None
        try:
            protocol = protocol_factory()
            SocketTransport(self, conn, protocol, None, extra, server)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            conn.close()
            context = {
                "message": "Error on transport creation for incoming connection",
                "exception": exc,
            }
            if protocol is not None:
                context["protocol"] = protocol
            self.call_exception_handler(context)
