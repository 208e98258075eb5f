#!/usr/bin/env bash
# The whole test suite, from a fresh clone: builds and installs ferroloop for every CPython
# 3.11+ found, runs the Rust unit tests, the pytest suite (with the conformance run of CPython's
# test_asyncio on 3.11), and the pytest suite again on 3.12/3.13 where pyenv has them.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
echo "== build and install ferroloop ($($PY --version))"
$PY -m pip install --quiet ".[test,integration]"

echo "== Rust unit tests"
PYO3_PYTHON=$PY cargo test --release --quiet --lib

echo "== pytest ($($PY --version)), conformance included"
# The package's source lives under python/, so this imports the installed build.
$PY -m pytest -q

for version in 3.12 3.13; do
    other=$(ls -d "$HOME"/.pyenv/versions/"$version".*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$other" ] || continue
    echo "== build and pytest on $($other --version)"
    $other -m pip install --quiet ".[test,integration]"
    $other -m pytest -q -m "not conformance"
done
echo "== all tests passed"
