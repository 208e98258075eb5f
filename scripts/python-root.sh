#!/usr/bin/env bash
# Python 3.14 and 3.15 for the test command: Debian's own python3.14/python3.15 (and their
# libpython3.X-testsuite, the Lib/test/test_asyncio the conformance run needs) in a Debian sid
# root made once per machine with debootstrap, outside the checkout. For each version: a venv,
# ferroloop built and installed from this checkout with the machine's Rust toolchain, the pytest
# suite, and the conformance check against tests/conformance/expected_pass-3.X.txt.
#
#   bash scripts/python-root.sh test     # make the root if missing, then build + test each version
#   bash scripts/python-root.sh make     # only make (or complete) the root
#   bash scripts/python-root.sh shell    # a shell in the root, mounts in place (debugging)
#   bash scripts/python-root.sh run CMD… # one command in the root, in the checkout, mounts in place
#   bash scripts/python-root.sh clean    # delete the root (refused while anything is mounted in it)
#
# Environment: FERROLOOP_SID_ROOT (default /var/cache/ferroloop-sid), FERROLOOP_SID_PYTHONS
# (default "3.14 3.15"), FERROLOOP_SID_DEBUG_PYTHONS (debug interpreters the pytest suite also
# runs on, default "3.14"; "" for none), FERROLOOP_SID_MIRROR (default: the Debian mirror apt
# uses here).
# Needs root (debootstrap, chroot, mount). Without it the run is skipped with a message, unless
# FERROLOOP_SID_REQUIRED=1 (then it fails).
#
# Safety: everything bound into the root (/proc, /dev, ~/.cargo, ~/.rustup, the checkout; only
# /proc and /dev while packages are installed; the host's CA store is copied, never bound) is
# unmounted by an EXIT trap, and the root is only ever deleted after /proc/mounts
# shows nothing mounted under it: a `rm -rf` through a bound /dev or ~/.cargo would delete the
# host's.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOUT=$(pwd -P)

ROOT=${FERROLOOP_SID_ROOT:-/var/cache/ferroloop-sid}
ROOT=${ROOT%/}
VERSIONS=${FERROLOOP_SID_PYTHONS:-"3.14 3.15"}
# Debug interpreters (Debian's python3.X-dbg: Py_DEBUG, reference-count and API-misuse checks
# inside extensions) the pytest suite also runs on; "" for none.
DEBUG_VERSIONS=${FERROLOOP_SID_DEBUG_PYTHONS-"3.14"}
ACTION=${1:-test}
CARGO_DIR=${CARGO_HOME:-$HOME/.cargo}
RUSTUP_DIR=${RUSTUP_HOME:-$HOME/.rustup}
# Inside the root: where the checkout and the toolchain appear.
IN_SRC=/src/ferroloop
IN_CARGO=/opt/cargo
IN_RUSTUP=/opt/rustup

say() { echo "== python-root: $*"; }

if [ "$(id -u)" != 0 ]; then
    if [ "${FERROLOOP_SID_REQUIRED:-0}" = 1 ]; then
        say "needs root (debootstrap, chroot, mount)" >&2
        exit 1
    fi
    say "SKIPPED: needs root (debootstrap, chroot, mount); Python ${VERSIONS} not tested"
    exit 0
fi

# Seconds since the epoch, to time each phase.
now() { date +%s; }
phase_start=0
begin() { phase_start=$(now); say "$*"; }
end() { say "$* took $(($(now) - phase_start)) s"; }

# Every mount point under the root, deepest first (from /proc/mounts, octal escapes kept).
mounts_under_root() {
    awk -v root="$ROOT" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/mounts |
        awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-
}

unmount_all() {
    local point
    # Twice: an rbind's submounts go first, then what they were mounted on.
    for _ in 1 2 3; do
        while IFS= read -r point; do
            [ -n "$point" ] || continue
            umount "$(printf '%b' "$point")" 2>/dev/null || umount -l "$(printf '%b' "$point")" || true
        done < <(mounts_under_root)
    done
    if [ -n "$(mounts_under_root)" ]; then
        say "WARNING: still mounted under $ROOT:" >&2
        mounts_under_root >&2
        return 1
    fi
}

