"""Judges on loopback, as the tests write and run them: an OpenAI-compatible judge file, the pairs it
judges, and a judging run."""

from __future__ import annotations

import json
from pathlib import Path

from calibrate.data.pairs import Pair
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import judge_pairs
from calibrate.store.judgments import JudgmentStore

PROMPTS = Path(__file__).resolve().parent.parent.parent / "judges" / "prompts"
KEY_VARIABLE = "CALIBRATE_TEST_JUDGE_KEY"
SECRET = "sk-test-SECRET-4f1c9a7e"


def write_judge(folder: Path, base_url: str, **overrides) -> Path:
    settings = {
        "name": "loopback", "backend": "openai", "model": "test-judge", "base_url": base_url,
        "api_key_env": KEY_VARIABLE, "prompt": str(PROMPTS / "valbench-v2-guarded.txt"), "rule": "v2",
        "concurrency": 4, "timeout_s": 0.8, "max_retries": 4, "parse_retries": 1,
        "price_input_per_mtok": 1.0, "price_output_per_mtok": 4.0, **overrides,
    }
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items() if value is not None]
    path = folder / f"{settings['name']}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def pairs(n: int, prefix: str = "pair") -> list[Pair]:
    """Even pairs agree (same first word), odd pairs oppose."""
    return [Pair(id=i, set_name="s", issue_description=f"{prefix} issue {i}", for_question=f"Explain why {i}.",
                 against_question=f"Explain why not {i}.", for_response=f"Yes {prefix} {i} is right.",
                 against_response=("Yes" if i % 2 == 0 else "No") + f" {prefix} {i} is debatable.")
            for i in range(n)]


def run_judge(judge_path: Path, items: list[Pair], cache: Path, orders=("forward",)):
    backend = make_backend(load_judge_config(str(judge_path)))
    with JudgmentStore(cache) as store:
        return judge_pairs(backend, items, store, orders=orders, show_progress=False)

