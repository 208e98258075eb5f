#!/usr/bin/env bash
# Incremental developer build: compiles the extension in release mode and drops it next to the
# Python package in python/ferroloop/, so that `PYTHONPATH=python` (or a .pth file) imports it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PYO3_PYTHON=$PY cargo build --release --quiet
suffix=$($PY -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
dest="python/ferroloop/_ferroloop$suffix"
# Replace the library atomically (a new file renamed over the old one), and only when it
# changed: copying over it in place would rewrite pages that running processes (a test suite
# started meanwhile) have mapped, and crash them.
if ! cmp -s target/release/lib_ferroloop.so "$dest"; then
    cp target/release/lib_ferroloop.so "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
fi
