"""Spawning: a child started by the loop is set up, and fails, exactly as ``subprocess.Popen``
sets it up and fails (ferroloop starts it with clone + exec in Rust, asyncio with ``Popen``).

Every case runs the same call twice: through ``subprocess.Popen`` directly (the reference) and
through ``asyncio.create_subprocess_exec/_shell`` on the loop under test, and compares what the
child saw (argv, cwd, environment, descriptors, session, signals) or the exception raised.
Runs on ferroloop and on stock asyncio (``FERROLOOP_TEST_LOOP=asyncio``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

PY = sys.executable

PROBE = r"""
import json, os, stat, sys
parent_pipes = [int(x) for x in os.environ.get('FERRO_PIPES', '').split()]
def is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
fds = [fd for fd in range(256) if is_open(fd)]
def ident(fd):
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    if stat.S_ISFIFO(st.st_mode):
        return 'a new pipe' if st.st_ino not in parent_pipes else [st.st_dev, st.st_ino]
    return [st.st_dev, st.st_ino]
pid = os.getpid()
print(json.dumps({
    'argv': sys.argv[1:], 'cwd': os.getcwd(), 'x': os.environ.get('FERRO_X'),
    'path': os.environ.get('PATH'), 'fds': fds,
    'std': [ident(0), ident(1), ident(2)],
    'leader': os.getsid(0) == pid, 'group_leader': os.getpgid(0) == pid,
}))
"""


def reference(args, **kwargs) -> dict:
    """What the child sees when ``subprocess.Popen`` starts it."""
    with subprocess.Popen(args, stdout=kwargs.pop("stdout", subprocess.PIPE), **kwargs) as proc:
        out, _ = proc.communicate()
    return json.loads(out)


def through_loop(loop, args, shell=False, **kwargs) -> dict:
    """What the child sees when the loop starts it."""
    stdout = kwargs.pop("stdout", subprocess.PIPE)

    async def main():
        if shell:
            proc = await asyncio.create_subprocess_shell(args, stdout=stdout, **kwargs)
        else:
            proc = await asyncio.create_subprocess_exec(*args, stdout=stdout, **kwargs)
        out, _ = await proc.communicate()
        return out

    return json.loads(loop.run_until_complete(main()))


def outcome_of(call) -> tuple:
    """The exception a call raises, as comparable values."""
    try:
        result = call()
    except Exception as exc:  # noqa: BLE001 - compared whole
        return (
            type(exc),
            getattr(exc, "errno", None),
            getattr(exc, "strerror", None),
            getattr(exc, "filename", None),
            str(exc),
        )
    return ("no exception", result)


@pytest.fixture
def inheritable_pipe():
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def test_default_setup_matches_popen(loop):
    args = [PY, "-c", PROBE, "a b", "ü"]
    assert through_loop(loop, args) == reference(args)


def test_pass_fds_and_close_fds_match_popen(loop, inheritable_pipe):
    read_end, write_end = inheritable_pipe
    args = [PY, "-c", PROBE]
    for kwargs in (
        {"pass_fds": (read_end,)},
        {"close_fds": False},
        {"pass_fds": (read_end, write_end), "close_fds": True},
    ):
        seen = through_loop(loop, args, **kwargs)
        assert seen == reference(args, **kwargs), kwargs
    assert write_end in through_loop(loop, args, close_fds=False)["fds"]
    assert read_end in through_loop(loop, args, pass_fds=(read_end,))["fds"]


def test_pass_fds_without_close_fds_warns_as_popen(loop, inheritable_pipe):
    read_end, _ = inheritable_pipe
    args = [PY, "-c", PROBE]
    with pytest.warns(RuntimeWarning, match="pass_fds overriding close_fds"):
        seen = through_loop(loop, args, pass_fds=(read_end,), close_fds=False)
    with pytest.warns(RuntimeWarning, match="pass_fds overriding close_fds"):
        expected = reference(args, pass_fds=(read_end,), close_fds=False)
    assert seen == expected


def test_cwd_env_and_executable_match_popen(loop, tmp_path):
    kwargs = {"cwd": tmp_path, "env": {"FERRO_X": "y", "PATH": "/usr/bin:/bin"}}
    args = ["not-the-program", "-c", PROBE, "z"]
    seen = through_loop(loop, args, executable=PY, **kwargs)
    assert seen == reference(args, executable=PY, **kwargs)
    assert seen["cwd"] == str(tmp_path) and seen["x"] == "y"
    # A relative program path is looked up from cwd, as Popen's child does.
    (tmp_path / "py").symlink_to(PY)
    args = ["./py", "-c", PROBE]
    assert through_loop(loop, args, cwd=str(tmp_path)) == reference(args, cwd=str(tmp_path))


def test_path_search_uses_the_child_environment(loop, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ferro-py").symlink_to(PY)
    (tmp_path / "noexec").mkdir()
    (tmp_path / "noexec" / "ferro-py").write_text("")
    path = f"/nonexistent:{tmp_path / 'noexec'}:{tmp_path / 'bin'}"
    args = ["ferro-py", "-c", PROBE]
    seen = through_loop(loop, args, env={"PATH": path})
    assert seen == reference(args, env={"PATH": path})
    assert seen["path"] == path


def test_shell_with_executable_matches_popen(loop):
    command = f'{PY} -c "$(printf \'%s\' "$P")" shell-arg'
    env = {**os.environ, "P": PROBE}
    seen = through_loop(loop, command, shell=True, env=env, executable="/bin/bash")
    assert seen == reference(command, shell=True, env=env, executable="/bin/bash")


def test_redirections_match_popen(loop, tmp_path):
    args = [PY, "-c", PROBE]
    with open(tmp_path / "in", "wb+") as file_in:
        for kwargs in (
            {"stdin": subprocess.DEVNULL, "stderr": subprocess.STDOUT},
            {"stdin": file_in, "stderr": subprocess.DEVNULL},
            {"stdin": file_in.fileno(), "stderr": subprocess.PIPE},
            # The child's stderr from the parent's fd 0, which the stdin pipe replaces in the
            # child first: Popen copies it out of the way.
            {"stdin": subprocess.PIPE, "stderr": 0},
            {"stdin": 2, "stderr": 1},
        ):
            seen = through_loop(loop, args, **kwargs)
            assert seen == reference(args, **kwargs), kwargs
    # Identities of the parent's descriptors the child was given.
    seen = through_loop(loop, args, stdin=subprocess.PIPE, stderr=0)
    parent_zero = os.fstat(0)
    assert seen["std"][2] == [parent_zero.st_dev, parent_zero.st_ino]


def test_session_group_and_signals_match_popen(loop):
    args = [PY, "-c", PROBE]
    for kwargs in ({"start_new_session": True}, {"process_group": 0}):
        seen = through_loop(loop, args, **kwargs)
        assert seen == reference(args, **kwargs), kwargs
        assert seen["group_leader"]
    assert through_loop(loop, args, start_new_session=True)["leader"]
    assert not through_loop(loop, args)["leader"]
    # Signal dispositions, seen by a program that does not change them (Python ignores
    # SIGPIPE itself at start-up).
    status = ["cat", "/proc/self/status"]
    for restore in (True, False):
        seen = through_loop_raw(loop, status, restore_signals=restore)
        expected = subprocess.run(status, restore_signals=restore, capture_output=True).stdout
        assert ignored_signals(seen) == ignored_signals(expected)
    sigpipe = 1 << (signal.SIGPIPE - 1)
    assert ignored_signals(through_loop_raw(loop, status, restore_signals=True)) & sigpipe == 0
    assert ignored_signals(through_loop_raw(loop, status, restore_signals=False)) & sigpipe


def ignored_signals(status: bytes) -> int:
    line = next(x for x in status.splitlines() if x.startswith(b"SigIgn:"))
    return int(line.split()[1], 16)


def through_loop_raw(loop, args, **kwargs) -> bytes:
    async def main():
        proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, **kwargs)
        out, _ = await proc.communicate()
        return out

    return loop.run_until_complete(main())


def _error_cases(tmp_path) -> dict:
    script = tmp_path / "no-shebang"
    script.write_bytes(b"\x00\x01binary")
    script.chmod(0o755)
    plain = tmp_path / "plain-file"
    plain.write_text("")
    return {
        "missing absolute": (["/nonexistent/ferro-prog"], {}),
        "missing in PATH": (["ferro-no-such-prog"], {}),
        "missing in env PATH": (["ferro-no-such-prog"], {"env": {"PATH": str(tmp_path)}}),
        "not executable": ([str(plain)], {}),
        "a directory": ([str(tmp_path)], {}),
        "through a file": ([f"{plain}/x"], {}),
        "exec format": ([str(script)], {}),
        "missing cwd": ([PY, "-c", "pass"], {"cwd": str(tmp_path / "gone")}),
        "cwd is a file": ([PY, "-c", "pass"], {"cwd": str(plain)}),
        "cwd and program missing": (["/nonexistent/p"], {"cwd": str(tmp_path / "gone")}),
        "bad stdin fd": ([PY, "-c", "pass"], {"stdin": 987654}),
        "bad pass_fds": ([PY, "-c", "pass"], {"pass_fds": (987654,)}),
        "= in env name": ([PY, "-c", "pass"], {"env": {"A=B": "c"}}),
        "NUL in argument": ([PY, "-c", "pass\0"], {}),
        "NUL in env": ([PY, "-c", "pass"], {"env": {"A": "b\0"}}),
        "int argument": ([PY, "-c", 5], {}),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing absolute",
        "missing in PATH",
        "missing in env PATH",
        "not executable",
        "a directory",
        "through a file",
        "exec format",
        "missing cwd",
        "cwd is a file",
        "cwd and program missing",
        "bad stdin fd",
        "bad pass_fds",
        "= in env name",
        "NUL in argument",
        "NUL in env",
        "int argument",
    ],
)
def test_spawn_errors_match_popen(loop, tmp_path, case):
    args, kwargs = _error_cases(tmp_path)[case]

    def with_popen():
        subprocess.Popen(args, stdout=subprocess.DEVNULL, **kwargs).wait()

    async def spawn():
        proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.DEVNULL, **kwargs)
        await proc.wait()

    expected = outcome_of(with_popen)
    seen = outcome_of(lambda: loop.run_until_complete(spawn()))
    assert seen == expected
    assert expected[0] is not str  # every case fails


def test_popen_object_in_extra_info_works(loop):
    async def main():
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol, PY, "-c", "import time; time.sleep(30)"
        )
        proc = transport.get_extra_info("subprocess")
        facts = [isinstance(proc, subprocess.Popen), proc.pid == transport.get_pid()]
        facts.append(proc.poll())
        facts.append(repr(proc).startswith("<Popen: returncode: None args: "))
        proc.kill()
        facts.append(await transport._wait())
        transport.close()
        return facts

    assert loop.run_until_complete(main()) == [True, True, None, True, -9]


@pytest.mark.ferroloop_only
def test_native_spawn_is_used_unless_only_popen_can(loop, monkeypatch, tmp_path):
    """The native spawn starts the child by default and for umask and user (fork and exec);
    preexec_fn and a replaced subprocess.Popen go through Popen (and still work)."""
    from ferroloop import _spawn

    native_calls = []
    real_spawn_child = _spawn.spawn_child

    def counting(*args, **kwargs):
        native_calls.append(args[0])
        return real_spawn_child(*args, **kwargs)

    monkeypatch.setattr(_spawn, "spawn_child", counting)

    async def run(**kwargs):
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import os; print(oct(os.umask(0)))", stdout=subprocess.PIPE, **kwargs
        )
        out, _ = await proc.communicate()
        return out.strip()

    async def main():
        results = [await run()]
        counts = [len(native_calls)]
        results.append(await run(umask=0o027))
        counts.append(len(native_calls))
        results.append(await run(preexec_fn=lambda: os.umask(0o077)))
        counts.append(len(native_calls))
        results.append(await run(user=os.getuid()))
        counts.append(len(native_calls))
        return results, counts

    results, counts = loop.run_until_complete(main())
    assert counts == [1, 2, 2, 3]
    assert results[1:3] == [b"0o27", b"0o77"]


IDENTITY = ["/bin/sh", "-c", "id -u; id -g; id -G; umask"]

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing user or group needs root")


def identity_through_loop(loop, **kwargs) -> list[str]:
    return through_loop_raw(loop, IDENTITY, **kwargs).decode().split("\n")


def identity_through_popen(**kwargs) -> list[str]:
    return subprocess.run(IDENTITY, capture_output=True, **kwargs).stdout.decode().split("\n")


def test_umask_matches_popen(loop):
    for umask in (0o027, 0, 0o777, -1, -5):
        seen = identity_through_loop(loop, umask=umask)
        assert seen == identity_through_popen(umask=umask), umask
    assert identity_through_loop(loop, umask=0o027)[3] == "0027"


@as_root
def test_user_group_and_extra_groups_match_popen(loop):
    nobody = ["65534", "65534", "65534 1 2"]
    cases = [
        ({"user": "nobody"}, None),
        ({"user": 65534, "group": "nogroup", "extra_groups": [1, "bin"]}, nobody),
        ({"group": 65534, "extra_groups": []}, None),
        ({"extra_groups": [2, 1, 2]}, None),
        ({"user": "nobody", "umask": 0o077, "start_new_session": True, "cwd": "/"}, None),
    ]
    for kwargs, expected in cases:
        seen = identity_through_loop(loop, **kwargs)
        assert seen == identity_through_popen(**kwargs), kwargs
        if expected is not None:
            assert seen[:3] == expected
    assert identity_through_loop(loop, user="nobody")[0] == "65534"
    assert identity_through_loop(loop, group="nogroup")[1] == "65534"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"user": "ferro-no-such-user"},
        {"group": "ferro-no-such-group"},
        {"extra_groups": ["root", "ferro-no-such-group"]},
        {"extra_groups": "root"},
        {"extra_groups": 5},
        {"extra_groups": [1.5]},
        {"user": -1},
        {"group": -2},
        {"extra_groups": [0, -3]},
        {"user": 1.5},
        {"group": [0]},
        {"user": 2**32},
        {"group": 2**40},
        {"umask": "022"},
        {"umask": 2**40},
        {"group": "ferro-no-such-group", "user": -1},
        {"user": "ferro-no-such-user", "extra_groups": "x"},
    ],
    ids=repr,
)
def test_credential_errors_match_popen(loop, kwargs):
    def with_popen():
        subprocess.Popen(["true"], **kwargs).wait()

    async def spawn():
        proc = await asyncio.create_subprocess_exec("true", **kwargs)
        await proc.wait()

    expected = outcome_of(with_popen)
    seen = outcome_of(lambda: loop.run_until_complete(spawn()))
    assert seen == expected
    assert expected[0] is not str  # every case fails


@as_root
@pytest.mark.parametrize(
    "kwargs",
    [
        {"user": "nobody", "cwd": "/nonexistent-ferro-dir"},
        {"group": "nogroup", "executable": "/nonexistent/prog"},
        {"umask": 0o022, "stdin": 987654},
        {"user": "nobody", "executable": "/root"},
    ],
    ids=repr,
)
def test_fork_exec_errors_match_popen(loop, kwargs):
    def with_popen():
        subprocess.Popen(["true"], **kwargs).wait()

    async def spawn():
        proc = await asyncio.create_subprocess_exec("true", **kwargs)
        await proc.wait()

    expected = outcome_of(with_popen)
    seen = outcome_of(lambda: loop.run_until_complete(spawn()))
    assert seen == expected
    assert expected[0] is not str  # every case fails


def env_for_nobody(child) -> dict[str, str]:
    """The child environment, with the directory holding the ``ferroloop`` package this run
    imports first on the path: a test run may have it installed in a venv the other
    interpreter does not know."""
    import ferroloop

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(ferroloop.__file__)))
    env = child.env()
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (package_parent, env.get("PYTHONPATH", "")) if part
    )
    return env


def python_for_nobody(env: dict[str, str]) -> str | None:
    """An interpreter of this Python version that user nobody can run and that finds the
    ``ferroloop`` under test (ours may sit in a directory only root can enter)."""
    wanted = tuple(sys.version_info[:2])
    check = f"import sys, ferroloop; print(sys.version_info[:2] == {wanted!r})"
    for candidate in (
        sys.executable,
        f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",
    ):
        try:
            done = subprocess.run(
                [candidate, "-c", check],
                user="nobody",
                capture_output=True,
                cwd="/",
                env=env,
            )
        except OSError:
            continue
        if done.stdout.strip() == b"True":
            return candidate
    return None


@as_root
def test_refused_credentials_fail_in_the_child_as_popen(child):
    """Run as nobody, a child asking for root's user or groups gets the PermissionError that
    setreuid/setregid/setgroups raise in Popen's child, and no descriptor leaks."""
    source = child.loop_prelude + textwrap.dedent(
        """
        import asyncio, json, os, subprocess

        def outcome(call):
            try:
                call()
            except Exception as exc:
                return [type(exc).__name__, exc.errno, exc.strerror, repr(exc.filename)]
            return "no exception"

        async def spawn(kwargs):
            proc = await asyncio.create_subprocess_exec("true", **kwargs)
            await proc.wait()

        loop = new_loop()
        report = []
        before = len(os.listdir("/proc/self/fd"))
        for kwargs in ({"user": 0}, {"group": 0}, {"extra_groups": [0]}, {"umask": 0, "user": 0}):
            expected = outcome(lambda: subprocess.Popen(["true"], **kwargs).wait())
            seen = outcome(lambda: loop.run_until_complete(spawn(kwargs)))
            report.append([expected, seen])
        report.append(len(os.listdir("/proc/self/fd")) - before)
        loop.close()
        print(json.dumps(report))
        """
    )
    env = env_for_nobody(child)
    python = python_for_nobody(env)
    if python is None:
        pytest.skip("no interpreter of this version that user nobody can run with ferroloop")
    done = subprocess.run(
        [python, "-c", source],
        user="nobody",
        group="nogroup",
        extra_groups=[],
        capture_output=True,
        env=env,
        cwd="/",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report.pop() == 0
    for expected, seen in report:
        assert expected[:3] == ["PermissionError", 1, "Operation not permitted"]
        assert seen == expected


def test_fork_exec_setup_matches_popen(loop, inheritable_pipe, tmp_path):
    """With umask (the fork/exec path natively), descriptors, redirections, cwd, session and
    signal dispositions are set up as Popen sets them up."""
    read_end, write_end = inheritable_pipe
    args = [PY, "-c", PROBE]
    with open(tmp_path / "in", "wb+") as file_in:
        for kwargs in (
            {},
            {"pass_fds": (read_end,)},
            {"close_fds": False},
            {"stdin": subprocess.DEVNULL, "stderr": subprocess.STDOUT},
            {"stdin": file_in, "stderr": subprocess.DEVNULL},
            {"stdin": subprocess.PIPE, "stderr": 0},
            {"stdin": 2, "stderr": 1},
            {"start_new_session": True, "cwd": tmp_path},
            {"process_group": 0, "env": {"FERRO_X": "z"}},
        ):
            seen = through_loop(loop, args, umask=0o022, **kwargs)
            assert seen == reference(args, umask=0o022, **kwargs), kwargs
    assert write_end in through_loop(loop, args, umask=0o022, close_fds=False)["fds"]
    status = ["cat", "/proc/self/status"]
    for restore in (True, False):
        seen = through_loop_raw(loop, status, restore_signals=restore, umask=0o022)
        expected = subprocess.run(
            status, restore_signals=restore, umask=0o022, capture_output=True
        ).stdout
        assert ignored_signals(seen) == ignored_signals(expected)
        blocked = [x for x in seen.splitlines() if x.startswith((b"SigBlk:", b"SigCgt:"))]
        assert blocked == [
            x for x in expected.splitlines() if x.startswith((b"SigBlk:", b"SigCgt:"))
        ]


def test_child_inherits_the_blocked_signals_of_the_spawning_thread(loop):
    """The child starts with the spawning thread's signal mask, as Popen's does (the native
    spawn no longer blocks signals across its clone3: the child keeps the mask it inherits,
    and must not come out with every signal blocked, nor with none)."""
    status = ["cat", "/proc/self/status"]
    extra = {signal.SIGUSR2, signal.SIGWINCH}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, extra)
    try:
        for kwargs in ({}, {"umask": 0o022}, {"start_new_session": True}):
            seen = through_loop_raw(loop, status, **kwargs)
            expected = subprocess.run(status, capture_output=True, **kwargs).stdout
            blocked = [x for x in seen.splitlines() if x.startswith(b"SigBlk:")]
            assert blocked == [x for x in expected.splitlines() if x.startswith(b"SigBlk:")]
            mask = int(blocked[0].split()[1], 16)
            assert {sig for sig in extra if mask & (1 << (sig - 1))} == extra, kwargs
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
