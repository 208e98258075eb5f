"""Tests of the benchmark suite's own logic (run: python3 -m pytest bench/tests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys

import pytest

from callgrind_tls import by_object
from loops import parse_loop_list, parse_loop_spec
from native_echo import NATIVE_LABEL, prepare_native_echo
from report import NOT_APPLICABLE, format_factor, format_value, render_markdown, render_text
from run import BENCH_DIRECTORY, REFERENCE_LABELS, disturbance_share, not_applicable_pairs
from stats import improvement_factor, summarise
from workloads import Metric, Workload, WorkloadUnavailable, discover_workloads, select_workloads
from workloads.http_keepalive import BAD_REQUEST, parse_requests, parse_wrk_output
from workloads.sock_echo import client_command as sock_client_command
from workloads.sock_echo import parse_client_output, require_socket_methods
from workloads.transport_echo import client_command, require_methods


def test_improvement_factor_is_above_one_when_better_in_both_directions() -> None:
    assert improvement_factor(200.0, 100.0, higher_is_better=True) == 2.0
    assert improvement_factor(50.0, 100.0, higher_is_better=False) == 2.0
    assert math.isnan(improvement_factor(-1.0, 100.0, higher_is_better=False))


def test_factors_pair_repetitions_and_take_the_median() -> None:
    values = {
        ("w", "rate", "asyncio"): {1: 100.0, 2: 200.0, 3: 100.0},
        ("w", "rate", "fast"): {1: 300.0, 2: 400.0, 3: 500.0},
    }
    summaries = summarise(values, {("w", "rate"): True}, ["asyncio", "fast"], ["asyncio"])
    fast = next(s for s in summaries if s.loop_label == "fast")
    # per-repetition factors 3, 2, 5 -> median 3 (not 400 / 100 = 4 from the medians)
    assert fast.factors["asyncio"].median == 3.0
    assert (fast.factors["asyncio"].minimum, fast.factors["asyncio"].maximum) == (2.0, 5.0)
    assert "asyncio" not in next(s for s in summaries if s.loop_label == "asyncio").factors


def test_factors_skip_repetitions_missing_on_either_side() -> None:
    values = {
        ("w", "rate", "asyncio"): {1: 100.0, 3: 100.0},
        ("w", "rate", "fast"): {1: 200.0, 2: 900.0},
    }
    summaries = summarise(values, {("w", "rate"): True}, ["asyncio", "fast"], ["asyncio"])
    fast = next(s for s in summaries if s.loop_label == "fast")
    assert fast.factors["asyncio"].count == 1
    assert fast.factors["asyncio"].median == 2.0


def test_loop_specs() -> None:
    assert parse_loop_spec("uvloop").target == "uvloop:new_event_loop"
    custom = parse_loop_spec("mine=pkg.mod:make.loop")
    assert (custom.label, custom.module, custom.factory) == ("mine", "pkg.mod", "make.loop")
    assert parse_loop_spec("ferroloop:new_event_loop").label == "ferroloop:new_event_loop"
    with pytest.raises(ValueError):
        parse_loop_spec("not-a-known-loop")
    with pytest.raises(ValueError):
        parse_loop_list("asyncio,asyncio")


def test_value_formatting() -> None:
    assert format_value(999_960.0, "") == "1.00M"
    assert format_value(1_700.0, "µs") == "1.70 ms"
    assert format_value(-383.2, "µs") == "-383 µs"
    assert format_factor(12.34) == "×12.3"
    assert format_factor(float("nan")) == "n/a"


def test_workload_selection_by_name_and_prefix() -> None:
    registry = discover_workloads()
    assert {"callbacks.chain", "tasks.gather", "timers.burst"} <= set(registry)
    names = [w.name for w in select_workloads(registry, "timers,callbacks.batch")]
    assert names == ["callbacks.batch", "timers.burst", "timers.lateness"]
    with pytest.raises(KeyError):
        select_workloads(registry, "nope")


def test_disturbance_prefers_run_queue_wait() -> None:
    workload = Workload("w", "", (), run=lambda loop, scale: {})
    assert disturbance_share({"wall_s": 1.0, "run_delay_s": 0.2}, workload) == 0.2
    fallback = {"wall_s": 1.0, "run_delay_s": None, "user_cpu_s": 0.7, "system_cpu_s": 0.1}
    assert disturbance_share(fallback, workload) == pytest.approx(0.2)
    footprint = Workload("m", "", (), run=lambda loop, scale: {}, timing_sensitive=False)
    assert disturbance_share({"wall_s": 1.0, "run_delay_s": 0.9}, footprint) is None


@pytest.mark.parametrize("name", sorted(discover_workloads()))
def test_every_workload_reports_its_metrics_on_stock_asyncio(name: str) -> None:
    workload = discover_workloads()[name]
    reason = workload.unavailable_reason()
    if reason:
        pytest.skip(reason)
    loop = asyncio.new_event_loop()
    try:
        result = workload.run(loop, 0.01)
    except WorkloadUnavailable as error:  # e.g. services.* outside a run that started the servers
        pytest.skip(str(error))
    finally:
        loop.close()
    for metric in workload.metrics:
        assert math.isfinite(result[metric.key]), metric.key


def test_run_end_to_end_with_an_unavailable_loop(tmp_path) -> None:
    output = tmp_path / "run.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCH_DIRECTORY / "run.py"),
            "--loops",
            "asyncio,missing=no_such_module:new_event_loop",
            "--workloads",
            "callbacks.chain",
            "--repeat",
            "3",
            "--scale",
            "0.01",
            "--json",
            str(output),
            "--md",
            str(tmp_path / "run.md"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    document = json.loads(output.read_text())
    assert [loop["available"] for loop in document["loops"]] == [True, False]
    assert [m["rep"] for m in document["measurements"]] == [1, 2, 3]
    assert all(m["ok"] for m in document["measurements"])
    assert "missing: unavailable" in completed.stdout
    assert "| callbacks.chain |" in (tmp_path / "run.md").read_text()


def test_sock_echo_needs_the_socket_methods() -> None:
    stock_loop = asyncio.SelectorEventLoop()
    try:
        require_socket_methods(stock_loop)  # nothing missing
    finally:
        stock_loop.close()
    with pytest.raises(WorkloadUnavailable, match="sock_accept, sock_recv, sock_sendall"):
        require_socket_methods(asyncio.AbstractEventLoop())
    assert parse_client_output('noise\n@@CLIENT {"rps": 5.0}\n') == {"rps": 5.0}
    assert parse_client_output("") == {}


def test_sock_echo_client_command_is_loadgen_when_set(monkeypatch) -> None:
    monkeypatch.delenv("BENCH_LOADGEN", raising=False)
    name, command = sock_client_command(("127.0.0.1", 9), 1024, 0.5, 2.0)
    assert name == "echo_client.py" and command[1].endswith("echo_client.py")
    options = ["echo", "--addr", "127.0.0.1:9", "--conns", "10", "--size", "1024"]
    assert command[2:] == [*options, "--warmup", "0.5", "--duration", "2.0"]
    monkeypatch.setenv("BENCH_LOADGEN", "/nonexistent/loadgen")
    name, command = sock_client_command(("127.0.0.1", 9), 1024, 0.5, 2.0)
    assert name == "loadgen" and command[0] == "/nonexistent/loadgen"
    assert command[1:] == [*options, "--warmup", "0.5", "--duration", "2.0"]


def test_a_loop_without_sock_methods_is_unavailable_not_failed(tmp_path) -> None:
    # asyncio's BaseEventLoop can be created but leaves sock_* to AbstractEventLoop's stubs.
    output = tmp_path / "run.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCH_DIRECTORY / "run.py"),
            "--loops",
            "asyncio,stub=asyncio.base_events:BaseEventLoop",
            "--workloads",
            "sock_echo.1k",
            "--repeat",
            "3",
            "--scale",
            "0.01",
            "--json",
            str(output),
            "--md",
            str(tmp_path / "run.md"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    document = json.loads(output.read_text())
    stub = [m for m in document["measurements"] if m["loop"] == "stub"]
    assert len(stub) == 1  # found unavailable in repetition 1, not tried again
    assert "does not implement" in stub[0]["unavailable"]
    assert [m["ok"] for m in document["measurements"] if m["loop"] == "asyncio"] == [True] * 3
    assert "sock_echo.1k on stub: unavailable" in completed.stdout
    assert "- sock_echo.1k on stub: unavailable" in (tmp_path / "run.md").read_text()


def test_transport_echo_needs_its_api_and_builds_client_commands() -> None:
    stock_loop = asyncio.SelectorEventLoop()
    try:
        for kind in ("tcp", "streams", "unix", "udp"):
            require_methods(stock_loop, kind)  # nothing missing
    finally:
        stock_loop.close()
    with pytest.raises(WorkloadUnavailable, match="create_datagram_endpoint"):
        require_methods(asyncio.AbstractEventLoop(), "udp")
    _, unix = client_command("unix", "/tmp/x.sock", 1024, 0.5, 2.0)
    assert unix[unix.index("--family") + 1] == "unix"
    _, udp = client_command("udp", ("127.0.0.1", 9), 1024, 0.5, 2.0)
    assert "udp" in udp and "--udp-timeout" in udp


def test_tls_echo_uses_the_python_tls_client_even_with_loadgen(monkeypatch) -> None:
    monkeypatch.setenv("BENCH_LOADGEN", "/nonexistent/loadgen")
    name, command = client_command("tls", ("127.0.0.1", 9), 1024, 0.5, 2.0, "/tmp/ca.pem")
    assert name == "echo_client.py" and command[1].endswith("echo_client.py")
    assert command[command.index("--tls-ca") + 1] == "/tmp/ca.pem"
    assert command[command.index("--tls-server-name") + 1] == "localhost"
    name, _ = client_command("streams", ("127.0.0.1", 9), 1024, 0.5, 2.0)
    assert name == "loadgen"


class NoTlsLoop(asyncio.SelectorEventLoop):
    """A loop like rloop 0.5.0: create_server(ssl=...) raises a bare NotImplementedError."""

    async def create_server(self, *args, ssl=None, **kwargs):  # noqa: D102
        if ssl is not None:
            raise NotImplementedError
        return await super().create_server(*args, **kwargs)


class NoSubprocessLoop(asyncio.SelectorEventLoop):
    """A loop like zloop 0.0.1: no child processes."""

    async def subprocess_exec(self, *args, **kwargs):  # noqa: D102
        raise NotImplementedError("subprocesses are not supported")


@pytest.mark.parametrize("name", ["transport_echo.tls_1k", "transport_echo.tls_64k"])
def test_a_loop_without_tls_is_unavailable_not_failed(name: str) -> None:
    loop = NoTlsLoop()
    try:
        with pytest.raises(WorkloadUnavailable, match=r"NoTlsLoop has no TLS: start_server\(ssl"):
            discover_workloads()[name].run(loop, 0.01)
    finally:
        loop.close()


@pytest.mark.parametrize("name", ["processes.spawn_true", "processes.cat_100mb"])
def test_a_loop_without_subprocesses_is_unavailable_not_failed(name: str) -> None:
    loop = NoSubprocessLoop()
    try:
        with pytest.raises(
            WorkloadUnavailable, match=r"no subprocess support.*subprocesses are not supported"
        ):
            discover_workloads()[name].run(loop, 0.01)
    finally:
        loop.close()


def test_list_shows_every_workload_aligned() -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCH_DIRECTORY / "run.py"), "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = completed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(discover_workloads())
    names = {line.split()[0] for line in lines}
    assert {"transport_echo.tls_1k", "transport_echo.tls_64k"} <= names
    width = max(len(name) for name in discover_workloads())
    assert all(line[width : width + 2] == "  " and line[width + 2] != " " for line in lines)


def test_echo_client_options() -> None:
    import echo_client

    udp = echo_client.parse_arguments(["udp", "--addr", "127.0.0.1:9", "--size", "64"])
    assert (udp.mode, udp.addr) == ("udp", ("127.0.0.1", 9))
    unix = echo_client.parse_arguments(["echo", "--family", "unix", "--addr", "/tmp/e.sock"])
    assert unix.addr == "/tmp/e.sock"
    with pytest.raises(SystemExit):
        echo_client.parse_arguments(["udp", "--family", "unix", "--addr", "/tmp/e.sock"])
    with pytest.raises(SystemExit):
        echo_client.parse_arguments(["echo", "--addr", "192.0.2.1:9"])
    tls = echo_client.parse_arguments(["echo", "--addr", "127.0.0.1:9", "--tls-ca", "ca.pem"])
    assert (tls.tls_ca, tls.tls_server_name) == ("ca.pem", "localhost")
    for mode in (["udp"], ["echo", "--family", "unix"]):
        with pytest.raises(SystemExit):
            echo_client.parse_arguments([*mode, "--addr", "127.0.0.1:9", "--tls-ca", "ca.pem"])


def test_http_parser_answers_complete_heads_and_honours_connection_close() -> None:
    get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert parse_requests(get) == (1, len(get), None)
    assert parse_requests(get * 3 + get[:10]) == (3, 3 * len(get), None)  # pipelined + partial
    assert parse_requests(b"GET / HTTP/1.1\r\n") == (0, 0, None)
    closing = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"
    assert parse_requests(get + closing + get) == (2, len(get + closing), b"")
    assert parse_requests(b"GET / HTTP/1.0\r\n\r\n")[2] == b""
    assert parse_requests(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")[2] is None
    assert parse_requests(b"nonsense\r\n\r\n")[2] == BAD_REQUEST


def test_wrk_output_parsing() -> None:
    output = """Running 5s test @ http://127.0.0.1:4242/
  1 threads and 50 connections
  Latency Distribution
     50%  327.00us
     75%  400.00us
     90%  600.00us
     99%    1.20ms
  644950 requests in 5.10s, 59.05MB read
  Socket errors: connect 0, read 2, write 0, timeout 0
