"""Runs pinned releases' own test suites with ferroloop as the loop of every test.

Called by ``scripts/downstream.sh`` (see the README's "Downstream suites" section). For a
suite it downloads the pinned sdist from PyPI into a cache outside git, makes a virtual
environment from the running Python with the suite's pinned test dependencies
(``tests/downstream/<suite>-requirements.txt``), links ferroloop (this checkout's
``python/``, built by ``scripts/dev-build.sh``) and the injection module into it through a
``.pth`` file, runs the suite's tests, and compares the failures with
``tests/downstream/<suite>-stock-failures.txt`` (tests that fail on stock asyncio too) and
``tests/downstream/<suite>-known.txt`` (known ferroloop failures, each with its issue). Any
other failure is a regression (it is rerun once first; one that passes then is reported as
flaky). A ferroloop run in which the injection made no loop fails too.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LISTS = REPO / "tests" / "downstream"
INJECT = LISTS / "inject"
CACHE = Path(
    os.environ.get("FERROLOOP_DOWNSTREAM_CACHE", Path.home() / ".cache" / "ferroloop-downstream")
)


@dataclasses.dataclass
class Suite:
    """One downstream test suite: the release, how to run its tests, what it needs."""

    name: str
    dist: str  # the pinned release, pip's "name==version"
    pytest_args: list[str]  # options (the run starts in the sdist's root)
    paths: list[str] = dataclasses.field(default_factory=lambda: ["tests"])
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    service: str | None = None  # "postgres" or "redis": started by the script
    # how to install the package itself (default: the sdist); a compiled package is installed
    # from its release's wheel, and its tests still come from the sdist
    install: list[str] | None = None
    # tests from this repository instead of an sdist: the sample projects of
    # ferroloop.pytest_plugin, run with the plugin (loaded by its pytest11 entry point, on with
    # --ferroloop; no injection) on "ferroloop"
    local: Path | None = None
    timeout: int = 1800  # seconds for the whole pytest run

    @property
    def requirements(self) -> Path:
        return LISTS / f"{self.name}-requirements.txt"


SUITES = {
    s.name: s
    for s in [
        Suite(
            "plugin",
            "ferroloop.pytest_plugin samples",
            [],
            paths=["pytest_asyncio_project", "anyio_project", "unittest_project"],
            install=[],
            local=LISTS.parent / "plugin_samples",
        ),
        Suite(
            "aiohttp",
            "aiohttp==3.14.5",
            # the suite's addopts ask for xdist workers and coverage: run serially, without
            # them; the markers are the ones its default addopts deselect
            [
                "-o",
                "addopts=--strict-markers",
                "-m",
                "not dev_mode and not autobahn and not internal",
            ],
            install=["aiohttp==3.14.5"],
            # 1424 s serially on stock on a quiet machine; more on the shared cores
            timeout=5400,
        ),
        Suite(
            "aiosmtpd",
            "aiosmtpd==1.4.6",
            # its addopts ask for coverage: left out; the tests are inside the package
            # (aiosmtpd/qa checks the packaging and the repository, not behaviour); its ini
            # sets pytest-asyncio's asyncio_mode, which no test uses (pytest-asyncio is not
            # installed): the unknown-option warning is not made an error
            ["-o", "addopts=-ra", "-W", "ignore::pytest.PytestConfigWarning"],
            paths=["aiosmtpd/tests"],
        ),
        Suite(
            "anyio",
            "anyio==4.16.0",
            # network: needs the Internet; trio and uvloop are not installed, so their
            # parametrisations are skipped (they would not run on ferroloop anyway).
            ["-m", "not network"],
        ),
        Suite(
            "asyncpg",
            "asyncpg==0.32.0",
            # test__sourcecode runs flake8/mypy over the source (lint, not behaviour)
            ["--ignore=tests/test__sourcecode.py"],
            service="postgres",
            install=["asyncpg==0.32.0"],
        ),
        Suite(
            "redis",
            "redis==8.1.0",
            # a single redis-server from Debian: the cluster, sentinel and module tests are
            # deselected by redis-py's own markers
            ["--redis-url=$FERROLOOP_REDIS_URL", "-m", "not onlycluster and not redismod"],
            paths=["tests/test_asyncio"],
            service="redis",
        ),
        Suite(
            "httpx",
            "httpx==0.29.0",
            # network: needs the Internet; the test servers are uvicorn in a thread
            ["-m", "not network", "-k", "not trio"],
            # httpx's extras install it as httpx[...] from the sdist
            install=[f"{CACHE}/sdists/httpx-0.29.0.tar.gz[brotli,cli,http2,socks,zstd]"],
        ),
        Suite(
            "uvicorn",
            "uvicorn==0.54.0",
            # the suite's addopts ask for 8 xdist workers: run serially instead; the
            # benchmarks need pytest-codspeed (timings, not behaviour)
            ["-o", "addopts=-rxXs --strict-config --strict-markers"]
            + ["--ignore=tests/benchmarks"],
        ),
    ]
}


#: pytest-xdist workers per run (--workers; 0: one process)
WORKERS = [0]


def log(msg: str) -> None:
    print(f"[downstream] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(cmd, check=True, **kw)


def python_tag(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def sdist(suite: Suite) -> Path:
    """The suite's sdist, downloaded once into the cache."""
    dest = CACHE / "sdists"
    dest.mkdir(parents=True, exist_ok=True)
    name, version = suite.dist.split("==")
    wanted = f"{name}_{version}.tar.gz".lower().replace("-", "_")

    def find() -> Path | None:
        for candidate in dest.glob("*.tar.gz"):
            if candidate.name.lower().replace("-", "_") == wanted:
                return candidate
        return None

    found = find()
    if found is None:
        log(f"downloading the sdist of {suite.dist}")
        run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps"]
            + ["-d", str(dest), suite.dist]
        )
        found = find()
        if found is None:
            raise SystemExit(f"pip downloaded no sdist named {wanted} into {dest}")
    return found


