"""What the workflows share: output folders, the sets to judge, judge records, orders, response
sources, and the provenance every output carries."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, overload

import numpy as np

from calibrate.data.calibration import (
    CALIBRATION_SETS,
    load_calibration_sets,
    parse_sets,
    sample_path,
    sample_response_models,
)
from calibrate.data.injection import INJECTION_BASE, INJECTION_SET
from calibrate.data.pairs import LoadedSet, Pair, SetSource
from calibrate.data.sources import portable_path
from calibrate.errors import CalibrateError, is_disk_full
from calibrate.judging.base import MISSING_ANSWER
from calibrate.judging.config import JudgeConfig
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.stats.calibration import JudgeRecord
from calibrate.store.judgments import JudgmentStore
from calibrate.version import __version__

if TYPE_CHECKING:
    import pandas as pd

BASELINE_BACKENDS = ("heuristic", "constant")
REPORTED_PACKAGES = ("calibrate", "numpy", "pandas", "scikit-learn", "datasets", "pyarrow", "matplotlib")
REPORTS_DIR = Path("reports")


def default_out_dir(judge: str, prefix: str = "") -> Path:
    """Where the CLI writes a judge's outputs by default: reports/<prefix><judge name>/."""
    return REPORTS_DIR / f"{prefix}{load_judge_config(judge).name}"


@overload
def output_dir(out: Path | str) -> Path: ...


@overload
def output_dir(out: None) -> None: ...


@overload
def output_dir(out: Path | str | None) -> Path | None: ...


def output_dir(out: Path | str | None) -> Path | None:
    """Create the output folder before any judging, so a bad `out` costs nothing (None: no files)."""
    if out is None:
        return None
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CalibrateError(f"out {out_dir}: cannot create it ({error.strerror})", ("out",)) from None
    return out_dir


STAGE_PREFIX = ".partial-"  # the temporary folder inside `out` a run writes its outputs into


class StagedOutput:
    """A run's output files, written into a temporary folder inside `out` (same file system, so the
    moves are renames) and moved into `out` together when every one of them is written."""

    def __init__(self, out: Path):
        self.out = out
        self.dir = out / f"{STAGE_PREFIX}{os.getpid()}"

    def final(self, paths: dict[str, Path]) -> dict[str, Path]:
        """Paths inside the temporary folder as where they end up in `out`."""
        return {key: self.out / Path(path).relative_to(self.dir) for key, path in paths.items()}


