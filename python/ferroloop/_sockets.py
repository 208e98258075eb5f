"""The loop's low-level socket API (``sock_*``), name resolution and ``sock_sendfile``.

Each operation first tries the non-blocking system call; only when it would block does it
register a reader or writer (native, level-triggered: ``LoopCore._add_reader``) that retries
the call until it completes. The future's done-callback always unregisters, so a cancelled
operation leaves the socket usable and unwatched. Semantics, checks and messages follow
CPython 3.11's selector loop.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import sys
from typing import Any

from ._ferroloop import file_size, seek_file, send_file_chunk

try:
    import ssl
except ImportError:  # pragma: no cover - Python built without ssl
    ssl = None  # type: ignore[assignment]

#: Size of the reads of the sendfile fallback (asyncio's own figure).
SENDFILE_FALLBACK_CHUNK = 256 * 1024
#: Native sendfile leaves the file positioned after what it sent even when that is nothing
#: (an offset at or past the end): asyncio 3.14+; before, only when it sent something.
_SENDFILE_ALWAYS_REPOSITIONS = sys.version_info >= (3, 14)
_INET_FAMILIES = (socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET))


def _refuse_ssl_socket(sock: socket.socket) -> None:
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _is_numeric_host(host: object) -> bool:
    """True for None and IP literals: resolving them needs no DNS and no thread."""
    if host is None:
        return True
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str):
        return False
    for family in _INET_FAMILIES:
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return True
    return False


def _is_numeric_port(port: object) -> bool:
    if port is None or isinstance(port, int):
        return True
    return isinstance(port, (str, bytes)) and port.isdigit()


def _numeric_addrinfo(host, port, family, type, proto, flags):
    """``socket.getaddrinfo`` for an IP literal, answered without DNS (so on the loop's
    thread); None when the host or port is not numeric."""
    if not (_is_numeric_host(host) and _is_numeric_port(port)):
        return None
    numeric = socket.AI_NUMERICHOST | getattr(socket, "AI_NUMERICSERV", 0)
    try:
        return socket.getaddrinfo(host, port, family, type, proto, flags | numeric)
    except socket.gaierror:
        return None  # let the system resolver have the final word, off the loop


class SocketAPI:
    """Mixin of ``ferroloop.EventLoop``: the ``sock_*`` methods and name resolution."""

    # ------------------------------------------------------------------ helpers

    def _check_socket(self, sock: socket.socket) -> None:
        _refuse_ssl_socket(sock)
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")

    def _wait_ready(self, register, sock: socket.socket, attempt, *args) -> asyncio.Future:
        """Runs ``attempt(fut, sock, *args)`` whenever ``sock`` is ready, until ``fut`` is done;
        unregisters when the future completes or is cancelled."""
        fut = self.create_future()
        fd = sock.fileno()
        handle = register(fd, attempt, fut, sock, *args)
        unregister = self._remove_reader if register == self._add_reader else self._remove_writer
        fut.add_done_callback(functools.partial(_unwatch, unregister, fd, handle))
        return fut

    def _retry_read(self, fut, sock, method: str, *args) -> None:
        """Reader callback: retries ``sock.<method>(*args)`` and completes ``fut`` with its
        result. The method is looked up at each attempt, as asyncio does (tests patch it)."""
        if fut.done():
            return
        try:
            result = getattr(sock, method)(*args)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            # The exception's traceback holds this frame: drop the future it also holds, so
            # that no cycle keeps the exception alive (asyncio breaks it the same way).
            fut = None
        else:
            fut.set_result(result)

    async def _read_op(self, sock: socket.socket, method: str, *args) -> Any:
        """Common shape of sock_recv & co: try ``sock.<method>(*args)`` now, else wait until
        readable and retry."""
        self._check_socket(sock)
        try:
            return getattr(sock, method)(*args)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_ready(self._add_reader, sock, self._retry_read, method, *args)

    # --------------------------------------------------------------- receiving

    async def sock_recv(self, sock: socket.socket, n: int) -> bytes:
        """Receives up to ``n`` bytes from ``sock``."""
        self._check_socket(sock)
        return await self._native_wait(sock, self._sock_recv(sock, n))

    async def sock_recv_into(self, sock: socket.socket, buf) -> int:
        """Receives into ``buf``; returns the number of bytes received."""
        self._check_socket(sock)
        return await self._native_wait(sock, self._sock_recv_into(sock, buf))

    async def _native_wait(self, sock: socket.socket, pending):
        """Awaits a native receive (``LoopCore._sock_recv*``): ``pending`` is the result
        itself when data was there already, else the future the loop resolves. A cancelled
        wait stops watching the socket."""
        if not isinstance(pending, asyncio.Future):
            return pending
        try:
            return await pending
        except BaseException:
            self._sock_forget_wait(sock, pending)
            raise

    async def sock_recvfrom(self, sock: socket.socket, bufsize: int) -> tuple[bytes, Any]:
        """Receives a datagram of up to ``bufsize`` bytes; returns ``(data, address)``."""
        return await self._read_op(sock, "recvfrom", bufsize)

    async def sock_recvfrom_into(self, sock: socket.socket, buf, nbytes: int = 0):
        """Receives a datagram into ``buf``; returns ``(nbytes, address)``."""
        if not nbytes:
            nbytes = len(buf)
        return await self._read_op(sock, "recvfrom_into", buf, nbytes)

    async def sock_accept(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        """Accepts a connection; the new socket is non-blocking."""
        conn, address = await self._read_op(sock, "accept")
        conn.setblocking(False)
        return conn, address

    # ------------------------------------------------------------------ sending

    async def sock_sendall(self, sock: socket.socket, data) -> None:
        """Sends all of ``data``, waiting for the socket to drain as needed."""
        self._check_socket(sock)
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        view = memoryview(data).cast("B")
        if sent == len(view):
            return
        progress = [sent]
        await self._wait_ready(self._add_writer, sock, self._send_more, view, progress)

    def _send_more(self, fut, sock, view: memoryview, progress: list[int]) -> None:
        """Writer callback of sock_sendall: sends what is left."""
        if fut.done():
            return
        start = progress[0]
        try:
            start += sock.send(view[start:])
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut = None  # no cycle exception -> traceback -> this frame -> future
            return
        if start == len(view):
            fut.set_result(None)
        else:
            progress[0] = start

    async def sock_sendto(self, sock: socket.socket, data, address) -> int:
        """Sends a datagram to ``address``; returns the number of bytes sent."""
        self._check_socket(sock)
        try:
            return sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_ready(
            self._add_writer, sock, self._retry_read, "sendto", data, address
        )

    # --------------------------------------------------------------- connecting

    async def sock_connect(self, sock: socket.socket, address) -> None:
        """Connects ``sock`` to ``address``, resolving a host name first (inet sockets)."""
        self._check_socket(sock)
        if sock.family in _INET_FAMILIES and isinstance(address, tuple) and len(address) >= 2:
            address = await self._resolve_for(sock, address)
        try:
            sock.connect(address)
        except (BlockingIOError, InterruptedError):
            pass
        else:
            return
        await self._wait_ready(self._add_writer, sock, _finish_connect, address)

    async def _resolve_for(self, sock: socket.socket, address: tuple) -> tuple:
        """The socket address to connect ``sock`` to, with asyncio's resolution rules."""
        host, port = address[:2]
        infos = _numeric_addrinfo(host, port, sock.family, sock.type, sock.proto, 0)
        if infos is None:
            infos = await self.getaddrinfo(
                host, port, family=sock.family, type=sock.type, proto=sock.proto
            )
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        resolved = infos[0][4]
        if sock.family != socket.AF_INET and len(address) > 2:
            # IPv6: keep the caller's flowinfo and scope id.
            resolved = (resolved[0], resolved[1], *address[2:])
        return resolved

    # ---------------------------------------------------------- name resolution

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """``socket.getaddrinfo`` without blocking the loop.

        IP literals (and None) are resolved on the loop's thread, as they need no DNS;
        anything else goes to the default executor, as in asyncio.
        """
        infos = _numeric_addrinfo(host, port, family, type, proto, flags)
        if infos is not None:
            return infos
        future = self.run_in_executor(
            None, socket.getaddrinfo, host, port, family, type, proto, flags
        )
        return await self._lookup_is_io(future)

    async def getnameinfo(self, sockaddr, flags=0):
        """``socket.getnameinfo`` in the default executor."""
        future = self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)
        return await self._lookup_is_io(future)

    # ---------------------------------------------------------------- sendfile

    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        """Sends ``file`` over ``sock``: zero-copy ``os.sendfile`` when the pair allows it,
        else (with ``fallback``) reads and ``sock_sendall``. Returns the bytes sent."""
        self._check_socket(sock)
        _check_sendfile_params(sock, file, offset, count)
        try:
            return await self._sendfile_native(sock, file, offset, count)
        except asyncio.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sendfile_by_copy(sock, file, offset, count)

    async def _sendfile_native(self, sock, file, offset: int, count: int | None) -> int:
        # fstat, sendfile and lseek are native calls (_ferroloop.file_send): blocking-call
        # detectors refuse os.sendfile/os.fstat called from Python on the loop's thread.
        try:
            fileno = file.fileno()
            size = file_size(fileno)
        except (AttributeError, OSError, ValueError) as exc:
            raise asyncio.SendfileNotAvailableError("not a regular file") from exc
        except Exception as exc:  # io.UnsupportedOperation and friends
            raise asyncio.SendfileNotAvailableError("not a regular file") from exc
        if not (count or size):
            return 0  # an empty file: nothing sent, the position untouched
        total = count if count else max(size - offset, 0)
        sent = 0
        if total <= 0:
            if _SENDFILE_ALWAYS_REPOSITIONS:
                seek_file(fileno, offset)
            return 0
        try:
            while sent < total:
                try:
                    n = send_file_chunk(sock.fileno(), fileno, offset + sent, total - sent)
                except (BlockingIOError, InterruptedError):
                    await self._wait_ready(self._add_writer, sock, _signal_ready)
                    continue
                except OSError as exc:
                    if sent == 0:
                        # Typically the file is not mmap-able: the caller may copy instead.
                        raise asyncio.SendfileNotAvailableError("os.sendfile call failed") from exc
                    if exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                        # Peer gone mid-transfer: the same error on every POSIX system.
                        raise ConnectionError("socket is not connected", errno.ENOTCONN) from exc
                    raise
                if n == 0:
                    break  # end of file
                sent += n
            return sent
        finally:
            if sent > 0 or _SENDFILE_ALWAYS_REPOSITIONS:
                seek_file(fileno, offset + sent)

    async def _sendfile_by_copy(self, sock, file, offset: int, count: int | None) -> int:
        if offset:
            file.seek(offset)
        chunk = min(count, SENDFILE_FALLBACK_CHUNK) if count else SENDFILE_FALLBACK_CHUNK
        buffer = bytearray(chunk)
        sent = 0
        try:
            while True:
                if count:
                    chunk = min(count - sent, chunk)
                    if chunk <= 0:
                        break
                view = memoryview(buffer)[:chunk]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    break
                await self.sock_sendall(sock, view[:read])
                sent += read
            return sent
        finally:
            if sent > 0 and hasattr(file, "seek"):
                file.seek(offset + sent)


def _unwatch(unregister, fd: int, handle, fut) -> None:
    """Done-callback of a waiting operation: unregister, unless another callback replaced
    ours meanwhile (then ``handle`` was cancelled by the replacement)."""
    if handle is None or not handle.cancelled():
        unregister(fd)


def _signal_ready(fut, sock) -> None:
    """Writer callback that only reports writability (sendfile retries itself)."""
    if not fut.done():
        fut.set_result(None)


def _finish_connect(fut, sock, address) -> None:
    """Writer callback of sock_connect: the connection attempt ended (or is still going)."""
    if fut.done():
        return
    try:
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            raise OSError(err, f"Connect call failed {address}")
    except (BlockingIOError, InterruptedError):
        return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
        fut = None  # no cycle exception -> traceback -> this frame -> future
    else:
        fut.set_result(None)


def _check_sendfile_params(sock, file, offset, count) -> None:
    """asyncio's argument checks for sendfile, same exceptions and messages."""
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError("only SOCK_STREAM type sockets are supported")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
    if not isinstance(offset, int):
        raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
    if offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")