Requests/sec: 126460.78
Transfer/sec:     11.58MB
"""
    result = parse_wrk_output(output)
    assert result["requests_per_s"] == 126460.78
    assert result["requests"] == 644950 and result["duration_s"] == pytest.approx(5.1)
    assert (result["latency_p50_us"], result["latency_p99_us"]) == (327.0, 1200.0)
    assert result["socket_errors_read"] == 2 and result["non_2xx"] == 0


def test_native_pseudo_loop_is_a_reference_and_dash_where_not_applicable() -> None:
    rate = Metric("rate", "rate")
    echo = Workload("echo", "", (rate,), run=lambda loop, scale: {}, native=lambda b, s: ({}, {}))
    other = Workload("other", "", (rate,), run=lambda loop, scale: {})
    labels = ["asyncio", "ferroloop", NATIVE_LABEL]
    assert NATIVE_LABEL in REFERENCE_LABELS
    not_applicable = not_applicable_pairs([echo, other], labels)
    assert not_applicable == {("other", NATIVE_LABEL)}
    values = {
        ("echo", "rate", "asyncio"): {1: 1.0},
        ("echo", "rate", "ferroloop"): {1: 2.0},
        ("echo", "rate", NATIVE_LABEL): {1: 4.0},
        ("other", "rate", "asyncio"): {1: 1.0},
        ("other", "rate", "ferroloop"): {1: 3.0},
    }
    summaries = summarise(
        values, {("echo", "rate"): True, ("other", "rate"): True}, labels, REFERENCE_LABELS
    )
    meta = {"command": "x", "started": "s", "finished": "f", "machine": "m", "repeat": 1}
    meta["malloc"] = "pinned"
    loops = [
        {"label": "asyncio", "target": "a"},
        {"label": "ferroloop", "target": "f"},
        {"label": NATIVE_LABEL, "target": "n", "pseudo_loop": True},
    ]
    markdown = render_markdown(
        meta, loops, [echo, other], labels, REFERENCE_LABELS, summaries, {}, not_applicable
    )
    assert "| ferroloop vs native |" in markdown
    assert "| echo | rate ↑ | 1.00 | 2.00 ×2.00 | 4.00 ×4.00 | ×0.50 [0.50–0.50] |" in markdown
    assert (
        f"| other | rate ↑ | 1.00 | 3.00 ×3.00 | {NOT_APPLICABLE} | {NOT_APPLICABLE} |" in markdown
    )
    assert "| other | rate ↑ | native |" not in markdown  # no detail row
    text = render_text(
        [echo, other], labels, REFERENCE_LABELS, summaries, {}, not_applicable, {"w": "why"}
    )
    assert "w: skipped (why)" in text


def test_native_echo_missing_is_unavailable(tmp_path) -> None:
    native = prepare_native_echo(str(tmp_path / "nowhere"), lambda line: None)
    entry = native.loop_entry()
    assert not entry["available"] and "no native-echo sources" in entry["reason"]


def test_native_echo_floor_measures_when_it_can_be_built() -> None:
    native = prepare_native_echo("auto", lambda line: None)
    if not native.binary:
        pytest.skip(native.reason)
    workload = discover_workloads()["transport_echo.tcp_1k"]
    metrics, costs = workload.native(native.binary, 0.01)
    assert metrics["requests_per_s"] > 0 and metrics["server_cpu_us_per_request"] > 0
    assert costs["max_rss_kib"] > 0 and costs["wall_s"] > 0
    assert discover_workloads()["callbacks.chain"].native is None


def test_chart_reads_ferroloop_factors_and_draws_a_png(tmp_path) -> None:
    from chart import collect_rows, draw

    def cell(loop, factors):
        spreads = {ref: {"median": f, "min": f * 0.9, "max": f * 1.1, "n": 3} for ref, f in factors}
        return {
            "workload": "w.one",
            "metric": "rate",
            "loop": loop,
            "improvement_factor_vs": spreads,
        }

    document = {
        "meta": {"started": "2026-12-03T07:00:00"},
        "workloads": [
            {
                "name": "w.one",
                "metrics": [{"key": "rate", "label": "ops/s", "higher_is_better": True}],
            }
        ],
        "summary": [
            cell("uvloop", [("asyncio", 1.5)]),
            cell("ferroloop", [("asyncio", 2.0), ("uvloop", 1.25), ("rloop", 0.8)]),
        ],
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    rows, dates = collect_rows([str(path)])
    assert [(row.workload, row.metric_label) for row in rows] == [("w.one", "ops/s ↑")]
    assert {ref: f[0] for ref, f in rows[0].factors.items()} == {
        "asyncio": 2.0,
        "uvloop": 1.25,
        "rloop": 0.8,
    }
    assert dates == ["2026-12-03"]
    pytest.importorskip("matplotlib")
    draw(rows, dates, str(tmp_path / "chart.png"))
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("source", ["cpython-tests", "openssl-req"])
def test_tls_certificates_verify_for_localhost(source: str, tmp_path) -> None:
    import ssl

    from workloads import _tls

    if source == "cpython-tests":
        found = _tls.cpython_test_certificates()
    else:
        found = _tls.self_signed_certificate(str(tmp_path))
    if found is None:
        pytest.skip(f"no {source} certificate on this machine")
    assert found.source == source
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = _tls.server_context(found).wrap_bio(server_in, server_out, server_side=True)
    client_context = ssl.create_default_context(cafile=found.cafile)
    client = client_context.wrap_bio(client_in, client_out, server_hostname=_tls.SERVER_NAME)
    for _ in range(10):  # pump the handshake records between the two ends
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    client.do_handshake()  # raises unless the handshake, certificate check included, is done
    assert client.getpeercert()["subjectAltName"] == (("DNS", "localhost"),)


def test_callgrind_split_by_object_counts_self_costs_only(tmp_path) -> None:
    # Two objects, names compressed after their first use; a call's inclusive cost (the line
    # after `calls=`) is the callee's, already counted where the callee's own lines are.
    out = tmp_path / "cg.out"
    out.write_text(
        "events: Ir\n"
        "ob=(1) /lib/libcrypto.so.3\nfl=(1) ???\nfn=(1) aes\n0 100\n"
        "ob=(2) /lib/libpython.so\nfl=(2) x.c\nfn=(2) f\n0 7\n"
        "cob=(1)\ncfi=(1)\ncfn=(1)\ncalls=1 0\n0 100\n"
        "ob=(1)\nfl=(1)\nfn=(1)\n+1 5\n"
    )
    costs = by_object(str(out))
    assert costs == {"/lib/libcrypto.so.3": 105, "/lib/libpython.so": 7}
