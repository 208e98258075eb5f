"""pytest-asyncio tests (an async fixture, a marked test) that must run on ferroloop."""

import asyncio

import pytest
import pytest_asyncio


def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest_asyncio.fixture
async def echo_server():
    async def echo(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], _loop_module()
    server.close()
    await server.wait_closed()


@pytest.mark.asyncio
async def test_echo_on_ferroloop(echo_server):
    port, fixture_loop = echo_server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\n")
    line = await reader.readline()
    writer.close()
    assert line == b"ping\n"
    assert fixture_loop.startswith("ferroloop")
    assert _loop_module().startswith("ferroloop")
