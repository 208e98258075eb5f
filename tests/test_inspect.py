"""``ferroloop.inspect_tasks()``, ``ferroloop.inspect_transports()``, the inspector socket
(``FERROLOOP_INSPECT=1`` / ``loop.serve_inspector()``) and ``python -m ferroloop ps|top PID``
(ferroloop only: stock asyncio has none of them)."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import support

pytestmark = pytest.mark.ferroloop_only


def test_three_level_await_chain(loop):
    import ferroloop

    seen: list = []
    inspecting: list = []
    gate = asyncio.Event()

    async def leaf():
        await gate.wait()  # LEAF-LINE

    async def middle():
        await asyncio.create_task(leaf(), name="leaf")

    async def root():
        await asyncio.create_task(middle(), name="middle")

    async def main():
        task = asyncio.create_task(root(), name="root")
        for _ in range(5):
            await asyncio.sleep(0)
        inspecting.append(id(asyncio.current_task()))
        seen.extend(ferroloop.inspect_tasks())
        gate.set()
        await task

    support.run(loop, main())
    by_name = {info["name"]: info for info in seen}
    assert set(by_name) >= {"root", "middle", "leaf"}
    leaf_info = by_name["leaf"]
    assert leaf_info["await_chain"] == ["leaf", "middle", "root"]
    assert by_name["middle"]["awaits"] == [leaf_info["id"]]
    assert leaf_info["awaited_by"] == [by_name["middle"]["id"]]
    assert by_name["root"]["awaits"] == [by_name["middle"]["id"]]
    assert leaf_info["state"] == "waiting" and leaf_info["coroutine"].endswith("leaf")
    line = next(
        number
        for number, text in enumerate(Path(__file__).read_text().splitlines(), 1)
        if "# LEAF-LINE" in text and "await gate" in text
    )
    assert leaf_info["stack"][0].endswith(f"({__file__}:{line})"), leaf_info["stack"]
    assert leaf_info["where"] is not None and leaf_info["where"].rsplit(":", 1)[1].isdigit()
    # The running task is the one that called inspect_tasks (its coroutine is main on 3.11 and
    # support.run's wrapper on 3.12+, where wait_for no longer makes a task of its own).
    current = [info["id"] for info in seen if info["state"] == "running"]
    assert current == inspecting


def test_gather_children_are_awaited_by_the_gatherer(loop):
    import ferroloop

    seen: list = []

    async def child():
        await asyncio.sleep(0.05)

    async def parent():
        await asyncio.gather(
            asyncio.create_task(child(), name="c1"), asyncio.create_task(child(), name="c2")
        )

    async def main():
        task = asyncio.create_task(parent(), name="parent")
        await asyncio.sleep(0.01)
        seen.extend(ferroloop.inspect_tasks())
        await task

    support.run(loop, main())
    by_name = {info["name"]: info for info in seen}
    assert by_name["c1"]["await_chain"] == ["c1", "parent"]
    assert sorted(by_name["parent"]["awaits"]) == sorted([by_name["c1"]["id"], by_name["c2"]["id"]])


def test_task_group_and_wait_parents_await_their_children(loop):
    import ferroloop

    seen: list = []
    gate = asyncio.Event()

    async def leaf():
        await gate.wait()

    async def group_parent():
        async with asyncio.TaskGroup() as group:
            group.create_task(leaf(), name="group-a")
            group.create_task(leaf(), name="group-b")

    async def wait_parent():
        children = [asyncio.create_task(leaf(), name=f"wait-{x}") for x in "ab"]
        await asyncio.wait(children)

    async def main():
        parents = [
            asyncio.create_task(group_parent(), name="group-parent"),
            asyncio.create_task(wait_parent(), name="wait-parent"),
        ]
        for _ in range(5):
            await asyncio.sleep(0)
        seen.extend(ferroloop.inspect_tasks())
        gate.set()
        await asyncio.gather(*parents)

    support.run(loop, main())
    by_name = {info["name"]: info for info in seen}
    for parent, children in [("group-parent", "group-"), ("wait-parent", "wait-")]:
        kids = [by_name[f"{children}{x}"] for x in "ab"]
        assert sorted(by_name[parent]["awaits"]) == sorted(k["id"] for k in kids), parent
        for kid in kids:
            assert kid["awaited_by"] == [by_name[parent]["id"]]
            assert kid["await_chain"][:2] == [kid["name"], parent]


def test_task_age_is_known_while_the_inspector_serves(loop):
    import ferroloop

    seen: list = []
    before_serving: list = []

    async def idle():
        await asyncio.sleep(10)

    async def main():
        early = asyncio.create_task(idle(), name="early")
        loop.serve_inspector()
        late = asyncio.create_task(idle(), name="late")
        await asyncio.sleep(0.2)
        newer = asyncio.create_task(idle(), name="newer")
        await asyncio.sleep(0)
        seen.extend(ferroloop.inspect_tasks())
        for task in (early, late, newer):
            task.cancel()
        await asyncio.gather(early, late, newer, return_exceptions=True)

    before_serving.extend(ferroloop.inspect_tasks(loop))
    support.run(loop, main())
    ages = {info["name"]: info["age"] for info in seen}
    assert ages["early"] is None  # made before the inspector served
    assert 0.15 <= ages["late"] < 5.0, ages
    assert 0.0 <= ages["newer"] < 0.15, ages
    assert before_serving == []


def test_task_cpu_is_counted_while_the_inspector_serves(loop):
    import ferroloop

    seen: list = []
    unserved: list = []

    gate = asyncio.Event()

    async def busy():
        for _ in range(6):
            time.sleep(0.03)  # blocks the loop: 0.18 s of run time over 6 steps
            await asyncio.sleep(0)
        await gate.wait()

    async def idle():
        await gate.wait()

    async def main():
        unserved.extend(ferroloop.inspect_tasks())
        loop.serve_inspector()
        tasks = [
            asyncio.create_task(busy(), name="busy"),
            asyncio.create_task(idle(), name="idle"),
        ]
        await asyncio.sleep(0.25)
        seen.extend(ferroloop.inspect_tasks())
        gate.set()
        await asyncio.gather(*tasks)

    support.run(loop, main())
    cpu = {info["name"]: info["cpu"] for info in seen}
    assert 0.15 <= cpu["busy"] < 1.0, cpu
    assert cpu["idle"] < 0.02, cpu
    assert all(info["cpu"] is None for info in unserved)


TOP_CHILD = """
    import asyncio, time

    async def busy():
        while True:
            time.sleep(0.005)
            await asyncio.sleep(0.005)

    async def main():
        tasks = [asyncio.create_task(busy(), name="spinner")]
        tasks += [asyncio.create_task(asyncio.sleep(3600), name=f"idle-{i}") for i in range(20)]
        print("ready", flush=True)
        await asyncio.gather(*tasks)

    asyncio.run(main())
