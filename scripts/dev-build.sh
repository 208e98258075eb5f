#!/usr/bin/env bash
# Incremental developer build: compiles the extension in release mode and drops it next to the
# Python package in python/ferroloop/, so that `PYTHONPATH=python` (or a .pth file) imports it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PYO3_PYTHON=$PY cargo build --release --quiet
suffix=$($PY -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
cp target/release/lib_ferroloop.so "python/ferroloop/_ferroloop$suffix"
