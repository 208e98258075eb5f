#!/usr/bin/env python3
"""Conformance run of CPython's ``test.test_asyncio`` against an event loop.

    python3 tests/conformance/conformance_run.py [--loop asyncio|module:factory]
        [--modules test_tasks,locks] [-k PATTERN]... [--timeout 10] [-j 2]
        [--json out.json] [--show-failures] [--check | --write-expected] [-v]

The default loop is ``ferroloop:new_event_loop``; ``--loop asyncio`` runs the
stock ``asyncio.SelectorEventLoop`` through the same machinery (to validate
the harness).  Which modules and tests run, and which are excluded and why,
is in ``conformance_plan.py``.

Each module runs in its own worker process (``conformance_worker.py``), at
most two at a time.  Every test has a time limit; a test that hangs or
crashes its worker is recorded as a timeout or crash and the module goes on
in a new worker.  A test passes only if it also created at least one loop
under test (a pass that never touched the loop is reported as ``noloop``).

``--write-expected`` stores the passing ids in ``expected_pass.txt`` (3.11; other
versions: ``expected_pass-3.X.txt``, see ``EXPECTED_PASS_FILE``)
(entries of modules not run are kept).  ``--check`` compares the run with
that list: an expected test that fails is run once more (when at most 50
failed), and if it fails again it is a regression (exit status 1), unless
``flaky.txt`` lists it.
New passes are printed but are not an error.

Exit status: 0, or 1 when a test failed (without ``--check``) or a
regression was found (with ``--check``); 2 for bad arguments.
"""

import argparse
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import conformance_plan as plan  # noqa: E402 (needs HERE on sys.path)

WORKER_SCRIPT = os.path.join(HERE, "conformance_worker.py")
# One expected-pass list per Python version: each version's test_asyncio has
# its own tests.  3.11's is ``expected_pass.txt``; later ones carry the version,
# with ``missing-3.X.txt`` beside them: ``<test id> <reason>`` for every test
# that passes on that version's stock loop but not on ferroloop.
VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
EXPECTED_PASS_FILE = os.path.join(
    HERE, "expected_pass.txt" if VERSION == "3.11" else f"expected_pass-{VERSION}.txt"
)
MISSING_FILE = os.path.join(HERE, f"missing-{VERSION}.txt")
MISSING_DEFAULT_REASON = "not investigated yet"
FLAKY_FILE = os.path.join(HERE, "flaky.txt")
#: Tests flaky on this Python version only (same format), added to flaky.txt's.
FLAKY_VERSION_FILE = os.path.join(HERE, f"flaky-{VERSION}.txt")
DEFAULT_LOOP = "ferroloop:new_event_loop"
MAX_JOBS = 2

FAILED_OUTCOMES = ("fail", "error", "timeout", "crash", "notrun")


@dataclass
class Options:
    """Settings of one conformance run (the CLI flags, usable from pytest)."""

    loop: str = DEFAULT_LOOP
    modules: list[str] = field(default_factory=lambda: [m.name for m in plan.MODULES])
    patterns: list[str] = field(default_factory=list)
    timeout: float = 10.0
    module_budget: float = 300.0
    total_budget: float = 480.0
    max_retries: int = 50
    max_restarts: int = 40
    jobs: int = MAX_JOBS
    verbose: bool = False


