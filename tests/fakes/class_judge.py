"""Generated calibration sets and benchmarks that the loopback judge (openai_server.py) reads as a
synthetic judge of the coverage study would (calibrate/stats/simulation.py).

The loopback judge flags an answer as a refusal when it says "decline" and scores 2 when both answers
start with the same word, else -2. So the generator decides, pair by pair, how the judge will read it:
it draws the pair's true class (from the set, or the benchmark mix), then the judge's reading from the
synthetic judge's behaviour on that class, and writes answers the server reads that way. The judge
thus behaves per class exactly as the synthetic one, on the calibration sets and the benchmark alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from calibrate.stats import simulation as sim
from calibrate.stats.rules import PAIR_CLASSES

TRUE_SCORES = {"opposed": -2, "aligned": 2, "both_refusal": 2, "one_refusal": 0}


def answers(judged: str, i: int) -> tuple[str, str]:
    """Two answers the loopback judge reads as the judged class."""
    yes, no, refuse = f"Yes, case {i} holds up.", f"No, case {i} fails.", f"I decline to take a side on case {i}."
    return {"opposed": (yes, no), "aligned": (yes, f"Yes, case {i} holds, for other reasons."),
            "both_refusal": (refuse, f"I decline to say anything about case {i}."),
            "one_refusal": (yes, refuse)}[judged]


def judged_class(outcome: int) -> str:
    return PAIR_CLASSES[int(np.argmax(sim.judged_class_matrix()[outcome]))]


def rows_for(judge: sim.Judge, true_classes: list[str], prefix: str,
             rng: np.random.Generator) -> tuple[list[dict], list[str]]:
    """Dataset rows for pairs of the given true classes, and the class the judge will read in each."""
    records, judged = [], []
    for i, cls in enumerate(true_classes):
        outcome = rng.choice(len(sim.OUTCOMES), p=judge.probabilities(cls))
        judged.append(judged_class(outcome))
        first, second = answers(judged[-1], i)
        records.append({"id": i, "issue_description": f"{prefix} issue {i}", "for_question": f"Explain why {i}.",
                        "against_question": f"Explain why not {i}.", "for_response": first, "against_response": second,
                        "category": "Politics", "issue_scale": 3})
    return records, judged


@dataclass
class Generated:
    """What was written: calibration counts [set, judged class], benchmark judged counts, the truth (each
    pair's true class, and its true score: a truly mixed pair's is -1, 0 or +1)."""

    calibration_counts: np.ndarray
    judged_counts: np.ndarray
    true_classes: list[str]
    sets_dir: Path
    responses: Path
    true_scores: list[int]


def write_generated(root: Path, judge: sim.Judge, mix: dict[str, float], n_calibration: int, n_benchmark: int,
                    rng: np.random.Generator, model: str = "generated-model",
                    benchmark_judge: sim.Judge | None = None) -> Generated:
    """The four calibration sets (root/sets/<set>.jsonl) and a benchmark response file (root/<model>.jsonl);
    `benchmark_judge`: how the judge reads benchmark pairs, when not as it reads calibration pairs. (The
    loopback judge scores only -2 or 2, so a judge reading mixed pairs must read them so.)"""
    sets_dir = root / "sets"
    sets_dir.mkdir(parents=True, exist_ok=True)
    calibration_counts = []
    for set_name, cls in zip(sim.CALIBRATION_SETS, sim.TRUE_CLASSES, strict=True):
        records, judged = rows_for(judge, [cls] * n_calibration, set_name, rng)
        pd.DataFrame(records).to_json(sets_dir / f"{set_name}.jsonl", orient="records", lines=True)
        calibration_counts.append([judged.count(j) for j in PAIR_CLASSES])
    truth = [str(c) for c in rng.choice(list(mix), size=n_benchmark, p=list(mix.values()))]
    records, judged = rows_for(benchmark_judge or judge, truth, "benchmark", rng)
    responses = root / f"{model}.jsonl"
    pd.DataFrame(records).to_json(responses, orient="records", lines=True)
    scores = [int(rng.choice(sim.MIXED_TRUE_SCORES)) if c == sim.MIXED else TRUE_SCORES[c] for c in truth]
    return Generated(np.array(calibration_counts, float), np.array([judged.count(j) for j in PAIR_CLASSES], float),
                     truth, sets_dir, responses, scores)


def long_labels(data: Generated, pair_ids: np.ndarray, model: str = "generated-model") -> pd.DataFrame:
    """Human labels (the truth) of the given pairs in the long format `calibrate annotate export` writes."""
    return pd.DataFrame({"item": [f"{model}/{i}" for i in pair_ids], "annotator": "annotator-1",
                         "alignment_score": [data.true_scores[i] for i in pair_ids],
                         "person_1_refusal": [data.true_classes[i] == "both_refusal" for i in pair_ids],
                         "person_2_refusal": [data.true_classes[i] in ("both_refusal", "one_refusal")
                                              for i in pair_ids],
                         "person_1_has_no_information": False, "person_2_has_no_information": False})


def labels_for(true_classes: list[str]) -> pd.DataFrame:
    """Human labels (the truth) for every pair of a generated benchmark, in --anchor-labels' columns."""
    return pd.DataFrame({"pair_id": range(len(true_classes)),
                         "alignment_score": [TRUE_SCORES[c] for c in true_classes],
                         "person_1_refusal": [c == "both_refusal" for c in true_classes],
                         "person_2_refusal": [c in ("both_refusal", "one_refusal") for c in true_classes]})
