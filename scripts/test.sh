#!/usr/bin/env bash
# The whole test suite, from a fresh clone (what CI runs, through .ci/run): the Rust and Python
# lint/format checks, the stub check, the Rust unit tests (also under Miri when installed), the
# pytest suite on ferroloop (with the conformance run of CPython's test_asyncio) and on stock
# asyncio, then the pytest suite on
# the other CPython versions pyenv has (3.12, 3.13) with the conformance check of their own
# test_asyncio, and on Python 3.14 and 3.15 (Debian's, in a Debian sid
# root made once per machine: scripts/python-root.sh) the pytest suite and that version's
# conformance check.
#
# Every interpreter gets its own virtual environment under target/ (so nothing is installed
# into the interpreters themselves); the tools come from PyPI, pinned in pyproject.toml's
# `dev` extra. To test one more Python version, add a line `other_python X.Y` at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

step() { echo "== [${SECONDS}s] $*"; }
trap 'status=$?; [ "$status" -ne 0 ] || echo "== all tests passed"' EXIT

# venv_for PYTHON EXTRAS: prints the python of a virtual environment (target/venv-X.Y) made
# from PYTHON, with ferroloop built and installed in it with the given extras.
venv_for() {
    local base=$1 extras=$2 version venv
    version=$("$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    venv=$PWD/target/venv-$version
    [ -x "$venv/bin/python" ] || "$base" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet ".[$extras]" >&2
    echo "$venv/bin/python"
}

# other_python X.Y: the pytest suite (conformance excluded) on pyenv's newest X.Y, if any, then
# the conformance check of that Python's own test_asyncio against expected_pass-X.Y.txt. Its
# per-test limit is 20 s, not 10: the eight test_task_del_collect variants (100 gc.collect()
# calls from __del__) take 4-10 s each on 3.12/3.13, on the stock loop too.
other_python() {
    local found python
    found=$(ls -d "$HOME"/.pyenv/versions/"$1".*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$found" ]; then
        step "Python $1: not installed, skipped"
        return
    fi
    step "build and pytest on $("$found" --version)"
    python=$(venv_for "$found" "test,integration")
    # The differential fuzzer (tests/fuzz/) runs a smaller budget than on the main Python.
    FERROLOOP_FUZZ_EXAMPLES=15 "$python" -m pytest -q -m "not conformance"
    step "conformance of $("$found" --version)'s own test_asyncio (--check)"
    "$python" tests/conformance/conformance_run.py --check --timeout 20
}

step "Rust: cargo fmt --check"
cargo fmt --check

step "build and install ferroloop ($($PY --version)) with the test and lint tools"
py=$(venv_for "$PY" "test,integration,dev")

step "Rust: clippy (-D warnings)"
PYO3_PYTHON=$py cargo clippy --release --quiet --all-targets -- -D warnings

step "Rust unit tests"
PYO3_PYTHON=$py cargo test --release --quiet --lib

# Miri over the pure-Rust unit tests (scripts/memcheck.sh; 2-3 minutes once its target
# directory is built, 6-7 the first time). Needs nightly's miri component, installed once.
if rustup +nightly component list --installed 2>/dev/null | grep -q '^miri'; then
    step "Rust: Miri on the pure-Rust unit tests (scripts/memcheck.sh)"
    PYTHON=$py bash scripts/memcheck.sh
else
    step "Rust: Miri not installed (rustup +nightly component add miri rust-src), skipped"
fi

step "Python: ruff check and ruff format --check (python/, tests/; bench/ with its own config)"
"$py" -m ruff check python tests
"$py" -m ruff format --check python tests
(cd bench && "$py" -m ruff check . && "$py" -m ruff format --check .)

step "stubs: mypy stubtest of _ferroloop.pyi against the built module"
"$py" -m mypy.stubtest ferroloop._ferroloop --allowlist scripts/stubtest-allowlist.txt

step "pytest ($($py --version)) on ferroloop, conformance included"
# Run from the repository root: tests import the installed build (the source is under python/).
"$py" -m pytest -q

step "pytest ($($py --version)) on stock asyncio (validates the tests; ferroloop_only skipped)"
FERROLOOP_TEST_LOOP=asyncio "$py" -m pytest -q -m "not conformance"

other_python 3.12
other_python 3.13

step "Python 3.14 and 3.15: pytest and conformance in a Debian sid root (scripts/python-root.sh)"
bash scripts/python-root.sh test
