"""Tests of the benchmark suite's own logic (run: python3 -m pytest bench/tests)."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys

import pytest

from loops import parse_loop_list, parse_loop_spec
from report import format_factor, format_value
from run import BENCH_DIRECTORY, disturbance_share
from stats import improvement_factor, summarise
from workloads import Workload, WorkloadUnavailable, discover_workloads, select_workloads
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


@pytest.mark.parametrize("name", sorted(discover_workloads()))
def test_every_workload_reports_its_metrics_on_stock_asyncio(name: str) -> None:
    workload = discover_workloads()[name]
    loop = asyncio.new_event_loop()
    try:
        result = workload.run(loop, 0.01)
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
