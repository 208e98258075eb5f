#!/usr/bin/env bash
# Memory safety of the pure-Rust parts (issue #11): their unit tests interpreted by Miri, which
# reports undefined behaviour (out-of-bounds or dangling accesses, use after free, data races,
# invalid values, leaks) that a normal test run would not notice.
#
# Covered: core::clock, core::fd_map, core::timers, core::post_gate (threads and condvars), and
# the write buffer's queue (transport::write_buffer tests that need no Python). Not covered:
# core::poller (Miri has no epoll_pwait2), and every test that starts the interpreter (Miri
# cannot call into libpython): those code paths are exercised by the pytest suites instead.
#
# Needs the nightly toolchain with the miri and rust-src components (one-time, from the rustup
# servers: `rustup +nightly component add miri rust-src`); after that it runs offline.
# Usage: bash scripts/memcheck.sh   (exit status 0 when Miri finds nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup +nightly component list --installed 2>/dev/null | grep -q '^miri'; then
    echo "memcheck: the nightly miri component is not installed" >&2
    echo "  (rustup toolchain install nightly && rustup +nightly component add miri rust-src)" >&2
    exit 2
fi
# Miri builds into its own target directory, outside the checkout so that a fresh clone (CI)
# reuses the dependencies Miri compiled before (pyo3 under Miri: about 5 minutes on 2 busy
# cores); MEMCHECK_TARGET_DIR overrides it. -Zmiri-disable-isolation: the clock tests read
# CLOCK_MONOTONIC.
export PYO3_PYTHON=${PYTHON:-python3}
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
target_dir=${MEMCHECK_TARGET_DIR:-$HOME/.cache/ferroloop-miri-target}
cargo +nightly miri test --quiet --lib --target-dir "$target_dir" -- \
    core:: transport::write_buffer::tests::small_copies transport::write_buffer::tests::consume \
    transport::write_buffer::tests::clear --skip core::poller
