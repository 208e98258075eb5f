"""``ferroloop.pytest_plugin`` as a ``pytest11`` entry point: off unless asked.

Each case runs pytest in a child process over the ``unittest.IsolatedAsyncioTestCase`` sample
project (``tests/plugin_samples/unittest_project``: its test asserts that it runs on a
ferroloop loop), with ferroloop "installed": a ``.dist-info`` directory whose
``entry_points.txt`` is written from ``pyproject.toml``'s ``[project.entry-points.pytest11]``,
so the declaration itself is what is tested. (The pytest-asyncio and anyio samples run with
the entry point in ``scripts/downstream.sh plugin``, which has those packages.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "tests" / "plugin_samples"

pytestmark = pytest.mark.ferroloop_only


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A directory to put on sys.path that makes ferroloop look installed, with its entry
    points as pyproject.toml declares them."""
    site = tmp_path_factory.mktemp("site")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
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
    return site


def run_samples(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pytest(site, SAMPLES, *args, "unittest_project")


def run_pytest(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import ferroloop  # the copy under test: this checkout's python/ or an installed one

    env = dict(os.environ)
    where = os.path.dirname(os.path.dirname(os.path.abspath(ferroloop.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(site), where, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_entry_point_is_declared():
    """pyproject.toml registers the plugin module under its own name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {
        "ferroloop.pytest_plugin": "ferroloop.pytest_plugin"
    }


def test_entry_point_alone_leaves_loops_alone(installed):
    """Loaded by the entry point only, the plugin does nothing: the sample's test runs on
    stock asyncio (and fails, as it asserts ferroloop), and no summary line is printed."""
    proc = run_samples(installed)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed" in proc.stdout
    assert "event loop(s) made by the plugin" not in proc.stdout


def test_ferroloop_option_turns_it_on(installed):
    """``--ferroloop`` (the option the entry point adds) runs the test on ferroloop."""
    proc = run_samples(installed, "--ferroloop", "--ferroloop-strict")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert "ferroloop: 1 event loop(s) made by the plugin" in proc.stdout


def test_naming_the_plugin_turns_it_on_once(installed):
    """``-p ferroloop.pytest_plugin`` with the entry point installed too: one plugin (no
    double registration), on."""
    proc = run_samples(installed, "-p", "ferroloop.pytest_plugin")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert proc.stdout.count("event loop(s) made by the plugin") == 1


def test_blocking_the_entry_point(installed):
    """``-p no:ferroloop.pytest_plugin`` keeps it out: its option is then unknown."""
    proc = run_samples(installed, "-p", "no:ferroloop.pytest_plugin", "--ferroloop")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "--ferroloop" in proc.stderr


MARKED_TEST = """
import asyncio

import pytest


@pytest.mark.ferroloop(virtual_time=True)
def test_marked():
    async def main():
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    assert asyncio.run(main()).startswith("ferroloop")
"""

FERROLOOP_TEST = """
import asyncio


def test_on_ferroloop():
    async def main():
        return type(asyncio.get_running_loop()).__module__

    assert asyncio.run(main()).startswith("ferroloop")
"""


def make_project(tmp_path: Path, test_source: str, conftest: str = "") -> Path:
    """A one-test project with its own rootdir (an empty ``pytest.ini``)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_sample.py").write_text(test_source)
    if conftest:
        (tmp_path / "conftest.py").write_text(conftest)
    return tmp_path


def test_virtual_time_marker_fails_while_the_plugin_is_off(installed, tmp_path):
    """A test marked ``ferroloop(virtual_time=True)`` with the plugin loaded only by its entry
    point fails, saying how to turn the plugin on (it used to run on stock asyncio in real
    time without a word)."""
    project = make_project(tmp_path, MARKED_TEST)
    proc = run_pytest(installed, project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the ferroloop pytest plugin is off" in proc.stdout
    assert "--ferroloop" in proc.stdout
    on = run_pytest(installed, project, "--ferroloop")
    assert on.returncode == 0, on.stdout + on.stderr
    assert "1 passed" in on.stdout


def test_other_marker_options_warn_while_the_plugin_is_off(installed, tmp_path):
    """Other marker options change nothing on stock asyncio: a warning, no failure."""
    source = MARKED_TEST.replace("virtual_time=True", "autojump_threshold=0.5").replace(
        'startswith("ferroloop")', 'startswith("asyncio")'
    )
    proc = run_pytest(installed, make_project(tmp_path, source))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the ferroloop pytest plugin is off" in proc.stdout


def test_conftest_pytest_plugins_turns_it_on(installed, tmp_path):
    """``pytest_plugins = ["ferroloop.pytest_plugin"]`` in the rootdir's conftest turns the
    plugin on also where the entry point loaded the module first (pytest then skips the
    conftest's import of it)."""
    conftest = 'pytest_plugins = ["ferroloop.pytest_plugin"]\n'
    proc = run_pytest(installed, make_project(tmp_path, FERROLOOP_TEST, conftest))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert proc.stdout.count("event loop(s) made by the plugin") == 1