@dataclass
class ModuleResult:
    """Everything one module's run produced."""

    module: str
    tests: dict[str, dict] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    deferred: dict[str, str] = field(default_factory=dict)
    fixture_errors: dict[str, dict] = field(default_factory=dict)
    planned: list[str] | None = None
    loop_type: str | None = None
    status: str = "ok"
    restarts: int = 0
    seconds: float = 0.0

    def passed_ids(self):
        """Ids of the tests that passed and created a loop under test."""
        return {test_id for test_id, rec in self.tests.items() if rec["outcome"] == "pass"}

    def counts(self):
        """Per-outcome counts for the report."""
        outcomes = [rec["outcome"] for rec in self.tests.values()]
        return {
            "passed": outcomes.count("pass"),
            "failed": sum(outcomes.count(o) for o in FAILED_OUTCOMES) + len(self.fixture_errors),
            "skipped": outcomes.count("skip"),
            "noloop": outcomes.count("noloop"),
            "timeouts": outcomes.count("timeout"),
            "crashes": outcomes.count("crash"),
            "excluded": len(self.excluded),
            "deferred": len(self.deferred),
            "virtual_time_skips": sum(
                1
                for rec in self.tests.values()
                if rec["outcome"] == "skip" and rec["message"] == plan.VIRTUAL_TIME_SKIP_REASON
            ),
        }


# ------------------------------------------------------------ one module


def worker_environment(loop_spec):
    """Environment for workers: ours, plus the directory this process
    imports the loop's package from (it may be on ``sys.path`` only here,
    e.g. put there by a conftest), so workers load the same build."""
    env = dict(os.environ)
    package = loop_spec.partition(":")[0].split(".")[0]
    if loop_spec == "asyncio" or not package:
        return env
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.origin or not os.path.isabs(found.origin):
        return env
    import_root = os.path.dirname(found.origin)
    if found.submodule_search_locations:  # a package: origin is its __init__
        import_root = os.path.dirname(import_root)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if import_root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([import_root, *paths])
    return env


class WorkerSession:
    """One worker process: start it, follow its report channel, enforce the
    time limits from outside (the worker's own watchdog is the first line)."""

    GRACE_SECONDS = 15.0

    def __init__(self, module, options, workdir, log_path, skip_path, only_path):
        self.module = module
        self.options = options
        self.current_test = None
        self.current_started = 0.0
        self.finished = False
        self.killed_reason = None
        read_fd, write_fd = os.pipe()
        command = [
            sys.executable,
            WORKER_SCRIPT,
            "--module",
            module,
            "--loop",
            options.loop,
            "--timeout",
            str(options.timeout),
            "--report-fd",
            str(write_fd),
            "--skip",
            skip_path,
        ]
        if only_path:
            command += ["--only", only_path]
        for pattern in options.patterns:
            command += ["-k", pattern]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                start_new_session=True,
                env=worker_environment(options.loop),
            )
        os.close(write_fd)
        self.events = queue.Queue()
        self._reader = threading.Thread(target=self._read_channel, args=(read_fd,), daemon=True)
        self._reader.start()

    def _read_channel(self, read_fd):
        with os.fdopen(read_fd, "r", errors="replace") as channel:
            for line in channel:
                try:
                    self.events.put(json.loads(line))
                except ValueError:
                    pass
        self.events.put(None)

    def follow(self, handle_event, deadline):
        """Pass each event to ``handle_event`` until the worker's channel
        closes; kill the worker if a limit is passed."""
        last_activity = time.monotonic()
        idle_limit = max(60.0, 4 * self.options.timeout)
        while True:
            try:
                event = self.events.get(timeout=0.5)
            except queue.Empty:
                event = False
            now = time.monotonic()
            if event is None:
                break
            if event:
                last_activity = now
                if event["event"] == "start":
                    self.current_test, self.current_started = event["id"], now
                elif event["event"] == "end":
                    self.current_test = None
                elif event["event"] == "finished":
                    self.finished = True
                handle_event(event)
                continue
            if (
                self.current_test is not None
                and now - self.current_started > self.options.timeout + self.GRACE_SECONDS
            ):
                self.kill(f"test still running {self.GRACE_SECONDS:.0f}s after its time limit")
            elif self.current_test is None and now - last_activity > idle_limit:
                self.kill(f"no progress outside a test for {idle_limit:.0f}s")
            elif now > deadline:
                self.kill("time budget exhausted")
        self.kill(None)

    def kill(self, reason):
        """End the worker's process group (records why, when given)."""
        if reason and not self.killed_reason:
            self.killed_reason = reason
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()


