"""Starting a child natively (vfork-style clone + exec in Rust) instead of ``subprocess.Popen``.

``spawn()`` does in Python only what must see Python objects, the way ``Popen`` does it
(arguments and environment to bytes, the shell's argv, the ``PATH`` candidates, the
``subprocess.Popen`` audit event, the ``pass_fds`` warning), then calls the native
``spawn_child`` (``src/process/spawn.rs``), which creates the pipes, starts the child and raises
the ``OSError`` subclass ``Popen`` raises (naming the program, or ``cwd``).

The result is a ``subprocess.Popen`` object, filled in as ``Popen.__init__`` fills it, so that
``transport.get_extra_info('subprocess')`` keeps its ``kill``/``poll``/``wait`` methods, and the
child's pidfd when asked for (it comes with the clone).

``user``, ``group``, ``extra_groups`` and ``umask`` are resolved here (names looked up, checked
with ``Popen``'s exceptions, in ``Popen``'s order); the native side sets them in the child.

``spawn()`` returns None when the call needs ``subprocess.Popen`` itself: ``preexec_fn`` (Python
code in the child), an option this module does not know or an id out of range (``Popen`` raises
its own error for it), or ``subprocess.Popen`` replaced (a test patching it expects it called).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from io import FileIO
from typing import Any

from ._ferroloop import spawn_child

#: Options spawn() handles itself.
_NATIVE_OPTIONS = frozenset(
    (
        "executable",
        "close_fds",
        "pass_fds",
        "cwd",
        "env",
        "restore_signals",
        "start_new_session",
        "process_group",
        "user",
        "group",
        "extra_groups",
        "umask",
    )
)

#: Options spawn() accepts only at their default value (anything else: subprocess.Popen).
_DEFAULT_ONLY = {
    "preexec_fn": None,
    "startupinfo": None,
    "creationflags": 0,
    "pipesize": -1,
}

#: ``subprocess.Popen`` as imported: a program (or test) that replaced it expects it to be
#: called, as asyncio calls it.
_POPEN = subprocess.Popen

_CODES = (subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL)

#: Whether Popen names ``cwd`` only for a failed chdir (3.13; 3.11/3.12 name it for any
#: failure before exec).
_CHDIR_ONLY = "noexec:chdir" in subprocess.Popen._execute_child.__code__.co_consts


#: The highest user or group id passed to the native side (``(uid_t)-1`` means "unchanged").
_ID_MAX = 0xFFFF_FFFE


def _group_number(name_or_id: Any, wrong_type: str) -> int:
    """A group given by name or number, as a number (``KeyError`` for an unknown name)."""
    if isinstance(name_or_id, str):
        import grp

        return grp.getgrnam(name_or_id).gr_gid
    if isinstance(name_or_id, int):
        return name_or_id
    raise TypeError(wrong_type.format(type(name_or_id)))


#: The options ``_credentials`` reads.
_CREDENTIAL_OPTIONS = frozenset(("group", "extra_groups", "user", "umask"))

#: ``_credentials`` of a child that keeps the parent's groups, user and umask.
_INHERITED_CREDENTIALS: dict = {"groups": None, "gid": None, "uid": None, "umask": None}


def _credentials(options: dict) -> dict | None:
    """``spawn_child``'s ``groups``/``gid``/``uid``/``umask`` from ``Popen``'s ``extra_groups``,
    ``group``, ``user`` and ``umask``, checked as ``Popen`` checks them (same exceptions, same
    order: group, extra groups, user); None if only ``Popen`` handles the values."""
    if _CREDENTIAL_OPTIONS.isdisjoint(options):
        return _INHERITED_CREDENTIALS
    group = options.get("group")
    extra_groups = options.get("extra_groups")
    user = options.get("user")
    umask = options.get("umask", -1)
    gid = None
    if group is not None:
        gid = _group_number(group, "Group must be a string or an integer, not {}")
        if gid < 0:
            raise ValueError(f"Group ID cannot be negative, got {gid}")
    groups = None
    if extra_groups is not None:
        if isinstance(extra_groups, str):
            raise ValueError("Groups must be a list, not a string")
        groups = [
            _group_number(item, "Items in extra_groups must be a string or integer, not {}")
            for item in extra_groups
        ]
        for number in groups:
            if number < 0:
                raise ValueError(f"Group ID cannot be negative, got {number}")
    uid = None
    if user is not None:
        if isinstance(user, str):
            import pwd

            uid = pwd.getpwnam(user).pw_uid
        elif isinstance(user, int):
            uid = user
        else:
            raise TypeError("User must be a string or an integer")
        if uid < 0:
            raise ValueError(f"User ID cannot be negative, got {uid}")
    ids = [number for number in (gid, uid) if number is not None] + (groups or [])
    if any(number > _ID_MAX for number in ids):
        return None
    if not isinstance(umask, int) or not -(2**31) <= umask < 2**31:
        return None
    return {
        "groups": groups,
        "gid": gid,
        "uid": uid,
        "umask": umask if umask >= 0 else None,
    }


def _child_code(value: Any) -> Any:
    """The native code of a stdin/stdout/stderr argument: None, PIPE/STDOUT/DEVNULL or a
    descriptor; ``...`` if only ``Popen`` handles it."""
    if value is None:
        return None
    if isinstance(value, int):
        if value < 0 and value not in _CODES:
            return ...
        return value
    return value.fileno()


def spawn(
    args: Any,
    shell: bool,
    stdin: Any,
    stdout: Any,
    stderr: Any,
    options: dict,
    want_pidfd: bool = False,
) -> tuple[subprocess.Popen, int] | None:
    """Starts the child as ``subprocess.Popen(args, shell=shell, ..., **options)`` would:
    ``(popen, pidfd)``, pidfd -1 unless ``want_pidfd`` and the kernel gave one (the caller
    owns it). None if only ``Popen`` can (nothing has been done then)."""
    if subprocess.Popen is not _POPEN:
        return None
    if options:
        for name, value in options.items():
            if name in _NATIVE_OPTIONS:
                continue
            if name not in _DEFAULT_ONLY or value != _DEFAULT_ONLY[name]:
                return None
    codes = (_child_code(stdin), _child_code(stdout), _child_code(stderr))
    if ... in codes:
        return None
    stdin_code, stdout_code, stderr_code = codes
    if stderr_code == subprocess.STDOUT and stdout_code is None:
        stderr_code = sys.__stdout__.fileno()

    if options:
        executable = options.get("executable")
        close_fds = options.get("close_fds", True)
        pass_fds = options.get("pass_fds", ())
        cwd = options.get("cwd")
        env = options.get("env")
        process_group = options.get("process_group")
        restore_signals = bool(options.get("restore_signals", True))
        start_new_session = bool(options.get("start_new_session", False))
        if pass_fds and not close_fds:
            warnings.warn("pass_fds overriding close_fds.", RuntimeWarning, stacklevel=1)
            close_fds = True
        credentials = _credentials(options)
        if credentials is None:
            return None
    else:
        executable = cwd = env = process_group = None
        close_fds = restore_signals = True
        start_new_session = False
        pass_fds = ()
        credentials = _INHERITED_CREDENTIALS

    original_args = args
    if isinstance(args, (str, bytes)):
        args = [args]
    elif isinstance(args, os.PathLike):
        if shell:
            raise TypeError("path-like args is not allowed when shell is true")
        args = [args]
    else:
        args = list(args)
    if shell:
        args = ["/bin/sh", "-c", *args]
        if executable:
            args[0] = executable
    if executable is None:
        executable = args[0]
    sys.audit("subprocess.Popen", executable, args, cwd, env)

    envp = None
    if env is not None:
        envp = []
        for key, value in env.items():
            key = os.fsencode(key)
            if b"=" in key:
                raise ValueError("illegal environment variable name")
            envp.append(key + b"=" + os.fsencode(value))
    program = os.fsencode(executable)
    if b"/" in program:  # os.path.dirname(program) is not empty
        candidates = [program]
    else:
        candidates = [os.path.join(os.fsencode(d), program) for d in os.get_exec_path(env)]
    argv = [os.fsencode(arg) for arg in args]
    cwd_bytes = None if cwd is None else os.fsencode(cwd)
    fds = [int(fd) for fd in pass_fds]
    other_filename = None if _CHDIR_ONLY else cwd

    pid, pidfd, stdin_w, stdout_r, stderr_r = spawn_child(
        argv,
        candidates,
        envp,
        cwd_bytes,
        stdin_code,
        stdout_code,
        stderr_code,
        bool(close_fds),
        fds,
        restore_signals,
        start_new_session,
        -1 if process_group is None else process_group,
        (executable, cwd, other_filename),
        pidfd=want_pidfd,
        **credentials,
    )
    proc = _POPEN.__new__(_POPEN)
    proc.args = original_args
    # What Popen's io.open(fd, mode, 0) returns, without its argument handling.
    proc.stdin = None if stdin_w < 0 else FileIO(stdin_w, "wb")
    proc.stdout = None if stdout_r < 0 else FileIO(stdout_r, "rb")
    proc.stderr = None if stderr_r < 0 else FileIO(stderr_r, "rb")
    proc.pid = pid
    proc.returncode = None
    proc.encoding = None
    proc.errors = None
    proc.pipesize = -1
    proc.text_mode = False
    proc._waitpid_lock = threading.Lock()
    proc._input = None
    proc._communication_started = False
    proc._sigint_wait_secs = 0.25
    proc._closed_child_pipe_fds = True
    proc._child_created = True
    return proc, pidfd


__all__ = ["spawn"]
