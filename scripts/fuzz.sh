#!/usr/bin/env bash
# A longer differential fuzzing run than CI's: N random programs (default 2000), each run on
# stock asyncio and on ferroloop (tests/fuzz/). Uses the interpreter in $PYTHON (default
# python3) with ferroloop importable (an installed build, or PYTHONPATH=$PWD/python after
# scripts/dev-build.sh) and hypothesis installed. A divergence stops the run and prints the
# program (a literal to paste into a regression test) and where the traces first differ.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
PY=${PYTHON:-python3}
FERROLOOP_FUZZ_EXAMPLES=$N FERROLOOP_FUZZ_RANDOM=1 \
    "$PY" -m pytest -q -p no:cacheprovider -s tests/fuzz/test_differential_fuzz.py