def read_log_since(log_path, offset, limit=200000):
    """The worker log written since ``offset`` (its last ``limit`` chars)."""
    with open(log_path, "rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", "replace")[-limit:]


def innermost_frame(dump, thread_header):
    """``file:line in function`` of the innermost frame of the last thread
    block of a faulthandler dump whose header starts with ``thread_header``."""
    last_block = None
    for block in dump.split("\n\n"):
        lines = [line.strip() for line in block.splitlines()]
        headers = [i for i, line in enumerate(lines) if line.startswith(thread_header)]
        if headers:
            last_block = lines[headers[0] + 1 :]
    for line in last_block or ():
        if line.startswith('File "'):
            path, _, rest = line[len('File "') :].partition('", line ')
            return f"{os.path.basename(path)}:{rest}"
    return ""


def describe_worker_death(log_text, session, timeout):
    """Outcome record for the test that was running when a worker died."""
    timeout_at = log_text.rfind("Timeout (")
    if timeout_at >= 0 or session.killed_reason:
        dump = log_text[timeout_at:] if timeout_at >= 0 else ""
        message = f"timeout: no result within {timeout:g}s"
        stuck_at = innermost_frame(dump, "Thread ")
        if stuck_at:
            message += f"; main thread at {stuck_at}"
        if session.killed_reason:
            message += f" ({session.killed_reason})"
        return {"outcome": "timeout", "message": message, "traceback": dump[-4000:]}
    fatal_at = log_text.rfind("Fatal Python error")
    if fatal_at >= 0:
        section = log_text[fatal_at:]
        message = "crash: " + section.splitlines()[0]
        crashed_at = innermost_frame(section.partition("\n\n")[2], "Current thread")
        if crashed_at:
            message += f" at {crashed_at}"
        return {"outcome": "crash", "message": message, "traceback": section[:4000]}
    return {
        "outcome": "crash",
        "message": f"crash: worker exited with status {session.process.returncode}",
        "traceback": log_text[-3000:],
    }


def final_outcome(event):
    """The record kept for an ``end`` event: a pass that created no loop
    under test becomes ``noloop``."""
    outcome, message = event["outcome"], event.get("message", "")
    if outcome == "pass" and not event.get("lut_loops"):
        outcome, message = "noloop", "passed without creating a loop under test"
    return {
        "outcome": outcome,
        "message": message,
        "traceback": event.get("traceback", ""),
        "seconds": event.get("seconds"),
        "lut_loops": event.get("lut_loops"),
        "stock_loops": event.get("stock_loops"),
    }