# The Debian mirror this machine's apt uses (deb822 .sources or one-line .list entries).
debian_mirror() {
    if [ -n "${FERROLOOP_SID_MIRROR:-}" ]; then
        echo "$FERROLOOP_SID_MIRROR"
        return
    fi
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list 2>/dev/null |
        grep -v '^[[:space:]]*#' |
        grep -oE '(https?)://[^ ]+' | sed 's:/*$::' | grep -E '/debian$' | head -n 1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

bind() { # bind SOURCE TARGET-inside-root [ro]
    local source=$1 target=$ROOT$2
    [ -d "$source" ] || { say "missing $source" >&2; return 1; }
    mkdir -p "$target"
    mount --rbind "$source" "$target"
    mount --make-rslave "$target"
    if [ "${3:-}" = ro ]; then
        mount -o remount,bind,ro "$target" 2>/dev/null || true
    fi
}

# What installing packages needs: /proc, /dev and copies (never binds) of the host's network
# settings. Nothing else of the host is visible while apt's maintainer scripts run.
mount_base() {
    bind /proc /proc
    bind /dev /dev
    # The host's CA store is COPIED in, never bound: installing ca-certificates in the root runs
    # update-ca-certificates there, which through a bind would rewrite the host's bundle without the
    # host's local CAs (/usr/local/share/ca-certificates: a proxy's CA, say) and break pip outside.
    mkdir -p "$ROOT/usr/local/share/ca-certificates" "$ROOT/etc/ssl/certs"
    cp -L /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/" 2>/dev/null || true
    cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    if [ -f /etc/pip.conf ]; then cp -L /etc/pip.conf "$ROOT/etc/pip.conf"; fi
}

# For building and testing: the base, plus the Rust toolchain and the checkout (bound).
mount_all() {
    mount_base
    bind "$CARGO_DIR" "$IN_CARGO"
    bind "$RUSTUP_DIR" "$IN_RUSTUP"
    bind "$CHECKOUT" "$IN_SRC"
}

# Runs a command in the root as a login-less root shell with the toolchain on PATH.
in_root() {
    chroot "$ROOT" /usr/bin/env -i \
        HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH="$IN_CARGO/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        CARGO_HOME="$IN_CARGO" RUSTUP_HOME="$IN_RUSTUP" \
        CARGO_TARGET_DIR=/var/tmp/ferroloop-target \
        PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$@"
}

packages() {
    local v list="gcc libc6-dev ca-certificates"
    for v in $VERSIONS; do
        list="$list python$v python$v-dev python$v-venv libpython$v-testsuite"
    done
    for v in $DEBUG_VERSIONS; do
        list="$list python$v-dbg"
    done
    echo "$list"
}

make_root() {
    local mirror stamp
    mirror=$(debian_mirror)
    if [ ! -x "$ROOT/usr/bin/apt-get" ] || [ ! -f "$ROOT/.debootstrap-done" ]; then
        command -v debootstrap >/dev/null || {
            begin "installing debootstrap"
            apt-get install -y -qq debootstrap >/dev/null
            end "installing debootstrap"
        }
        [ -z "$(mounts_under_root)" ] || { say "refusing: mounts under $ROOT" >&2; exit 1; }
        rm -rf --one-file-system "$ROOT"
        mkdir -p "$ROOT"
        begin "debootstrap sid from $mirror into $ROOT"
        debootstrap --variant=minbase sid "$ROOT" "$mirror" >"$ROOT.debootstrap.log" 2>&1 || {
            tail -n 30 "$ROOT.debootstrap.log" >&2
            exit 1
        }
        touch "$ROOT/.debootstrap-done"
        end "debootstrap"
    fi
    stamp="$ROOT/.packages-$(packages | tr ' ' '\n' | sort | md5sum | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        begin "apt-get install $(packages)"
        mount_base
        # The mirror may serve a snapshot whose Release file has expired.
        in_root env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Check-Valid-Until=false update -qq
        # shellcheck disable=SC2046
        in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            $(packages) >/dev/null
        in_root apt-get clean
        unmount_all
        touch "$stamp"
        end "packages"
    fi
}

test_version() {
    local v=$1 venv=/opt/venv-$1 failed=0
    begin "Python $v: venv, build and install ferroloop"
    # (Inside `cmd || ...`, set -e is off: each step says itself that it failed.)
    in_root "python$v" -m venv "$venv" || return 1
    in_root "$venv/bin/python" -m pip install --quiet --upgrade pip || return 1
    in_root sh -c "cd $IN_SRC && $venv/bin/python -m pip install --quiet '.[test,integration]'" ||
        return 1
    end "Python $v build"
    begin "Python $v: pytest (not conformance)"
    # The differential fuzzer runs a smaller budget than on the main Python (CI time).
    in_root sh -c "cd $IN_SRC && FERROLOOP_FUZZ_EXAMPLES=15 $venv/bin/python -m pytest -q -p no:cacheprovider -m 'not conformance'" ||
        failed=1
    end "Python $v pytest"
    begin "Python $v: conformance --check"
    in_root sh -c "cd $IN_SRC && $venv/bin/python tests/conformance/conformance_run.py --check" ||
        failed=1
    end "Python $v conformance"
    return $failed
}

# The pytest suite on a debug interpreter (python3.Xd, from python3.X-dbg): a failed assertion
# of Py_DEBUG inside the extension aborts the run. On ferroloop only (stock asyncio is not under
# test there); conformance is left to the release interpreters. A subset, for CI's time: the
# tests marked slow, the soak tests (test_soak.py: 52 s there) and the Ctrl+C timing tests
# (test_sigint.py: reaction-time limits a 3-5x slower interpreter misses on a loaded machine)
# run on the release interpreters only.
test_debug_version() {
    local v=$1 venv=/opt/venv-$1d failed=0
    begin "Python $v debug build (python${v}d): venv, build and install ferroloop"
    in_root "python${v}d" -m venv "$venv" || return 1
    in_root "$venv/bin/python" -m pip install --quiet --upgrade pip || return 1
    in_root sh -c "cd $IN_SRC && $venv/bin/python -m pip install --quiet '.[test,integration]'" ||
        return 1
    in_root "$venv/bin/python" -c 'import sys; assert hasattr(sys, "gettotalrefcount"), "not Py_DEBUG"' ||
        return 1
    end "Python $v debug build"
    begin "Python $v debug build: pytest (not conformance)"
    # aiohttp and its helpers (multidict, yarl, frozenlist, propcache) come as wheels built for
    # the release interpreter, which Debian's debug one loads too and crashes in (SIGSEGV in
    # PyIter_Send, on the stock loop as well): their pure-Python code is used instead.
    in_root sh -c "cd $IN_SRC && AIOHTTP_NO_EXTENSIONS=1 MULTIDICT_NO_EXTENSIONS=1 \
        YARL_NO_EXTENSIONS=1 FROZENLIST_NO_EXTENSIONS=1 PROPCACHE_NO_EXTENSIONS=1 \
        $venv/bin/python -m pytest -q -p no:cacheprovider \
        -m 'not conformance and not slow' --ignore=tests/test_soak.py --ignore=tests/test_sigint.py" ||
        failed=1
    end "Python $v debug pytest"
    return $failed
}

case $ACTION in
make | test | shell | run | clean) ;;
*)
    echo "usage: $0 [test|make|shell|run CMD...|clean]" >&2
    exit 2
    ;;
