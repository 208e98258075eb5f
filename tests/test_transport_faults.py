"""Transport faults survived as asyncio survives them: the process running out of descriptors
while accepting (reported, accepting paused, the server keeps serving afterwards) and a peer
that vanishes while data is being written (connection_lost gets the error, the loop lives on).
Each scenario runs in a child interpreter (asyncio.run, so ferroloop through -m ferroloop)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

EMFILE_SCRIPT = r"""
import asyncio, json, os, resource, socket

async def main():
    loop = asyncio.get_running_loop()
    reports = []
    loop.set_exception_handler(lambda loop, context: reports.append(context["message"]))

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
        def data_received(self, data):
            self.transport.write(data)

    server = await loop.create_server(Echo, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()
    # Exhaust descriptors: a low limit, then hold every free one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    hogs = []
    try:
        while True:
            hogs.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    # Free one descriptor for the client socket; the server then has none to accept with.
    os.close(hogs.pop())
    client = socket.socket()
    client.setblocking(False)
    try:
        client.connect(address)
    except BlockingIOError:
        pass
    await asyncio.sleep(0.3)
    refused_while_full = list(reports)
    for fd in hogs:
        os.close(fd)
    client.setblocking(True)
    client.settimeout(10)
    await loop.run_in_executor(None, client.sendall, b"ping")
    answer = await loop.run_in_executor(None, client.recv, 10)
    client.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    server.close()
    await server.wait_closed()
    print(json.dumps({"reports": refused_while_full, "answer": answer.decode(),
                      "serving_after": True}))

asyncio.run(main())
"""

VANISHING_PEER_SCRIPT = r"""
import asyncio, json, socket

async def main():
    loop = asyncio.get_running_loop()
    lost = loop.create_future()

    class Writer(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
        def connection_lost(self, exc):
            lost.set_result(None if exc is None else type(exc).__name__)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    transport, _ = await loop.create_connection(Writer, *listener.getsockname())
    peer, _ = listener.accept()
    # The peer resets the connection (SO_LINGER 0) while we keep writing.
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.close()
    listener.close()
    chunk = b"x" * 65536
    for _ in range(200):
        transport.write(chunk)
        await asyncio.sleep(0.001)
        if lost.done():
            break
    error = await asyncio.wait_for(lost, 5)
    # The loop is alive: a timer still fires.
    await asyncio.sleep(0.01)
    print(json.dumps({"lost_with": error, "closing": transport.is_closing()}))

asyncio.run(main())
"""


def _run(child, name, source):
    script = child.script(name, source)
    proc = child.run(child.command(str(script)))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_out_of_descriptors_on_accept_pauses_then_keeps_serving(child):
    """EMFILE on accept is reported ('socket.accept() out of system resource'), accepting
    pauses, and once descriptors are free again the pending client is served."""
    result = _run(child, "emfile_accept.py", EMFILE_SCRIPT)
    assert "socket.accept() out of system resource" in result["reports"]
    assert result["answer"] == "ping"


def test_peer_vanishing_mid_write_reaches_connection_lost(child):
    """A peer that resets the connection while we write: connection_lost receives the
    error (a ConnectionError subclass), the transport is closing, the loop keeps running."""
    result = _run(child, "vanishing_peer.py", VANISHING_PEER_SCRIPT)
    assert result["lost_with"] in ("ConnectionResetError", "BrokenPipeError")
    assert result["closing"] is True


@pytest.mark.ferroloop_only
def test_abort_after_a_flushed_close_reports_the_loss_once(loop):
    """close() with data buffered, the buffer drains (connection_lost(None) runs), then
    abort(): nothing more happens (stock asyncio raises AttributeError here)."""

    async def scenario():
        lost = []

        class Recorder(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.append(exc)

        ours, peer = socket.socketpair()
        peer.setblocking(False)
        transport, _ = await loop.connect_accepted_socket(Recorder, ours)
        transport.write(b"x" * 4_000_000)
        transport.close()
        while transport.get_write_buffer_size():
            try:
                peer.recv(1 << 20)
            except BlockingIOError:
                pass
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        transport.abort()
        await asyncio.sleep(0.01)
        peer.close()
        return lost

    assert loop.run_until_complete(scenario()) == [None]