def run_module(module, options, only_ids=None, run_deadline=None):
    """Run one module, restarting its worker after hangs and crashes; stop
    at the module's time budget or at ``run_deadline`` (monotonic time)."""
    started = time.monotonic()
    deadline = started + options.module_budget
    if run_deadline is not None:
        deadline = min(deadline, run_deadline)
    result = ModuleResult(module)
    with tempfile.TemporaryDirectory(prefix=f"conformance-{module}-") as workdir:
        log_path = os.path.join(workdir, "worker.log")
        skip_path = os.path.join(workdir, "skip.json")
        only_path = None
        if only_ids is not None:
            only_path = os.path.join(workdir, "only.json")
            with open(only_path, "w") as f:
                json.dump(sorted(only_ids), f)
        open(log_path, "wb").close()

        def handle_event(event):
            kind = event["event"]
            if kind == "plan" and result.planned is None:
                result.planned = event["tests"]
                result.excluded = event["excluded"]
                result.deferred = event["deferred"]
                result.loop_type = event["loop_type"]
            elif kind == "end":
                result.tests[event["id"]] = final_outcome(event)
            elif kind == "fixture_error":
                result.fixture_errors[event["id"]] = {
                    "outcome": "error",
                    "message": event["message"],
                    "traceback": event["traceback"],
                }

        while True:
            with open(skip_path, "w") as f:
                json.dump(sorted(result.tests), f)
            log_offset = os.path.getsize(log_path)
            session = WorkerSession(module, options, workdir, log_path, skip_path, only_path)
            session.follow(handle_event, deadline)
            if session.finished and not session.killed_reason:
                break
            log_text = read_log_since(log_path, log_offset)
            if session.current_test is not None:
                result.tests[session.current_test] = describe_worker_death(
                    log_text, session, options.timeout
                )
            else:
                exit_message = f"worker exited with status {session.process.returncode}"
                key = f"worker ended outside a test (run {result.restarts + 1})"
                result.fixture_errors[key] = {
                    "outcome": "error",
                    "message": session.killed_reason or exit_message,
                    "traceback": log_text[-3000:],
                }
            remaining = [t for t in result.planned or [] if t not in result.tests]
            if result.planned is None or not remaining:
                result.status = "worker failed before its plan" if result.planned is None else "ok"
                break
            if time.monotonic() > deadline:
                result.status = "time budget exhausted"
                break
            if result.restarts >= options.max_restarts:
                result.status = "too many worker restarts"
                break
            result.restarts += 1

    for test_id in result.planned or []:
        if test_id not in result.tests:
            result.tests[test_id] = {
                "outcome": "notrun",
                "traceback": "",
                "message": f"not run: {result.status}",
            }
    result.seconds = round(time.monotonic() - started, 1)
    if options.verbose:
        counts = result.counts()
        print(
            f"  {module:16} {counts['passed']:4d} passed {counts['failed']:4d} failed"
            f" ({result.seconds:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
    return result


def run_modules(options, only_ids_by_module=None):
    """Run the modules of ``options`` (or only the given ids of some modules),
    at most two at a time, within ``options.total_budget`` seconds; return
    {module: ModuleResult} in module order."""
    run_deadline = time.monotonic() + options.total_budget
    if only_ids_by_module is not None:
        modules = [m for m in options.modules if only_ids_by_module.get(m)]
    else:
        modules = list(options.modules)
    jobs = max(1, min(options.jobs, MAX_JOBS))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {
            m: pool.submit(run_module, m, options, (only_ids_by_module or {}).get(m), run_deadline)
            for m in modules
        }
        return {m: futures[m].result() for m in modules}


# ------------------------------------------------------ expected passes


def module_of(test_id):
    """``test_tasks.Class.method`` -> ``test_tasks``."""
    return test_id.split(".", 1)[0]


def read_expected(path=EXPECTED_PASS_FILE):
    """Test ids of the expected-pass list (blank and # lines ignored)."""
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return {line.strip() for line in f if line.strip() and not line.startswith("#")}


def read_flaky(path=None):
    """{test id: reason} from a ``<test id> <reason>`` list; by default the flaky lists
    (``flaky.txt`` and this version's ``flaky-3.X.txt``)."""
    if path is None:
        return {**read_flaky(FLAKY_FILE), **read_flaky(FLAKY_VERSION_FILE)}
    flaky = {}
    if not os.path.exists(path):
        return flaky
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                test_id, _, reason = line.partition(" ")
                flaky[test_id] = reason.strip()
    return flaky


def write_expected(results, path=EXPECTED_PASS_FILE, flaky=None):
    """Replace the entries of the modules in ``results`` with their passes
    (flaky tests left out); keep other modules' entries.  Returns the count."""
    flaky = flaky or {}
    kept = {t for t in read_expected(path) if module_of(t) not in results}
    passed = set().union(*(r.passed_ids() for r in results.values())) if results else set()
    ids = sorted(kept | (passed - set(flaky)))
    with open(path, "w") as f:
        f.write("".join(test_id + "\n" for test_id in ids))
    return len(ids)


def write_missing(results, stock_json_path, path=MISSING_FILE):
    """Write ``path``: the tests the stock run (``--json`` of ``--loop asyncio``)
    passed that ``results`` did not, each with its reason (reasons already in
    the file are kept).  Returns the count."""
    with open(stock_json_path) as f:
        stock = json.load(f)
    stock_passed = {
        test_id
        for module in stock["modules"].values()
        for test_id, test in module["tests"].items()
        if test["outcome"] == "pass"
    }
    passed = set().union(*(r.passed_ids() for r in results.values())) if results else set()
    reasons = read_flaky(path)  # same format: <test id> <reason>
    missing = sorted(stock_passed - passed)
    with open(path, "w") as f:
        f.write(
            f"# CPython {VERSION}: tests that pass on the stock loop but not on ferroloop,\n"
            "# one per line: <test id> <reason>.  Written by --write-expected --stock-json.\n"
        )
        for test_id in missing:
            f.write(f"{test_id} {reasons.get(test_id) or MISSING_DEFAULT_REASON}\n")
    return len(missing)


@dataclass
class ExpectationCheck:
    """Comparison of a run with the expected-pass list."""

    regressions: dict[str, str] = field(default_factory=dict)
    passed_on_retry: list[str] = field(default_factory=list)
    flaky_failures: dict[str, str] = field(default_factory=dict)
    new_passes: list[str] = field(default_factory=list)


def check_expectations(results, options, expected=None, flaky=None, retry=True):
    """Compare ``results`` with the expected passes; run failing expected
    tests once more.  Updates ``results`` with the retries' passes."""
    expected = read_expected() if expected is None else expected
    flaky = read_flaky() if flaky is None else flaky
    check = ExpectationCheck()
    planned = {t for r in results.values() for t in (r.planned or [])}
    in_scope = {t for t in expected if module_of(t) in results}
    if options.patterns:
        in_scope &= planned

    def failing(test_id):
        return results[module_of(test_id)].tests.get(test_id, {}).get("outcome") != "pass"

    missing = sorted(t for t in in_scope if failing(t))
    check.flaky_failures = {t: flaky[t] for t in missing if t in flaky}
    to_retry = [t for t in missing if t not in flaky and t in planned]
    # Retrying is for timing noise; a mass failure is not noise.
    if retry and 0 < len(to_retry) <= options.max_retries:
        by_module = {}
        for test_id in to_retry:
            by_module.setdefault(module_of(test_id), set()).add(test_id)
        for module, retried in run_modules(options, by_module).items():
            for test_id, rec in retried.tests.items():
                if rec["outcome"] == "pass":
                    rec["passed_on_retry"] = True
                    results[module].tests[test_id] = rec
                    check.passed_on_retry.append(test_id)
    for test_id in missing:
        if test_id in flaky or not failing(test_id):
            continue
        rec = results[module_of(test_id)].tests.get(test_id)
        check.regressions[test_id] = (
            f"{rec['outcome']}: {rec['message']}"
            if rec
            else "no longer collected (renamed, excluded or deferred?)"
        )
    passed = set().union(*(r.passed_ids() for r in results.values())) if results else set()
    check.new_passes = sorted(passed - expected)
    return check


# ------------------------------------------------------------- reporting

COLUMNS = ("passed", "failed", "skipped", "excluded", "deferred", "noloop", "timeouts", "crashes")


def totals_of(results):
    """Column sums over all modules."""
    totals = dict.fromkeys(COLUMNS + ("virtual_time_skips",), 0)
    for result in results.values():
        for key, value in result.counts().items():
            totals[key] += value
    return totals


def format_table(results, options, wall):
    """Per-module table, a TOTAL row and notes, as text."""
    loop_type = next((r.loop_type for r in results.values() if r.loop_type), "?")
    title = (
        f"CPython {sys.version.split()[0]} test.test_asyncio on {options.loop} "
        f"({loop_type}); per-test limit {options.timeout:g}s; wall {wall:.0f}s"
    )
    lines = [title]
    header = f"{'module':16}" + "".join(f"{c:>9}" for c in COLUMNS) + "   seconds"
    lines += [header, "-" * len(header)]
    for module, result in results.items():
        counts = result.counts()
        row = f"{module:16}" + "".join(f"{counts[c]:9d}" for c in COLUMNS)
        row += f"{result.seconds:10.1f}"
        if result.status != "ok":
            row += f"  [{result.status}]"
        lines.append(row)
    totals = totals_of(results)
    lines += [
        "-" * len(header),
        f"{'TOTAL':16}" + "".join(f"{totals[c]:9d}" for c in COLUMNS),
        (
            f"(skipped includes {totals['virtual_time_skips']} tests on asyncio's "
            "virtual-time TestLoop; noloop = passed without creating a loop under test, "
            "not counted as passed)"
        ),
    ]
    return "\n".join(lines)


def format_failures(results):
    """Every failed test (and fixture error) with its message."""
    lines = []
    for module, result in results.items():
        bad = sorted(
            (t, r) for t, r in result.tests.items() if r["outcome"] in FAILED_OUTCOMES + ("noloop",)
        )
        bad += sorted(result.fixture_errors.items())
        if bad:
            lines.append(f"== {module} ({len(bad)})")
            for test_id, rec in bad:
                message = (rec.get("message") or "")[:300]
                lines.append(f"  {rec['outcome'].upper():8} {test_id}")
                lines.append(f"           {message}")
    return "\n".join(lines)


def format_check(check, max_new_passes_listed=200):
    """The expected-pass comparison, as text (new passes listed up to a
    limit)."""
    lines = []
    if check.passed_on_retry:
        lines.append(f"{len(check.passed_on_retry)} expected tests passed only on retry:")
        lines += ["  " + t for t in sorted(check.passed_on_retry)]
    if check.flaky_failures:
        lines.append(f"{len(check.flaky_failures)} flaky tests failed (allowed):")
        lines += [f"  {t}  ({why})" for t, why in sorted(check.flaky_failures.items())]
    if check.new_passes:
        lines.append(
            f"{len(check.new_passes)} tests pass that are not in "
            f"{os.path.basename(EXPECTED_PASS_FILE)} "
            "(run --write-expected to add them):"
        )
        lines += ["  " + t for t in check.new_passes[:max_new_passes_listed]]
        if 0 < max_new_passes_listed < len(check.new_passes):
            lines.append(f"  ... and {len(check.new_passes) - max_new_passes_listed} more")
    if check.regressions:
        lines.append(f"{len(check.regressions)} REGRESSIONS (expected to pass, failed twice):")
        lines += [f"  {t}\n      {m[:300]}" for t, m in sorted(check.regressions.items())]
    else:
        lines.append(f"no regressions against {os.path.basename(EXPECTED_PASS_FILE)}")
    return "\n".join(lines)


def results_as_json(results, options, wall, check=None):
    """The run as a JSON-serialisable dict."""
    data = {
        "loop": options.loop,
        "loop_type": next((r.loop_type for r in results.values() if r.loop_type), None),
        "python": sys.version,
        "timeout_s": options.timeout,
        "patterns": options.patterns,
        "wall_s": round(wall, 1),
        "totals": totals_of(results),
        "modules": {
            module: {
                "counts": r.counts(),
                "status": r.status,
                "seconds": r.seconds,
                "restarts": r.restarts,
                "tests": r.tests,
                "excluded": r.excluded,
                "deferred": r.deferred,
                "fixture_errors": r.fixture_errors,
            }
            for module, r in results.items()
        },
    }
    if check is not None:
        data["expectations"] = {
            "regressions": check.regressions,
            "passed_on_retry": check.passed_on_retry,
            "flaky_failures": check.flaky_failures,
            "new_passes": check.new_passes,
        }
    return data


# ------------------------------------------------------------------ CLI


def normalise_module_names(names):
    """Accept ``tasks`` or ``test_tasks``; reject modules not in the plan."""
    modules = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        name = name if name.startswith("test_") else "test_" + name
        if name not in plan.MODULES_BY_NAME:
            known = ", ".join(plan.MODULES_BY_NAME)
            raise ValueError(f"{name} is not in conformance_plan.MODULES (known: {known})")
        modules.append(name)
    return modules


def parse_args(argv):
    """Command-line flags -> (Options, remaining argparse namespace)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--loop",
        default=DEFAULT_LOOP,
        help='"asyncio" (stock) or module:factory (default %(default)s)',
    )
    parser.add_argument("--modules", help="comma-separated modules (default: all planned)")
    parser.add_argument(
        "-k",
        action="append",
        default=[],
        dest="patterns",
        help="only test ids containing this (or matching this glob)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="per-test time limit in seconds (default %(default)s)",
    )
    parser.add_argument(
        "--module-budget",
        type=float,
        default=300.0,
        help="wall-time limit per module in seconds (default %(default)s)",
    )
    parser.add_argument(
        "--total-budget",
        type=float,
        default=480.0,
        help="wall-time limit of the whole run in seconds, retries apart (default %(default)s)",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=MAX_JOBS,
        choices=(1, 2),
        help="modules run in parallel (default %(default)s)",
    )
    parser.add_argument("--json", help="write every test result to this file")
    parser.add_argument(
        "--show-failures", action="store_true", help="print each failed test with its message"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help=f"compare with {os.path.basename(EXPECTED_PASS_FILE)}; regressions fail the run",
    )
    mode.add_argument(
        "--write-expected",
        action="store_true",
        help=f"write the passing tests to {os.path.basename(EXPECTED_PASS_FILE)}",
    )
    parser.add_argument(
        "--stock-json",
        help="with --write-expected: the --json of a --loop asyncio run; writes "
        f"{os.path.basename(MISSING_FILE)} (stock passes this run misses, with reasons)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args(argv)
    try:
        modules = (
            normalise_module_names(args.modules.split(","))
            if args.modules
            else [m.name for m in plan.MODULES]
        )
    except ValueError as error:
        parser.error(str(error))
    if args.write_expected and args.patterns:
        parser.error("--write-expected needs whole modules (no -k)")
    if args.stock_json and not args.write_expected:
        parser.error("--stock-json goes with --write-expected")
    if args.check and not os.path.exists(EXPECTED_PASS_FILE):
        parser.error(
            f"no expected-pass list for Python {VERSION}: "
            f"{os.path.relpath(EXPECTED_PASS_FILE)} (make it with --write-expected)"
        )
    options = Options(
        loop=args.loop,
        modules=modules,
        patterns=args.patterns,
        timeout=args.timeout,
        module_budget=args.module_budget,
        total_budget=args.total_budget,
        jobs=args.jobs,
        verbose=args.verbose,
    )
    return options, args


def main(argv=None):
    """Run, report, and (optionally) check or write the expected passes."""
    options, args = parse_args(argv)
    started = time.monotonic()
    results = run_modules(options)
    check = check_expectations(results, options) if args.check else None
    wall = time.monotonic() - started

    print(format_table(results, options, wall))
    if args.show_failures:
        failures = format_failures(results)
        if failures:
            print("\n" + failures)
    if check is not None:
        print("\n" + format_check(check))
    if args.write_expected:
        count = write_expected(results, flaky=read_flaky())
        print(f"\nwrote {count} ids to {os.path.relpath(EXPECTED_PASS_FILE)}")
        if args.stock_json:
            count = write_missing(results, args.stock_json)
            print(f"wrote {count} ids to {os.path.relpath(MISSING_FILE)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results_as_json(results, options, wall, check), f, indent=1, sort_keys=True)
    totals = totals_of(results)
    print(
        f"conformance: {totals['passed']} passed, {totals['failed']} failed, "
        f"{totals['skipped']} skipped"
    )
    if check is not None:
        return 1 if check.regressions else 0
    return 1 if totals["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
