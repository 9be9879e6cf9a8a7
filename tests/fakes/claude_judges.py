"""A native Claude judge on loopback: its key variable, its secret, and the judge file the tests write."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fakes.judges import PROMPTS

SECRET = "sk-ant-test-SECRET-93b1"
KEY_VARIABLE = "CALIBRATE_TEST_ANTHROPIC_KEY"


def write_claude(folder: Path, **overrides) -> Path:
    """A native Claude judge reaching the loopback server through ANTHROPIC_BASE_URL (no base_url key)."""
    settings = {"name": "claude-loopback", "backend": "anthropic", "model": "claude-test", "api_key_env": KEY_VARIABLE,
                "prompt": str(PROMPTS / "valbench-v2-guarded.txt"), "rule": "v2", "concurrency": 4, "timeout_s": 0.8,
                "max_retries": 4, "parse_retries": 1, "price_input_per_mtok": 3.0, "price_output_per_mtok": 15.0,
                **overrides}
    path = folder / f"{settings['name']}.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    return path
