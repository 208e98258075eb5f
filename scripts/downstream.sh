#!/usr/bin/env bash
# Downstream suites: pinned releases' own test suites with ferroloop as the loop of every test,
# compared with the tests that fail on stock asyncio too. See the README's "Downstream suites".
#   bash scripts/downstream.sh anyio              # one suite on ferroloop
#   bash scripts/downstream.sh anyio --stock      # the same on stock asyncio
#   bash scripts/downstream.sh anyio --stock --update   # rewrite tests/downstream/anyio-stock-failures.txt
#   bash scripts/downstream.sh ci                 # the suites .ci/run checks
# PYTHON=... picks the Python (default python3); the cache is ~/.cache/ferroloop-downstream
# (FERROLOOP_DOWNSTREAM_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# ferroloop from this checkout, for the Python under test
PYTHON=$PY bash scripts/dev-build.sh
exec "$PY" scripts/downstream.py --python "$(command -v "$PY")" "$@"
