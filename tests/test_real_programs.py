"""Real asyncio programs on ferroloop, over 127.0.0.1: uvicorn serving an ASGI app (with
``--loop ferroloop:new_event_loop``) and an aiohttp server talking to an aiohttp client,
over plain HTTP and over TLS.
scripts/test.sh installs both (the ``integration`` extra)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

pytestmark = pytest.mark.ferroloop_only

APP = textwrap.dedent(
    """
    import asyncio

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        loop = type(asyncio.get_running_loop())
        body = f"{scope['method']} {scope['path']} on {loop.__module__}.{loop.__name__}"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body.encode()})
    """
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, deadline: float) -> str:
    """GET with retries until the server is up (or the deadline passes)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_uvicorn_serves_http_on_ferroloop(tmp_path):
    """uvicorn answers real HTTP requests with ferroloop as its loop."""
    pytest.importorskip("uvicorn")
    (tmp_path / "asgi_app.py").write_text(APP)
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "asgi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "ferroloop:new_event_loop",
            "--log-level",
            "warning",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        first = _get(f"http://127.0.0.1:{port}/hello", deadline)
        second = _get(f"http://127.0.0.1:{port}/again?x=1", deadline)
    finally:
        server.terminate()
        out, err = server.communicate(timeout=20)
    assert first == "GET /hello on ferroloop._loop.EventLoop", err
    assert second == "GET /again on ferroloop._loop.EventLoop", err


def test_aiohttp_server_and_client_on_ferroloop():
    """An aiohttp server and an aiohttp client exchange requests, both on ferroloop."""
    pytest.importorskip("aiohttp")
    script = textwrap.dedent(
        """
        import asyncio, aiohttp, ferroloop
        from aiohttp import web

        async def main():
            app = web.Application()

            async def hello(request):
                data = await request.read()
                loop = type(asyncio.get_running_loop()).__name__
                return web.Response(text=f"{request.match_info['name']}:{len(data)}:{loop}")

            app.router.add_route("*", "/{name}", hello)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/a") as r:
                    print(r.status, await r.text())
                async with session.post(f"http://127.0.0.1:{port}/b", data=b"x" * 100000) as r:
                    print(r.status, await r.text())
            await runner.cleanup()

        ferroloop.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["200 a:0:EventLoop", "200 b:100000:EventLoop"]


def test_aiohttp_https_server_and_client_on_ferroloop():
    """aiohttp over TLS (server with a certificate, client verifying it), both on ferroloop:
    the standard library's TLS protocol over ferroloop's transports inside a real library."""
    pytest.importorskip("aiohttp")
    pytest.importorskip("test.test_asyncio.utils")
    script = textwrap.dedent(
        """
        import asyncio, ssl, aiohttp, ferroloop
        from aiohttp import web
        from test.test_asyncio import utils

        async def main():
            server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_context.load_cert_chain(utils.SIGNED_CERTFILE)
            client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client_context.load_verify_locations(utils.SIGNING_CA)

            async def hello(request):
                data = await request.read()
                return web.Response(text=f"{request.scheme}:{len(data)}")

            app = web.Application()
            app.router.add_route("*", "/", hello)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            url = f"https://localhost:{port}/"
            async with aiohttp.ClientSession() as session:
                async with session.get(url, ssl=client_context) as r:
                    print(r.status, await r.text())
                async with session.post(url, data=b"x" * 300000, ssl=client_context) as r:
                    print(r.status, await r.text())
                try:
                    await session.get(url)  # system CAs: the test CA is not trusted
                except aiohttp.ClientConnectorCertificateError:
                    print("verification refused")
            await runner.cleanup()

        ferroloop.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "200 https:0",
        "200 https:300000",
        "verification refused",
    ]
