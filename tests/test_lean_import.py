"""Importing calibrate, `calibrate --help` and `calibrate judges` stay light: each runs in a fresh
interpreter and must not have loaded pandas, numpy, pyarrow, aiohttp or httptools (nor rich, for the
import), which the commands that judge or compute import when they run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import calibrate

HEAVY = ("pandas", "numpy", "pyarrow", "aiohttp", "httptools")
# Prints, when the interpreter exits, which heavy modules it loaded (as JSON on the last stderr line).
REPORT = ("import atexit, json, sys; atexit.register(lambda: print(json.dumps(sorted(m for m in {heavy!r} "
          "if m in sys.modules)), file=sys.stderr)); ")


def loaded_after(code: str, heavy: tuple[str, ...]) -> list[str]:
    run = subprocess.run([sys.executable, "-c", REPORT.format(heavy=heavy) + code], capture_output=True, text=True,
                         check=True)
    return json.loads(run.stderr.strip().splitlines()[-1])


def test_import_calibrate_loads_no_heavy_library():
    assert loaded_after("import calibrate", (*HEAVY, "rich")) == []


def test_the_public_names_import_from_a_fresh_interpreter_without_loading_the_workflows_first():
    code = "from calibrate import CalibrateError, JudgeConfig, available_judges, load_judge_config, __version__"
    assert loaded_after(code, HEAVY) == []


@pytest.mark.parametrize("args", [["--help"], ["judges"], ["fit", "--help"]])
def test_light_commands_load_no_heavy_library(args):
    code = f"import runpy, sys; sys.argv = ['calibrate', *{args!r}]; runpy.run_module('calibrate', run_name='__main__')"
    assert loaded_after(code, HEAVY) == []


def test_judges_lists_the_bundled_judges():
    """The light `judges` still reads every config and builds every backend (a panel with its members)."""
    shown = subprocess.run([sys.executable, "-m", "calibrate", "judges"], capture_output=True, text=True,
                           check=True, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})
    for name in calibrate.available_judges():
        assert name in shown.stdout
    assert "invalid" not in shown.stdout


def test_every_public_name_resolves_and_dir_lists_it():
    for name in calibrate.__all__:
        assert getattr(calibrate, name) is not None
    assert set(calibrate.__all__) <= set(dir(calibrate))
    assert calibrate.fit.__module__ == "calibrate.workflows.fit"
    with pytest.raises(AttributeError, match="no_such_name"):
        calibrate.no_such_name  # noqa: B018 (the attribute lookup is the test)


# A CLI command, then the memory pool Arrow hands out (the backend's name on the last stdout line).
POOL_AFTER_CLI = ("import sys; sys.argv = ['calibrate', 'judges']; from calibrate.cli.main import main\n"
                  "try:\n    main()\nexcept SystemExit:\n    pass\n"
                  "import pyarrow; print(pyarrow.default_memory_pool().backend_name)")


@pytest.mark.parametrize(("chosen", "expected"), [(None, "system"), ("mimalloc", "mimalloc")])
def test_the_cli_gives_arrow_the_c_allocator_unless_the_user_chose_one(chosen, expected):
    """mimalloc (Arrow's default) made a cached compare spend 1.2 s more in the kernel (docs/performance.md);
    the CLI asks for the C library's allocator before pyarrow loads, and a user's ARROW_DEFAULT_MEMORY_POOL
    stands."""
    env = {"PATH": "/usr/bin:/bin", **({"ARROW_DEFAULT_MEMORY_POOL": chosen} if chosen else {})}
    run = subprocess.run([sys.executable, "-c", POOL_AFTER_CLI], capture_output=True, text=True, check=True, env=env)
    assert run.stdout.strip().splitlines()[-1] == expected
