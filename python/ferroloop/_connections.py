"""Client connections: create_connection (happy eyeballs, interleave, local_addr),
create_unix_connection and connect_accepted_socket. Transports are in ``_transports``,
TLS in ``_tls``.

Name resolution, socket creation and argument checks are cold paths and live here; the
checks and their messages are asyncio's (CPython 3.11).
"""

from __future__ import annotations

import collections
import itertools
import os
import socket
from asyncio import staggered

from ._tls import check_no_tls_options
from ._transports import SocketTransport


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


class ConnectionAPI:
    """Mixin of ``ferroloop.EventLoop``: outgoing (and accepted-elsewhere) stream
    connections."""

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
        check_no_tls_options(ssl, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)
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
            try:
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
                    sock, _, race_errors = await staggered.staggered_race(
                        attempts, happy_eyeballs_delay, loop=self
                    )
                    # The race's own frames (in these errors' tracebacks) hold this list.
                    race_errors.clear()
                if sock is None:
                    flat = [err for attempt in errors for err in attempt]
                    try:
                        if all_errors:
                            raise ExceptionGroup("create_connection failed", flat)
                        raise _combined_connect_error(flat)
                    finally:
                        flat = None
            finally:
                # Each failed attempt's exception holds (through its traceback) the frames
                # that hold these lists: empty them so that no cycle keeps the exceptions,
                # their frames and sockets alive once the caller lets go (asyncio does too).
                for attempt in errors:
                    attempt.clear()
                errors = None
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
            check_no_tls_options(ssl, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)
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
        check_no_tls_options(ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        return await self._make_stream_transport(
            sock,
            protocol_factory,
            ssl=ssl,
            server_side=True,
            server_hostname="",
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
