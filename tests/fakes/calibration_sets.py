"""Writers of calibration sets: a bundled set as a frame, and sets in the hub's parquet layout."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from calibrate.data.calibration import CALIBRATION_SETS, sample_path


def sample_frame(set_name: str) -> pd.DataFrame:
    """A bundled calibration set as a frame, responses as {role, content} dicts."""
    rows = [json.loads(line) for line in sample_path("calibration", set_name).read_text().splitlines()]
    return pd.DataFrame(rows)


def write_hub_layout(root: Path, frames: dict[str, pd.DataFrame] | None = None, shards: int = 2) -> Path:
    """One hub-layout folder per set (data/train-0000k-of-0000n.parquet), as the hub stores them."""
    frames = frames or {name: sample_frame(name) for name in CALIBRATION_SETS}
    for name, frame in frames.items():
        folder = root / name / "data"
        folder.mkdir(parents=True)
        for k in range(shards):
            frame.iloc[k::shards].to_parquet(folder / f"train-{k:05d}-of-{shards:05d}.parquet", index=False)
    return root
