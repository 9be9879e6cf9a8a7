"""The `calibrate` command line run inside the test process: `cli("fit", "--judge", ...)` returns what a
subprocess would (a `CompletedProcess` with exit code, stdout and stderr) without paying a second
interpreter's imports (about a second each). Tests where a real process matters (the console script,
signals, two processes on one cache, a fresh interpreter's imports) still spawn one.

What a process would start fresh is set up and restored around each run: argv, stdin/stdout/stderr,
the working directory, the environment, and the root logger (`main` configures it with basicConfig,
which does nothing once a handler is there)."""

from __future__ import annotations

import io
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from subprocess import CompletedProcess

from calibrate.cli.main import main


def cli(*args: str | Path, cwd: str | Path | None = None, env: Mapping[str, str] | None = None, input: str = "",
        merge_stderr: bool = False, check: bool = False) -> CompletedProcess:
    """Run `calibrate ARGS` as `python -m calibrate ARGS` would, in `cwd` (default: the current directory)
    with exactly `env` as the environment (default: the current one) and `input` on stdin; `merge_stderr`
    sends stderr into stdout (like `stderr=subprocess.STDOUT`); `check` raises CalledProcessError on a
    non-zero exit, as `subprocess.run(check=True)` does."""
    argv = [str(arg) for arg in args]
    stdout = io.StringIO()
    stderr = stdout if merge_stderr else io.StringIO()
    with _process_state(argv, cwd, env, io.StringIO(input), stdout, stderr):
        code = _exit_code(main)
    done = CompletedProcess(["calibrate", *argv], code, stdout.getvalue(), None if merge_stderr else stderr.getvalue())
    if check:
        done.check_returncode()
    return done


def _exit_code(entry) -> int:
    """The exit code a process running `entry` would end with; what an uncaught exception would print
    (a traceback) goes to stderr, so that tests asserting "no traceback" still catch one."""
    try:
        entry()
    except SystemExit as done:
        if done.code is None:
            return 0
        if isinstance(done.code, int):
            return done.code
        print(done.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - a real process would die of it: report it as one would
        traceback.print_exc()
        return 1
    return 0


@contextmanager
def _process_state(argv: list[str], cwd: str | Path | None, env: Mapping[str, str] | None, stdin: io.StringIO,
                   stdout: io.StringIO, stderr: io.StringIO) -> Iterator[None]:
    saved_streams = sys.argv, sys.stdin, sys.stdout, sys.stderr
    saved_cwd = os.getcwd()
    saved_env = dict(os.environ)
    root = logging.getLogger()
    saved_logging = root.handlers[:], root.level
    try:
        sys.argv = ["calibrate", *argv]
        sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        root.handlers = []  # main's basicConfig then writes warnings to this run's stderr, as in a process
        yield
    finally:
        root.handlers, level = saved_logging
        root.setLevel(level)
        os.chdir(saved_cwd)
        if dict(os.environ) != saved_env:
            os.environ.clear()
            os.environ.update(saved_env)
        sys.argv, sys.stdin, sys.stdout, sys.stderr = saved_streams
