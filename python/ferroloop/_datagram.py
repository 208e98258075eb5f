"""Datagram endpoints: create_datagram_endpoint (UDP, AF_UNIX datagrams), with asyncio's
address pairing, checks and messages (CPython 3.11). The transport is native
(``_transports.DatagramTransport``).
"""

from __future__ import annotations

import socket
import warnings

from ._socket_setup import enable_reuse_port, remove_stale_unix_socket
from ._transports import DatagramTransport

#: Marks "argument not given" where None is meaningful (reuse_address).
_UNSET = object()


class DatagramAPI:
    """Mixin of ``ferroloop.EventLoop``: datagram endpoints."""

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
                        enable_reuse_port(sock)
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
            if local_addr:
                remove_stale_unix_socket(local_addr)
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