"""


def test_top_ranks_tasks_by_cpu(child):
    script = child.script("spin.py", TOP_CHILD)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferroloop", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child.env(FERROLOOP_INSPECT="1"),
    )
    try:
        assert proc.stdout.readline().startswith("ready")
        result = _cli("top", str(proc.pid), "-n", "2", "-i", "0.5")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert result.returncode == 0, result.stderr
    last = result.stdout.rsplit("TASKS (", 1)[1].splitlines()
    assert last[0].startswith("22, busiest 15 by CPU"), last[0]
    assert last[1].split()[:3] == ["NAME", "STATE", "CPU"], last[1]
    assert last[2].startswith("spinner "), last[:4]
    share = float(last[2].split()[2].rstrip("%"))
    assert share >= 10.0, last[2]
    assert all(" 0.0% " in row for row in last[3:8]), last[3:8]


def test_transports_report_bytes_and_flow_control(loop):
    import ferroloop

    a, b = socket.socketpair()
    seen: list = []

    class Sink(asyncio.Protocol):
        def data_received(self, data):
            pass

    async def main():
        ta, _ = await loop.create_connection(Sink, sock=a)
        tb, _ = await loop.create_connection(Sink, sock=b)
        ta.write(b"x" * 1000)
        tb.write(b"y" * 10)
        await asyncio.sleep(0.05)
        tb.pause_reading()
        seen.extend(ferroloop.inspect_transports())
        ta.close()
        tb.close()
        await asyncio.sleep(0)

    support.run(loop, main())
    by_fd = {info["fd"]: info for info in seen}
    assert set(by_fd) == {a.fileno(), b.fileno()} or len(seen) == 2
    ia = next(info for info in seen if info["bytes_out"] == 1000)
    ib = next(info for info in seen if info["bytes_out"] == 10)
    assert (ia["bytes_in"], ib["bytes_in"]) == (10, 1000)
    assert ia["kind"] == ib["kind"] == "unix"
    assert ib["reading_paused"] and not ia["reading_paused"]
    assert not ia["writing_paused"] and ia["write_buffered"] == 0
    assert ia["protocol"] == "Sink"


def test_datagram_and_pipe_transports_count_bytes(loop):
    import ferroloop

    seen: list = []
    pipe_counts: list = []
    read_end, write_end = os.pipe()

    class Sink(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = 0

        def datagram_received(self, data, addr):
            self.got += len(data)

    async def main():
        server, sink = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
        port = server.get_extra_info("sockname")[1]
        client, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port)
        )
        for size in (100, 200, 300):
            client.sendto(b"d" * size)
        reader = asyncio.StreamReader()
        pipe_in, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb", 0)
        )
        pipe_out, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(write_end, "wb", 0))
        pipe_out.write(b"p" * 4000)
        await reader.readexactly(4000)
        for _ in range(50):
            if sink.got == 600:
                break
            await asyncio.sleep(0.01)
        seen.extend(ferroloop.inspect_transports())
        pipe_counts.extend([pipe_in._io_counts(), pipe_out._io_counts()])
        for transport in (server, client, pipe_in, pipe_out):
            transport.close()
        await asyncio.sleep(0)

    support.run(loop, main())
    by_kind: dict = {}
    for info in seen:
        by_kind.setdefault(info["kind"], []).append(info)
    udp = sorted(by_kind["udp"], key=lambda info: info["bytes_in"])
    assert [(u["bytes_in"], u["bytes_out"]) for u in udp] == [(0, 600), (600, 0)]
    # Pipe transports are listed too (outside the loop's transport registry: asyncio's
    # add_reader accepts their descriptors).
    assert [(p["bytes_in"], p["bytes_out"]) for p in by_kind["pipe-read"]] == [(4000, None)]
    assert [(p["bytes_in"], p["bytes_out"]) for p in by_kind["pipe-write"]] == [(None, 4000)]
    assert pipe_counts == [(4000, 0, False), (0, 4000, False)]


def test_pipe_transports_are_listed(loop):
    import ferroloop

    seen: dict = {}
    counted: dict = {}
    read_end, write_end = os.pipe()
    stuck_read, stuck_write = os.pipe()

    class Sink(asyncio.Protocol):
        def __init__(self):
            self.got = 0

        def data_received(self, data):
            self.got += len(data)

    class Paused(asyncio.Protocol):
        paused = False

        def pause_writing(self):
            self.paused = True

    async def main():
        counted["before"] = loop.stats()["transports"]
        pipe_in, sink = await loop.connect_read_pipe(Sink, os.fdopen(read_end, "rb", 0))
        pipe_out, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(write_end, "wb", 0))
        pipe_out.write(b"p" * 3000)
        for _ in range(100):
            if sink.got == 3000:
                break
            await asyncio.sleep(0.01)
        pipe_in.pause_reading()
        # Nobody reads this one: a large write stays buffered and pauses the protocol.
        stuck, stuck_protocol = await loop.connect_write_pipe(
            Paused, os.fdopen(stuck_write, "wb", 0)
        )
        stuck.write(b"s" * (4 * 1024 * 1024))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; sys.stdout.write(sys.stdin.read(5)); sys.stdout.flush(); sys.stdin.read()",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        proc.stdin.write(b"hello")
        echoed = await proc.stdout.readexactly(5)
        seen["listed"] = ferroloop.inspect_transports()
        seen["ids"] = {
            "in": pipe_in._fileno,
            "out": pipe_out._fileno,
            "stuck": stuck._fileno,
            "child_in": proc._transport.get_pipe_transport(0)._fileno,
            "child_out": proc._transport.get_pipe_transport(1)._fileno,
        }
        seen["paused"] = stuck_protocol.paused
        seen["echoed"] = echoed
        counted["open"] = loop.stats()["transports"]
        proc.stdin.close()
        await proc.wait()
        for transport in (pipe_in, pipe_out, stuck):
            transport.close()
        await asyncio.sleep(0)
        seen["after"] = [t for t in ferroloop.inspect_transports() if t["kind"].startswith("pipe")]
        counted["after"] = loop.stats()["transports"]

    try:
        support.run(loop, main())
    finally:
        os.close(stuck_read)
    ids = seen["ids"]
    by_fd = {info["fd"]: info for info in seen["listed"]}
    assert set(ids.values()) <= set(by_fd), (ids, seen["listed"])
    fds = [info["fd"] for info in seen["listed"]]
    assert fds == sorted(fds)
    reader, writer, stuck = by_fd[ids["in"]], by_fd[ids["out"]], by_fd[ids["stuck"]]
    assert (reader["kind"], reader["protocol"]) == ("pipe-read", "Sink")
    assert (reader["bytes_in"], reader["bytes_out"], reader["reading_paused"]) == (3000, None, True)
    assert reader["local"] is reader["peer"] is None and not reader["tls"]
    assert (writer["kind"], writer["bytes_in"], writer["bytes_out"]) == ("pipe-write", None, 3000)
    assert not writer["writing_paused"] and writer["write_buffered"] == 0
    assert seen["paused"] and stuck["writing_paused"]
    assert stuck["write_buffered"] > 0
    assert stuck["bytes_out"] + stuck["write_buffered"] == 4 * 1024 * 1024
    assert seen["echoed"] == b"hello"
    assert by_fd[ids["child_in"]]["kind"] == "pipe-write"
    assert by_fd[ids["child_in"]]["bytes_out"] == 5
    assert by_fd[ids["child_out"]]["kind"] == "pipe-read"
    assert by_fd[ids["child_out"]]["bytes_in"] == 5
    assert counted["open"] - counted["before"] == 5
    assert seen["after"] == [] and counted["after"] == counted["before"]


def test_tls_transport_shows_application_bytes(loop):
    import ssl

    import ferroloop

    try:
        from test.test_asyncio import utils as cpython_test_utils
    except ImportError:  # pragma: no cover - an interpreter without its test package
        pytest.skip("needs CPython's test package for its certificates")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cpython_test_utils.SIGNED_CERTFILE)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cpython_test_utils.SIGNING_CA)
    seen: list = []
    got: dict = {"copied": 0, "buffered": 0}
    done = {}

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    class Copied(asyncio.Protocol):
        def data_received(self, data):
            got["copied"] += len(data)
            if got["copied"] == 7000:
                done["copied"].set_result(None)

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buffer = bytearray(1000)

        def get_buffer(self, sizehint):
            return self.buffer

        def buffer_updated(self, nbytes):
            got["buffered"] += nbytes
            if got["buffered"] == 5000:
                done["buffered"].set_result(None)

    async def main():
        done["copied"] = loop.create_future()
        done["buffered"] = loop.create_future()
        server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        copied, _ = await loop.create_connection(
            Copied, "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        buffered, _ = await loop.create_connection(
            Buffered, "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        copied.write(b"a" * 3000)
        copied.writelines([b"b" * 1000, bytearray(b"c" * 2000), memoryview(b"d" * 1000)])
        buffered.write(b"e" * 5000)
        await asyncio.wait_for(asyncio.gather(done["copied"], done["buffered"]), 5)
        seen.extend(ferroloop.inspect_transports())
        seen.append(
            {"ports": (copied.get_extra_info("sockname"), buffered.get_extra_info("sockname"))}
        )
        copied.close()
        buffered.close()
        server.close()
        await asyncio.sleep(0.05)

    support.run(loop, main())
    copied_port, buffered_port = (address[1] for address in seen.pop()["ports"])
    rows = [info for info in seen if info["tls"]]
    assert len(rows) == 4, seen
    assert all(info["kind"] == "tcp" for info in rows)
    by_local = {info["local"]: info for info in rows}
    client = by_local[f"127.0.0.1:{copied_port}"]
    assert (client["protocol"], client["bytes_in"], client["bytes_out"]) == ("Copied", 7000, 7000)
    assert client["wire_bytes_out"] > 7000 and client["wire_bytes_in"] > 7000
    assert client["write_buffered"] == 0
    assert not client["reading_paused"] and not client["writing_paused"]
    client_b = by_local[f"127.0.0.1:{buffered_port}"]
    assert (client_b["protocol"], client_b["bytes_in"], client_b["bytes_out"]) == (
        "Buffered",
        5000,
        5000,
    )
    servers = sorted(
        (info["bytes_in"], info["bytes_out"]) for info in rows if info["protocol"] == "Echo"
    )
    assert servers == [(5000, 5000), (7000, 7000)]
    plain = [info for info in seen if not info["tls"]]
    assert all(info["wire_bytes_in"] is None for info in plain)


CHILD = """
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def client(port, ready):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        await reader.readexactly(5)
        ready.append(writer)
        await asyncio.sleep(3600)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ready = []
        clients = [
            asyncio.create_task(client(port, ready), name=f"client-{i}") for i in range(100)
        ]
        while len(ready) < 100:
            await asyncio.sleep(0.01)
        print("ready", port, flush=True)
        await asyncio.gather(*clients)

    asyncio.run(main())
