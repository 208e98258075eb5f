"""Build and probe ``native-echo``, the Python-free floor of the echo workloads.

``../shared/native-echo`` (next to the repository; not part of it) is a
single-threaded Rust echo server on mio (epoll).  ``run.py`` builds it with
``cargo build --release`` in a cache directory outside the repository
(``$XDG_CACHE_HOME/ferroloop-bench/native-echo``, by default
``~/.cache/ferroloop-bench/native-echo``): the sources are copied there (only
files whose content changed, so cargo's incremental build stays valid) and
built, offline first (the crates are usually in cargo's cache already), then
online.  Nothing is written into the repository or into ``../shared``.

Every failure (no sources, no cargo, a build error, a binary that does not
print ``LISTEN``) makes the pseudo-loop ``native`` unavailable, with the
reason; it never stops the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workloads._native_server import read_listen_line

BENCH_DIRECTORY = Path(__file__).resolve().parent
REPOSITORY = BENCH_DIRECTORY.parent
DEFAULT_SOURCE = REPOSITORY.parent / "shared" / "native-echo"
#: Label of the pseudo-loop in reports (reserved: not usable in ``--loops``).
NATIVE_LABEL = "native"
LOOP_TYPE = "native-echo: Rust, mio (epoll), one thread, no Python"
BUILD_TIMEOUT_S = 600.0
#: Copied from the source directory; build products and VCS data are not.
SKIPPED_NAMES = {"target", ".git"}


@dataclass
class NativeEcho:
    """The outcome of preparing the native echo server."""

    target: str
    binary: str | None = None
    version: str | None = None
    reason: str | None = None

    def loop_entry(self) -> dict[str, Any]:
        """Describe it like a probed loop for the report (``available`` and details)."""
        entry: dict[str, Any] = {
            "label": NATIVE_LABEL,
            "target": self.target,
            "pseudo_loop": True,
        }
        if self.binary:
            entry.update(available=True, version=self.version, loop_type=LOOP_TYPE)
        else:
            entry.update(available=False, reason=self.reason)
        return entry


def cache_directory() -> Path:
    """Where the copy of the sources and the build live (never inside the repository)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    directory = (base / "ferroloop-bench" / "native-echo").resolve()
    if directory == REPOSITORY or REPOSITORY in directory.parents:
        directory = Path("/tmp/ferroloop-bench-native")
    return directory


def sync_sources(source: Path, copy: Path) -> None:
    """Copy ``source`` to ``copy``, rewriting only the files whose bytes changed."""
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if SKIPPED_NAMES & set(relative.parts) or not path.is_file():
            continue
        destination = copy / relative
        content = path.read_bytes()
        if destination.is_file() and destination.read_bytes() == content:
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(content)
        destination.chmod(0o644)


def find_cargo() -> str | None:
    """Path of ``cargo`` (PATH, else ``~/.cargo/bin``)."""
    found = shutil.which("cargo")
    if found:
        return found
    candidate = Path.home() / ".cargo" / "bin" / "cargo"
    return str(candidate) if os.access(candidate, os.X_OK) else None


def build(source: Path, log) -> NativeEcho:
    """Build ``native-echo`` from ``source`` in the cache directory."""
    target = str(source)
    if not (source / "Cargo.toml").is_file():
        return NativeEcho(target, reason=f"no native-echo sources at {source}")
    cargo = find_cargo()
    if cargo is None:
        return NativeEcho(target, reason="cargo not found (needed to build native-echo)")
    copy = cache_directory() / "source"
    try:
        copy.mkdir(parents=True, exist_ok=True)
        sync_sources(source, copy)
    except OSError as error:
        return NativeEcho(target, reason=f"cannot copy the sources to {copy}: {error}")
    log(f"building native-echo in {copy} (cargo build --release)")
    completed = None
    for extra in (["--offline"], []):
        try:
            completed = subprocess.run(
                [cargo, "build", "--release", "--quiet", *extra],
                cwd=copy,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return NativeEcho(target, reason=f"cargo build failed: {error}")
        if completed.returncode == 0:
            break
    if completed is None or completed.returncode != 0:
        tail = " / ".join(completed.stderr.strip().splitlines()[-3:]) if completed else ""
        return NativeEcho(target, reason=f"cargo build failed: {tail or 'no output'}")
    binary = copy / "target" / "release" / "native-echo"
    return NativeEcho(target, binary=str(binary), version=describe_build(copy))


def describe_build(copy: Path) -> str:
    """``<version>, mio <version>`` from the copy's Cargo.toml and Cargo.lock."""
    try:
        version = tomllib.loads((copy / "Cargo.toml").read_text())["package"]["version"]
        lock = tomllib.loads((copy / "Cargo.lock").read_text())
        mio = next(p["version"] for p in lock.get("package", []) if p["name"] == "mio")
    except (OSError, KeyError, StopIteration, tomllib.TOMLDecodeError):
        return "unknown"
    return f"{version}, mio {mio}"


def probe(native: NativeEcho) -> NativeEcho:
    """Start the binary once on an ephemeral port; unavailable if it does not listen."""
    if not native.binary:
        return native
    if not os.access(native.binary, os.X_OK):
        return NativeEcho(native.target, reason=f"{native.binary} is not executable")
    try:
        process = subprocess.Popen(
            [native.binary, "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as error:
        return NativeEcho(native.target, reason=f"cannot start {native.binary}: {error}")
    try:
        read_listen_line(process)
    except (RuntimeError, TimeoutError) as error:
        return NativeEcho(native.target, reason=str(error))
    finally:
        process.kill()
        process.communicate()
    return native


def prepare_native_echo(choice: str, log) -> NativeEcho:
    """Make the native echo server ready as ``--native-echo`` says.

    ``choice`` is ``auto`` (build ``../shared/native-echo``), a directory
    holding a ``Cargo.toml`` (build that), or the path of a built binary.
    ``log`` receives progress lines.
    """
    path = DEFAULT_SOURCE if choice == "auto" else Path(choice).expanduser().resolve()
    if path.is_file():
        return probe(NativeEcho(str(path), binary=str(path), version="prebuilt binary"))
    return probe(build(path, log))