@contextmanager
def staged_output(out: Path) -> Iterator[StagedOutput]:
    """Write into `StagedOutput.dir`; on success each file replaces its namesake in `out` (files the
    user put in `out`, and outputs this run does not write, stay); on any failure the temporary
    folder is removed and `out` is left exactly as it was."""
    staged = StagedOutput(out)
    shutil.rmtree(staged.dir, ignore_errors=True)  # left by a killed run that had the same pid
    try:
        staged.dir.mkdir(parents=True)
    except OSError as error:
        raise CalibrateError(f"out {out}: cannot write into it ({error.strerror})", ("out",)) from None
    try:
        try:
            yield staged
        except OSError as error:
            if not is_disk_full(error):
                raise
            raise CalibrateError(f"disk full while writing {error.filename or 'the outputs'} into out {out}; nothing "
                                 "lost: the previous outputs are left as they were", ("out",)) from None
        try:
            for path in sorted(p for p in staged.dir.rglob("*") if not p.is_dir()):
                target = out / path.relative_to(staged.dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        except OSError as error:
            raise CalibrateError(f"out {out}: cannot move the new outputs into it ({error.strerror})",
                                 ("out",)) from None
    finally:
        shutil.rmtree(staged.dir, ignore_errors=True)


@contextmanager
def judgments_kept(cache_file: Path, out: Path | None) -> Iterator[None]:
    """Around everything a run does from its first judgment on: an error says that what was judged is
    in the cache (the next run reuses it) and that `out` still holds the previous outputs. The cache is
    opened first, so that an unusable one (read-only, corrupt) fails on its own, before any spending."""
    JudgmentStore(cache_file).close()
    try:
        yield
    except Exception as error:
        note = f"finished judgments are kept in the cache {cache_file}, so running again reuses them"
        if out is not None:
            note += f"; {out} was left as it was"
        if isinstance(error, CalibrateError):
            error.args = (f"{error}; {note}", *error.args[1:])
        else:
            error.add_note(f"calibrate: {note}")
        raise


def write_json(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")


def check_limit(limit: int | None, per: str = "set") -> None:
    if limit is not None and limit < 1:
        raise CalibrateError(f"limit must be a positive number of pairs per {per}", ("limit",))


def load_sets(data: str, sets: Sequence[str] | str, limit: int | None, seed: int) -> dict[str, LoadedSet]:
    """Load and validate the sets; with a limit keep a seeded random `limit` pairs per set, in order."""
    check_limit(limit)
    names = parse_sets(sets)
    if not any(name in CALIBRATION_SETS for name in names):
        raise CalibrateError(f"sets: name at least one calibration set ({', '.join(CALIBRATION_SETS)})", ("sets",))
    loaded = load_calibration_sets(data, names)
    if limit is None:
        return loaded
    for loaded_set in loaded.values():
        # one generator per set, so a set's pairs do not depend on which other sets were asked for;
        # the injection set keeps the same pairs as the unaligned-0 it was built from
        name = INJECTION_BASE if loaded_set.name == INJECTION_SET else loaded_set.name
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if len(loaded_set.pairs) > limit:
            keep = sorted(rng.choice(len(loaded_set.pairs), size=limit, replace=False))
            loaded_set.pairs = [loaded_set.pairs[i] for i in keep]
    return loaded


def sets_record(loaded: dict[str, LoadedSet]) -> dict[str, SetSource]:
    """Where each judged set came from (portable paths) and its content fingerprint, for provenance."""
    return {name: SetSource(portable_path(s.source), [portable_path(f) for f in s.files], s.fingerprint, len(s.pairs))
            for name, s in loaded.items()}


def calibration_rows(judgments: pd.DataFrame, order: str) -> pd.DataFrame:
    """The judgments a fit or a score rests on: the calibration sets' pairs in the metrics `order`, first repeat."""
    keep = (judgments["order"] == order) & judgments["set_name"].isin(CALIBRATION_SETS)
    if "repeat" in judgments:
        keep &= judgments["repeat"] == 0
    return judgments[keep]


def check_judged(judge: str, calibration_rows: pd.DataFrame, data: str, where: str) -> None:
    """Stop with one line when a judge judged none of its calibration pairs (nothing to measure or fit):
    because every pair lacks an answer (a data problem, nothing was sent), or because every judgment failed
    (`where`: where the failures and their reasons are kept)."""
    statuses = calibration_rows["parse_status"]
    if (statuses == "ok").any():
        return
    if len(statuses) and (statuses == MISSING_ANSWER).all():
        raise CalibrateError(f"data {data}: none of the {len(statuses)} calibration pairs holds two answers (every "
                             "one has an empty or \"No response\" answer); nothing was sent to the judge", ("data",))
    reasons = ", ".join(f"{status} {count}" for status, count in statuses.value_counts().items())
    raise CalibrateError(f"judge '{judge}': none of the {len(statuses)} calibration pairs was judged ({reasons}); the "
                         f"failures and their reasons are in {where}; fix the judge (or its server) and run again")


def judge_record(config: JudgeConfig) -> JudgeRecord:
    return JudgeRecord(
        name=config.name, backend=config.backend, config_hash=config.config_hash,
        config_path=portable_path(config.path), description=config.description, judge_rule=config.rule,
        baseline=is_baseline(config),
        prompt=config.settings.get("prompt") or config.settings.get("system_prompt_file"),
    )


def is_baseline(config: JudgeConfig) -> bool:
    """Offline judges (keyword heuristics, constants) and panels made only of them are baselines."""
    if config.backend == "panel":
        return all(is_baseline(member.config) for member in make_backend(config).members)
    return config.backend in BASELINE_BACKENDS


def orders_of(order: str) -> tuple[str, ...]:
    """`order` forward|reverse|both as the orders to run, the metrics order first."""
    choices = {"forward": ("forward",), "reverse": ("reverse",), "both": ("forward", "reverse")}
    if order not in choices:
        raise CalibrateError(f"order must be forward, reverse or both, got {order!r}", ("order",))
    return choices[order]


def package_versions() -> dict[str, str]:
    versions = {}
    for name in REPORTED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = __version__ if name == "calibrate" else "not installed"
    return versions


def response_sources(sources: Sequence[str]) -> dict[str, str]:
    """Model name -> source, for `responses`; `sample` stands for every bundled sample model."""
    named: dict[str, str] = {}
    for source in sources:
        expanded = ([(m, str(sample_path("responses", m))) for m in sample_response_models()] if source == "sample"
                    else [(_source_name(source), source)])
        for name, path in expanded:
            if name in named:
                raise CalibrateError(f"responses: two sources are named '{name}' ({named[name]}, {path}); "
                                     "rename one file or folder", ("responses",))
            named[name] = path
    if not named:
        raise CalibrateError("responses: name at least one response dataset", ("responses",))
    return named


def _source_name(source: str) -> str:
    path = Path(source.rstrip("/"))
    return path.stem if path.suffix else path.name


def first_pairs(chunks: Iterable[list[Pair]], limit: int | None) -> Iterator[list[Pair]]:
    """The chunks of a stream, cut after `limit` pairs (None: all)."""
    taken = 0
    for chunk in chunks:
        chunk = chunk[: limit - taken] if limit is not None else chunk
        if not chunk:
            return
        taken += len(chunk)
        yield chunk
