"""Real servers for the downstream suites: PostgreSQL (asyncpg) and Redis (redis-py).

Both come from Debian's packages (``apt-get install -y postgresql redis-server``; installed by
``start`` when missing). Each server runs from a fresh temporary directory on a free loopback
port and is stopped (and its directory removed) when the suite ends. PostgreSQL refuses to run
as root: its cluster is made and run by the ``postgres`` user; the tests connect over TCP.
``start`` exports what the suites read (``PGHOST``/``PGPORT``/``PGUSER`` for asyncpg,
``FERROLOOP_REDIS_URL`` for redis-py's ``--redis-url``) and returns the function that stops it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _apt_install(*packages: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)


def _postgres_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if not found:
        _apt_install("postgresql")
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    return os.path.dirname(found[-1])


def _version_key(path: str) -> int:
    return int(path.split("/")[4])


def _as_postgres(*cmd: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


def _start_postgres() -> Callable[[], None]:
    bindir = _postgres_bin()
    home = tempfile.mkdtemp(prefix="ferroloop-pg-")
    os.chmod(home, 0o755)
    data = os.path.join(home, "data")
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres(f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        + ["--locale=C"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # asyncpg's suite uses prepared transactions and many connections
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c max_connections=200"
    options += " -c max_prepared_transactions=10 -c fsync=off"
    subprocess.run(
        _as_postgres(f"{bindir}/pg_ctl", "-D", data, "-o", options, "-l", f"{home}/log", "-w")
        + ["start"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    os.environ.update(PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="postgres")
    os.environ["PATH"] = f"{bindir}:{os.environ['PATH']}"  # asyncpg's pg_config look-ups

    def stop() -> None:
        subprocess.run(
            _as_postgres(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(home, ignore_errors=True)

    return stop


def _start_redis() -> Callable[[], None]:
    server = shutil.which("redis-server")
    if server is None:
        _apt_install("redis-server")
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
    home = tempfile.mkdtemp(prefix="ferroloop-redis-")
    port = _free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", home, "--enable-debug-command", "yes", "--daemonize", "no"],
        stdout=open(os.path.join(home, "log"), "w"),  # noqa: SIM115 (closed with the process)
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start: {open(home + '/log').read()}")
        time.sleep(0.1)
    os.environ["FERROLOOP_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)

    return stop


def start(kind: str) -> Callable[[], None]:
    """Starts the server ``kind`` ("postgres" or "redis"); returns the function that stops it."""
    return {"postgres": _start_postgres, "redis": _start_redis}[kind]()
