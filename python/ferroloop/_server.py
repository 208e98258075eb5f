"""Servers: the Server object, create_server / create_unix_server, and the accept loop.

Listening sockets are set up here (cold path, asyncio's checks and messages, CPython 3.11);
connections are accepted natively (``accept_connection``: ``accept4`` without a socket
object per connection, see ``src/transport/accept.rs``) and handed to a native stream
transport, or to the TLS glue of ``_tls`` for a server with an SSL context.
"""

from __future__ import annotations

import asyncio
import collections.abc
import errno
import itertools
import logging
import os
import socket
import sys
from asyncio import trsock

from ._ferroloop import (
    ServerClients,
    accept_connection,
    remove_socket_file,
    socket_file_inode,
)
from ._socket_setup import enable_reuse_port, remove_stale_unix_socket
from ._tls import check_no_tls_options
from ._transports import SocketTransport

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
#: create_unix_server(cleanup_socket=True): a Unix server removes its socket file when it
#: stops serving (asyncio 3.13+; the keyword does not exist before).
_UNIX_SOCKET_CLEANUP = sys.version_info >= (3, 13)
#: A cancelled serve_forever() closes the server's connections too (asyncio 3.14+).
_SERVE_FOREVER_CLOSES_CLIENTS = sys.version_info >= (3, 14)
_NOT_GIVEN = object()


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
        #: The open connections (3.13+, for close_clients/abort_clients): a native set, a
        #: tenth of a Python set's memory per connection (src/transport/server_clients.rs).
        self._clients = ServerClients()
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
            for transport in self._clients.snapshot():
                transport.close()

        def abort_clients(self) -> None:
            """Aborts every connection this server accepted (3.13+)."""
            for transport in self._clients.snapshot():
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
                if _SERVE_FOREVER_CLOSES_CLIENTS:
                    self.close_clients()
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


class ServerAPI:
    """Mixin of ``ferroloop.EventLoop``: listening servers and their accept loop."""

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
        check_no_tls_options(ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
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
                    enable_reuse_port(sock)
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
        cleanup_socket=_NOT_GIVEN,
    ):
        """Listens on the Unix socket ``path`` (a stale socket file is replaced) or ``sock``;
        on 3.13+ its socket file is removed when the server stops serving (``cleanup_socket``)."""
        if cleanup_socket is _NOT_GIVEN:
            cleanup_socket = _UNIX_SOCKET_CLEANUP
        elif not _UNIX_SOCKET_CLEANUP:
            raise TypeError(
                "create_unix_server() got an unexpected keyword argument 'cleanup_socket'"
            )
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        check_no_tls_options(ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            remove_stale_unix_socket(path)
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
        if cleanup_socket:
            self._remember_socket_file(sock)
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
        socket_files = getattr(self, "_unix_socket_files", None)
        socket_file = socket_files.pop(sock, None) if socket_files else None
        sock.close()
        if socket_file is not None:
            path, inode = socket_file
            try:
                remove_socket_file(os.fsencode(path), inode)
            except OSError as err:
                logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)

    def _remember_socket_file(self, sock) -> None:
        """Notes the file (and its inode) a Unix server socket is bound to, for
        _stop_accepting to remove if it is still that file; abstract names have none."""
        path = sock.getsockname()
        if not path or path[0] in (0, "\x00"):
            return
        inode = socket_file_inode(os.fsencode(path))
        if inode is not None:
            if getattr(self, "_unix_socket_files", None) is None:
                self._unix_socket_files = {}
            self._unix_socket_files[sock] = (path, inode)

    def _accept_ready(self, protocol_factory, sock, server, backlog) -> None:
        """Accepts up to ``backlog`` connections; a failing protocol factory is reported and
        the server keeps serving; running out of descriptors (EMFILE, ENFILE...) pauses
        accepting for a second (asyncio's retry delay)."""
        listen_fd = sock.fileno()
        for _ in range(backlog):
            try:
                # Native accept4: no socket object or address tuple per connection until
                # someone asks (see src/transport/accept.rs); None when nothing is waiting.
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
                # No return, as in asyncio: the remaining ``backlog`` attempts are made (each
                # failing is reported and schedules its retry the same way).
                continue
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