def source_tree(suite: Suite) -> Path:
    """The sdist unpacked (once) into the cache; the tests run from its root."""
    if suite.local is not None:
        return suite.local
    archive = sdist(suite)
    root = CACHE / "src"
    top = archive.name[: -len(".tar.gz")]
    tree = root / top
    if not tree.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    return tree


def venv(suite: Suite, python: str) -> Path:
    """A virtual environment for the suite, made from ``python``; kept while its pins hold."""
    pins = suite.requirements.read_bytes()
    key = hashlib.sha256(pins + suite.dist.encode()).hexdigest()[:10]
    path = CACHE / "venvs" / f"{suite.name}-{python_tag(python)}-{key}"
    bin_python = path / "bin" / "python"
    if not (path / ".complete").exists():
        shutil.rmtree(path, ignore_errors=True)
        log(f"creating {path}")
        run([python, "-m", "venv", str(path)])
        run(
            [str(bin_python), "-m", "pip", "install", "-q", "-r", str(suite.requirements)]
            + (suite.install if suite.install is not None else [str(sdist(suite))])
        )
        (path / ".complete").touch()
    # ferroloop from this checkout, the injection module, and its start-up hook
    site = subprocess.run(
        [str(bin_python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "_ferroloop_downstream.pth").write_text(
        f"{REPO / 'python'}\n{INJECT}\nimport _ferroloop_downstream_inject\n"
    )
    if suite.local is not None:
        declare_entry_points(Path(site))
    return bin_python


def declare_entry_points(site: Path) -> None:
    """Makes ferroloop (linked by the .pth file) look installed, with the entry points that
    pyproject.toml declares, so that pytest loads ``ferroloop.pytest_plugin`` as an installed
    package's ``pytest11`` plugin would be loaded."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for old in site.glob("ferroloop-*.dist-info"):
        shutil.rmtree(old)
    info = site / f"ferroloop-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: ferroloop\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def read_list(path: Path) -> dict[str, str]:
    """Test ids of a list file (one per line, ``# reason`` after it, ``#`` lines are comments)."""
    entries: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            nodeid, _, reason = line.partition(" #")
            entries[nodeid.strip()] = reason.strip()
    return entries


def list_path(suite: Suite, kind: str, tag: str) -> Path:
    """The per-Python-version list if there is one, else the suite's list."""
    specific = LISTS / f"{suite.name}-{kind}-{tag}.txt"
    return specific if specific.exists() else LISTS / f"{suite.name}-{kind}.txt"


@dataclasses.dataclass
class Result:
    outcomes: dict[str, str]
    loops_made: int
    seconds: float
    returncode: int

    def counts(self) -> Counter[str]:
        return Counter(self.outcomes.values())

    def failed(self) -> set[str]:
        return {t for t, o in self.outcomes.items() if o in ("failed", "xpassed")}


def run_pytest(
    suite: Suite, python: Path, loop: str, tree: Path, only: list[str] | None = None
) -> Result:
    with tempfile.TemporaryDirectory(prefix="ferroloop-downstream-") as tmp:
        report = Path(tmp, "report.jsonl")
        counts = Path(tmp, "loops")
        counts.mkdir()
        env = dict(os.environ)
        env.update(suite.env)
        env.update(
            FERROLOOP_DOWNSTREAM_LOOP=loop,
            FERROLOOP_DOWNSTREAM_COUNT_DIR=str(counts),
            FERROLOOP_DOWNSTREAM_REPORT=str(report),
            PYTHONDONTWRITEBYTECODE="1",
        )
        env.pop("PYTHONPATH", None)
        args = [os.path.expandvars(a) for a in suite.pytest_args]
        if suite.local is not None and loop == "ferroloop":
            env["FERROLOOP_DOWNSTREAM_LOOP"] = "plugin"  # the plugin, not the injection
            # loaded by its pytest11 entry point (declare_entry_points), switched on by its option
            args += ["--ferroloop", "--ferroloop-strict"]
        if WORKERS[0] and "pytest-xdist" in suite.requirements.read_text():
            args += ["-n", str(WORKERS[0])]
        args += suite.paths if only is None else only
        # -P: the sdist root (the current directory) does not shadow the installed package
        cmd = [str(python), "-P", "-m", "pytest", "-p", "_ferroloop_downstream_report"]
        cmd += ["-p", "no:cacheprovider", *args]
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=tree, env=env, timeout=suite.timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            log(f"{suite.name}: pytest timed out after {suite.timeout}s")
            rc = -1
        seconds = time.monotonic() - start
        outcomes: dict[str, str] = {}
        if report.exists():
            for line in report.read_text().splitlines():
                entry = json.loads(line)
                outcomes[entry["nodeid"]] = entry["outcome"]
        made = sum(int(p.read_text() or 0) for p in counts.iterdir())
        return Result(outcomes, made, seconds, rc)


def summary(res: Result) -> str:
    c = res.counts()
    return (
        f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped, "
        f"{c['xfailed']} xfailed, {c['xpassed']} xpassed in {res.seconds:.0f}s"
    )


def run_suite(name: str, loop: str, python: str, update: bool) -> bool:
    """Runs one suite on one loop; returns False on a regression (or an empty run)."""
    suite = SUITES[name]
    tag = python_tag(python)
    tree = source_tree(suite)
    bin_python = venv(suite, python)
    with service(suite.service):
        log(f"{name} ({suite.dist}) on {loop}, Python {tag}")
        res = run_pytest(suite, bin_python, loop, tree)
        log(f"{name} on {loop}: {summary(res)}; ferroloop loops made: {res.loops_made}")
        if not res.outcomes:
            log(f"{name}: no test ran (pytest exit {res.returncode})")
            return False
        if loop == "asyncio":
            if update:
                path = LISTS / f"{name}-stock-failures.txt"
                if tag != default_tag():
                    path = LISTS / f"{name}-stock-failures-{tag}.txt"
                header = (
                    f"# Tests of {suite.dist} that fail on stock asyncio (Python {tag}),\n"
                    f"# written by `scripts/downstream.sh {name} --stock --update`.\n"
                    f"# Stock run: {summary(res)}\n"
                )
                path.write_text(header + "".join(f"{t}\n" for t in sorted(res.failed())))
                log(f"wrote {path.relative_to(REPO)}")
            return True
        if res.loops_made == 0:
            log(f"{name}: FAILED: the injection made no ferroloop loop: this run tested nothing")
            return False
        stock = read_list(list_path(suite, "stock-failures", tag))
        if suite.local is not None:  # the samples fail on stock by design: all must pass here
            stock = {}
        known = read_list(list_path(suite, "known", tag))
        failed = res.failed()
        candidates = sorted(failed - stock.keys() - known.keys())
        flaky: list[str] = []
        if candidates:
            log(f"{name}: rerunning {len(candidates)} new failure(s) once")
            again = run_pytest(suite, bin_python, loop, tree, only=candidates)
            still = again.failed() | (set(candidates) - again.outcomes.keys())
            flaky = [t for t in candidates if t not in still]
            candidates = [t for t in candidates if t in still]
        for t in sorted(failed & known.keys()):
            log(f"{name}: known failure: {t}  ({known[t]})")
        for t in flaky:
            log(f"{name}: flaky (failed, then passed on rerun): {t}")
        fixed = sorted(
            (stock.keys() | known.keys()) & {t for t, o in res.outcomes.items() if o == "passed"}
        )
        for t in fixed:
            log(f"{name}: listed but passed on ferroloop: {t}")
        for t in candidates:
            log(f"{name}: REGRESSION: {t}")
        log(
            f"{name}: {len(candidates)} regression(s), {len(failed & known.keys())} known, "
            f"{len(failed & stock.keys())} failing on stock too, {len(flaky)} flaky"
        )
        return not candidates


def default_tag() -> str:
    return "3.11"


class service:
    """Starts the suite's server (PostgreSQL, Redis) for the run and stops it after."""

    def __init__(self, kind: str | None) -> None:
        self.kind = kind
        self.stop = None

    def __enter__(self) -> None:
        if self.kind is not None:
            from downstream_services import start  # type: ignore[import-not-found]

            self.stop = start(self.kind)

    def __exit__(self, *exc: object) -> None:
        if self.stop is not None:
            self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suites", nargs="+", help=f"suite names ({', '.join(SUITES)}) or 'ci'")
    parser.add_argument("--stock", action="store_true", help="run on stock asyncio")
    parser.add_argument(
        "--update", action="store_true", help="with --stock: rewrite the stock-failures list"
    )
    parser.add_argument("--python", default=sys.executable, help="the Python to test with")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run the suite in N pytest-xdist workers (suites whose pins include xdist)",
    )
    opts = parser.parse_args()
    names: list[str] = []
    for n in opts.suites:
        names += CI_SUITES if n == "ci" else [n]
    for n in names:
        if n not in SUITES:
            parser.error(f"unknown suite {n!r}")
    loop = "asyncio" if opts.stock else "ferroloop"
    WORKERS[0] = opts.workers
    results = {n: run_suite(n, loop, opts.python, opts.update) for n in names}
    bad = [n for n, ok in results.items() if not ok]
    log(f"suites with a regression: {', '.join(bad)}" if bad else "no regression")
    return 1 if bad else 0


CI_SUITES = ["plugin", "anyio", "uvicorn", "asyncpg", "redis", "aiosmtpd"]

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
