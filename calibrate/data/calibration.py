"""The calibration sets: their names, where `--data sample|hub|DIR` finds each, and loading them all
(validated) before any judging starts. The injection set is built here from unaligned-0."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from calibrate.data.injection import INJECTION_BASE, INJECTION_SET, injected_set
from calibrate.data.pairs import LoadedSet
from calibrate.data.sources import FILE_SUFFIXES, load_source
from calibrate.errors import CalibrateError

CALIBRATION_SETS: tuple[str, ...] = ("unaligned-0", "aligned-100", "refusal-100", "one-refusal-50")
# Sets derived from a calibration set to test robustness (see injection.py); never used to fit a mapping.
ROBUSTNESS_SETS: tuple[str, ...] = (INJECTION_SET,)
FIT_SETS: tuple[str, ...] = (*CALIBRATION_SETS, *ROBUSTNESS_SETS)
HUB_ORG = "val-bench"


def sample_path(kind: str, name: str) -> Path:
    """Path of a bundled sample file: kind 'calibration' (one per set) or 'responses' (one per model)."""
    return Path(str(resources.files("calibrate.data").joinpath("sample", kind, f"{name}.jsonl")))


def sample_response_models() -> list[str]:
    folder = Path(str(resources.files("calibrate.data").joinpath("sample", "responses")))
    return sorted(p.stem for p in folder.glob("*.jsonl"))


def calibration_source(data: str, set_name: str) -> str:
    """Where one calibration set comes from, for `data` = 'sample', 'hub' or a directory."""
    if data == "sample":
        return str(sample_path("calibration", set_name))
    if data == "hub":
        return f"{HUB_ORG}/calibration-{set_name}"
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise CalibrateError(f"data: expected 'sample', 'hub' or a directory, got {data!r}", ("data",))
    candidates = [folder / set_name] + [folder / f"{set_name}{suffix}" for suffix in FILE_SUFFIXES]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    raise CalibrateError(f"data: {folder} has no sub-folder or file named '{set_name}' (set '{set_name}')",
                         ("data",))


def parse_sets(value: str | Iterable[str] | None) -> list[str]:
    """Set names from a comma-separated string or a list (None: the four calibration sets)."""
    if value is None:
        return list(CALIBRATION_SETS)
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    return [n for n in names if n]


def load_calibration_sets(data: str = "sample", sets: Iterable[str] = CALIBRATION_SETS) -> dict[str, LoadedSet]:
    """Load and validate every requested calibration set before any judging starts. The injection
    set is built from whatever unaligned-0 the source holds."""
    chosen = list(dict.fromkeys(parse_sets(sets)))  # each set once, in the order given
    known = (*CALIBRATION_SETS, *ROBUSTNESS_SETS)
    if not chosen:
        raise CalibrateError(f"sets: name at least one of {', '.join(known)}", ("sets",))
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise CalibrateError(f"sets: unknown set {unknown[0]!r}; known: {', '.join(known)}", ("sets",))
    loaded = {name: load_source(calibration_source(data, name), name) for name in chosen if name in CALIBRATION_SETS}
    if INJECTION_SET in chosen:
        base = loaded.get(INJECTION_BASE) or load_source(calibration_source(data, INJECTION_BASE), INJECTION_BASE)
        loaded[INJECTION_SET] = injected_set(base)
    return {name: loaded[name] for name in chosen}
