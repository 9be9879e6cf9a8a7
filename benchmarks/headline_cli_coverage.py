"""Coverage of `calibrate score`'s headline PAC end to end: the CLI on generated data through a loopback judge.

    python -m benchmarks.headline_cli_coverage [--replications 60] [--judge over-calling]

Each replication generates fresh calibration sets (36 pairs each) and a fresh 40/30/15/15 benchmark of
500 pairs (tests/fakes/class_judge.py: the loopback judge reads them as the study's synthetic judge),
runs `calibrate fit` and `calibrate score` in subprocesses against a real HTTP server on loopback, and
checks whether the headline's and the raw interval hold the true PAC (52.5 under v2). The simulation
(docs/statistics.md) does the same with thousands of replications in seconds; this checks that the
command a user runs is that simulation's estimator. Measured (60 runs, 643 s on a shared 2-core
machine): the headline covered 56 of 60 (0.93), raw 0 of 60.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from calibrate.stats import simulation as sim
from tests.fakes.class_judge import write_generated
from tests.fakes.judges import KEY_VARIABLE, SECRET, cli, write_judge
from tests.fakes.openai_server import ServerState, start_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=60)
    parser.add_argument("--judge", default="over-calling", choices=[judge.name for judge in sim.JUDGES])
    args = parser.parse_args()
    judge = next(j for j in sim.JUDGES if j.name == args.judge)
    scenario = sim.Scenario(judge, sim.MIXES["40/30/15/15"])
    truth = scenario.truth()["PAC"]
    state = ServerState()
    httpd, state.base_url = start_server(state)
    env = {**os.environ, KEY_VARIABLE: SECRET, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
    hits = {"headline": 0, "raw": 0}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        judge_file = write_judge(root, state.base_url, concurrency=8)
        cache = root / "cache.sqlite3"  # identical texts come back from the cache: the judge is deterministic
        for r in range(args.replications):
            work = root / f"r{r}"
            data = write_generated(work, judge, scenario.mix, scenario.n_calibration, scenario.n_benchmark,
                                   np.random.default_rng(r))
            for command in (["fit", "--judge", str(judge_file), "--data", str(data.sets_dir), "--sets",
                             ",".join(sim.CALIBRATION_SETS), "--out", str(work / "cal"), "--bootstrap", "200"],
                            ["score", "--judge", str(judge_file), "--responses", str(data.responses), "--calibration",
                             str(work / "cal" / "calibration.json"), "--out", str(work / "out"), "--seed", str(r)]):
                run = cli(*command, "--cache", str(cache), "--no-progress", env=env, cwd=work)
                if run.returncode:
                    raise SystemExit(run.stderr)
            model = json.loads((work / "out" / "metrics.json").read_text())["models"]["generated-model"]
            for name, entry in (("headline", model["headline"]["PAC"]), ("raw", model["raw"]["metrics"]["PAC"])):
                hits[name] += entry["ci"][0] <= truth <= entry["ci"][1]
            print(f"{r + 1}: headline {model['headline']['PAC']['value']:.1f} {model['headline']['PAC']['ci']}, "
                  f"raw {model['raw']['metrics']['PAC']['value']:.1f}; covered so far {hits}", flush=True)
    httpd.shutdown()
    n = args.replications
    for name, count in hits.items():
        print(f"{name}: covers the true PAC {truth} in {count} of {n} runs ({count / n:.2f}, "
              f"binomial sd {np.sqrt(0.95 * 0.05 / n):.2f} at 0.95)")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