"""


@pytest.fixture
def serving_child(child):
    """A child serving 100 echo connections to itself, with FERROLOOP_INSPECT=1."""
    script = child.script("serve100.py", CHILD)
    env = child.env(FERROLOOP_INSPECT="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferroloop", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready"), (line, proc.stderr.read() if proc.poll() else "")
        yield proc, int(line.split()[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    env = support_env()
    return subprocess.run(
        [sys.executable, "-m", "ferroloop", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def support_env() -> dict[str, str]:
    """Our environment (the child imports the ferroloop we import), without the opt-in."""
    env = dict(os.environ)
    env.pop("FERROLOOP_INSPECT", None)
    return env


def test_ps_shows_the_tasks_and_connections(serving_child):
    proc, port = serving_child
    result = _cli("ps", str(proc.pid))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"process {proc.pid}: 101 tasks" in out
    assert "TASKS (101)" in out and "TRANSPORTS (200)" in out
    for i in range(100):
        assert f"client-{i} " in out
    assert "client-7 <- Task-1" in out
    # The clients were made while the inspector served: their age is known.
    assert " AGE " in out.splitlines()[3]
    client_rows = [line for line in out.splitlines() if line.startswith("client-")]
    assert client_rows and all(re.search(r" \d+\.\ds ", row) for row in client_rows)
    rows = [line for line in out.splitlines() if f"127.0.0.1:{port}" in line]
    assert len(rows) == 200  # 100 client ends (peer = port), 100 server ends (local = port)
    assert sum("Echo" in row for row in rows) == 100
    assert all(" 5B " in row for row in rows)  # 5 bytes in, 5 out


def test_top_refreshes_until_interrupted_or_the_process_ends(serving_child):
    proc, port = serving_child
    result = _cli("top", str(proc.pid), "-n", "2", "-i", "0.2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"process {proc.pid}: 101 tasks") == 2
    assert "callbacks/s" in result.stdout and "busiest 15" in result.stdout

    # Ctrl+C: a clean exit.
    top = subprocess.Popen(
        [sys.executable, "-m", "ferroloop", "top", str(proc.pid), "-i", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=support_env(),
    )
    first = top.stdout.readline()  # connected and drawing
    time.sleep(0.5)
    top.send_signal(signal.SIGINT)
    out, err = top.communicate(timeout=10)
    assert top.returncode == 0, err
    assert "Traceback" not in err and f"process {proc.pid}" in first + out

    # The process ends: top says so and exits cleanly.
    top = subprocess.Popen(
        [sys.executable, "-m", "ferroloop", "top", str(proc.pid), "-i", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=support_env(),
    )
    top.stdout.readline()  # connected and drawing
    proc.kill()
    out, err = top.communicate(timeout=10)
    assert top.returncode == 0, err
    assert f"process {proc.pid} ended" in out


def test_socket_is_private_and_removed_at_close(new_loop, tmp_path):
    from ferroloop import _inspector

    loop = new_loop()
    path = loop.serve_inspector()
    assert loop.serve_inspector() == path
    assert path == _inspector.socket_path(os.getpid())
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    directory = os.path.dirname(path)
    if directory != os.environ.get("XDG_RUNTIME_DIR"):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700

    async def ask():
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"stats\n")
        line = await reader.readline()
        writer.close()
        return line

    import json

    reply = json.loads(support.run(loop, ask()))
    assert reply["pid"] == os.getpid() and reply["stats"]["transports"] >= 1
    loop.close()
    assert not os.path.exists(path)


@pytest.mark.skipif(os.getuid() != 0, reason="switching users needs root")
def test_another_user_is_refused(serving_child):
    proc, _ = serving_child
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    from ferroloop import _inspector

    path = _inspector.socket_path(proc.pid)
    assert os.path.exists(path)
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({path!r}); s.sendall(b'stats\\n'); print('ANSWER', s.recv(100))\n"
        "except OSError as exc:\n"
        "    print('REFUSED', type(exc).__name__)\n"
    )
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    result = subprocess.run(
        [python, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )
    assert "REFUSED" in result.stdout, (result.stdout, result.stderr)
    assert "ANSWER" not in result.stdout


def test_no_opt_in_no_socket(child):
    script = child.script(
        "plain.py",
        """
        import asyncio, os
        async def main():
            await asyncio.sleep(0.05)
            print(os.getpid())
        asyncio.run(main())
        """,
    )
    env = child.env(FERROLOOP_INSPECT=None)
    result = subprocess.run(
        [sys.executable, "-m", "ferroloop", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    from ferroloop import _inspector

    assert not os.path.exists(_inspector.socket_path(int(result.stdout.strip())))
    answer = _cli("ps", str(os.getpid()))
    assert answer.returncode == 1 and "serves no ferroloop inspector" in answer.stderr