esac

# One run at a time per root (two checkouts testing at once would share its venvs; a clean must
# not unmount or delete what another run is using).
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9

if [ "$ACTION" = clean ]; then
    unmount_all
    [ -z "$(mounts_under_root)" ] || { say "refusing to delete: mounts under $ROOT" >&2; exit 1; }
    rm -rf --one-file-system "$ROOT" "$ROOT.debootstrap.log"
    say "deleted $ROOT"
    exit 0
fi

trap 'unmount_all' EXIT
# Leftovers from a killed run first.
unmount_all

total_start=$(now)
make_root
[ "$ACTION" = make ] && exit 0
mount_all
if [ "$ACTION" = shell ]; then
    in_root bash -c "cd $IN_SRC && exec bash -i"
    exit 0
fi
if [ "$ACTION" = run ]; then
    shift
    in_root bash -c "cd $IN_SRC && exec \"\$@\"" run "$@"
    exit $?
fi

status=0
for v in $VERSIONS; do
    test_version "$v" || status=1
done
for v in $DEBUG_VERSIONS; do
    test_debug_version "$v" || status=1
done
say "total $(($(now) - total_start)) s"
if [ $status != 0 ]; then
    say "FAILED on one of: $VERSIONS (debug: $DEBUG_VERSIONS)" >&2
fi
exit $status
