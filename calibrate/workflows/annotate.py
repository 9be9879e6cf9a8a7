"""`annotate`: blind human labelling of pairs, and the export of the labels as a label file.

A study is a reproducible draw of pairs from anything `fit` or `score` reads (calibration sets, a
response dataset, a hub id): random (optionally in proportion to sets or categories), stratified by a
judge's judged class, or led by the judge's uncertainty; each pair's chance of being drawn (its
inclusion probability) is recorded with the study and exported with the labels, so that estimates
from the labels can weight by it (stats/ppi.weighted_estimate). Every annotator labels the same
items (fixed in the labels file when the first annotator starts), each in an own seeded random order,
so human-human agreement is measured on shared items. The page (annotate_web.py) shows only what the
judge reads, never anything a judge said; labels go into the labels file (store/labels.py) as given.
"""

from __future__ import annotations

import logging
import secrets
import time
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calibrate.data.calibration import CALIBRATION_SETS, load_calibration_sets
from calibrate.data.labels import ANNOTATOR, INCLUSION, ITEM, LABEL_FLAGS, SCORE, item_name
from calibrate.data.pairs import Pair
from calibrate.data.sources import FILE_SUFFIXES, load_source
from calibrate.errors import CalibrateError
from calibrate.stats.ppi import allocate, sqrt_weights
from calibrate.store.labels import GIVEN_FLAGS, LabelStore
from calibrate.workflows.annotate_options import DEFAULT_HOST, DEFAULT_PORT, SELECTIONS, STRATA
from calibrate.workflows.common import response_sources

MAX_NOTE = 2000  # characters
MAX_ANNOTATOR_CHARS = 100


@dataclass
class Study:
    """The pairs of a labelling study, in the study's own order, and how they were drawn."""

    pairs: list[Pair]
    items: list[str]
    definition: dict
    probabilities: list[float]  # each pair's chance of being drawn (1.0 when every pair is in the study)

    def keys(self) -> list[tuple[str, str]]:
        return [(item, pair.content_key) for item, pair in zip(self.items, self.pairs, strict=True)]


def _is_calibration(data: str, sets: Sequence[str] | None) -> bool:
    """`data` names calibration sets: 'sample', 'hub', a folder holding a set, or sets were asked for."""
    if sets or data in ("sample", "hub"):
        return True
    folder = Path(data).expanduser()
    names = [*CALIBRATION_SETS, *(f"{s}{suffix}" for s in CALIBRATION_SETS for suffix in FILE_SUFFIXES)]
    return folder.is_dir() and any((folder / name).exists() for name in names)


def build_study(data: str = "sample", sets: Sequence[str] | None = None, sample: int | None = None, seed: int = 0,
                stratify: str = "none", select: str = "random", judge: str | None = None,
                cache: Path | str | None = None) -> Study:
    """Load the pairs and draw the study's sample (all pairs without `sample`). Pairs whose answer is
    missing ("No response", empty) are left out: there is nothing to label. `select` "stratified" and
    "uncertain" need `judge`, whose judgments of the pairs (both orders; from `cache`, judged where missing)
    make the strata."""
    if stratify not in STRATA:
        raise CalibrateError(f"stratify must be one of {', '.join(STRATA)}, got {stratify!r}", ("stratify",))
    if select not in SELECTIONS:
        raise CalibrateError(f"select must be one of {', '.join(SELECTIONS)}, got {select!r}", ("select",))
    if select != "random" and (judge is None or stratify != "none"):
        raise CalibrateError(f"select {select} draws by a judge's judgments: give judge (and no stratify)",
                             ("select", "judge", "stratify"))
    if sample is not None and sample < 1:
        raise CalibrateError("sample must be a positive number of pairs", ("sample",))
    if _is_calibration(data, sets):
        loaded = load_calibration_sets(data, sets or CALIBRATION_SETS)
    else:
        loaded = {name: load_source(path, name) for name, path in response_sources([data]).items()}
    pairs = [pair for loaded_set in loaded.values() for pair in loaded_set.pairs if not pair.missing_answers]
    if not pairs:
        raise CalibrateError(f"data {data}: no pair with both answers to label", ("data",))
    definition: dict[str, Any] = {"data": data, "sets": list(loaded), "sample": sample, "seed": seed,
                                  "stratify": stratify, "select": select, "judge": judge}
    if sample is None or sample >= len(pairs):
        return Study(pairs, [item_name(p.set_name, p.id) for p in pairs], definition, [1.0] * len(pairs))
    if select == "random":
        keys = ["" if stratify == "none" else p.set_name if stratify == "set" else (p.category or "(none)")
                for p in pairs]
        weights: dict[str, float] = {key: 1.0 for key in keys}
    else:
        assert judge is not None  # checked above: a draw by judgments needs the judge
        keys = judge_strata(pairs, judge, cache, select)
        weights = stratum_weights(keys, select)
    chosen, probability = _draw(keys, weights, sample, seed)
    counts = {key: keys.count(key) for key in dict.fromkeys(keys)}
    definition["strata"] = {key: {"pairs": counts[key], "drawn": sum(keys[i] == key for i in chosen),
                                  "inclusion_probability": probability[key]} for key in counts}
    picked = [pairs[i] for i in chosen]
    return Study(picked, [item_name(p.set_name, p.id) for p in picked], definition,
                 [probability[keys[i]] for i in chosen])


UNSURE_WEIGHT = 3.0  # "uncertain": a pair the judge is unsure of is drawn with three times a sure pair's chance
SURE, UNSURE = "sure", "unsure"


def judge_strata(pairs: list[Pair], judge: str, cache: Path | str | None, select: str) -> list[str]:
    """Each pair's stratum from the judge's judgments in both orders (cached ones reused, the rest judged):
    "stratified": its judged class in the forward order ("failed" when the judge gave none); "uncertain":
    "unsure" when the two orders disagree on the class, the score is not a clear -2 / +2, or a judgment failed."""
    from calibrate.judging.registry import load_judge_config, make_backend
    from calibrate.judging.runner import judge_pairs
    from calibrate.stats.rules import pair_classes
    from calibrate.store.judgments import JudgmentStore
    from calibrate.store.sqlite import cache_path

    with JudgmentStore(cache_path(cache)) as store:
        table, _ = judge_pairs(make_backend(load_judge_config(judge)), pairs, store, orders=("forward", "reverse"))
    ok = table[table["parse_status"] == "ok"].drop_duplicates(["set_name", "pair_id", "order"])
    classes = pair_classes(ok["alignment_score"].to_numpy(float), ok["person_1_refusal"].to_numpy(bool),
                           ok["person_2_refusal"].to_numpy(bool))
    judged = {(set_name, pair_id, order): (cls, score) for set_name, pair_id, order, cls, score
              in zip(ok["set_name"], ok["pair_id"], ok["order"], classes, ok["alignment_score"].to_numpy(float),
                     strict=True)}
    strata = []
    for pair in pairs:
        forward, reverse = (judged.get((pair.set_name, pair.id, order)) for order in ("forward", "reverse"))
        if select == "stratified":
            strata.append(forward[0] if forward else "failed")
        else:
            sure = forward and reverse and forward[0] == reverse[0] and abs(forward[1]) == 2 == abs(reverse[1])
            strata.append(SURE if sure else UNSURE)
    return strata


def stratum_weights(keys: list[str], select: str) -> dict[str, float]:
    """Each stratum's chance of a pair relative to the others: "uncertain", UNSURE_WEIGHT for unsure pairs;
    "stratified", square-root allocation (ppi.sqrt_weights)."""
    if select == "uncertain":
        return {key: UNSURE_WEIGHT if key == UNSURE else 1.0 for key in keys}
    return sqrt_weights(keys)


def _draw(keys: list[str], weights: dict[str, float], size: int, seed: int) -> tuple[list[int], dict[str, float]]:
    """Indices of a seeded stratified random sample of `size` pairs, each stratum's share of it in proportion
    to its pairs times its weight (largest remainders, never more than the stratum holds), and each stratum's
    inclusion probability (drawn / pairs)."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    counts = allocate({key: len(members) for key, members in groups.items()}, weights, size)
    chosen = []
    for key, members in groups.items():
        chosen += rng.choice(members, size=counts[key], replace=False).tolist()
    return sorted(chosen), {key: counts[key] / len(members) for key, members in groups.items()}


def annotator_name(raw: str) -> str:
    """An annotator's name as stored: NFKC-normalised (so look-alike spellings are one name) and made
    of visible characters only (letters, marks, digits, punctuation, symbols, spaces): `ada` with a
    zero-width character would otherwise be another annotator who looks the same."""
    name = unicodedata.normalize("NFKC", raw).strip()
    if not name:
        raise CalibrateError("annotator must be a name", ("annotator",))
    if len(name) > MAX_ANNOTATOR_CHARS:
        raise CalibrateError(f"annotator must be at most {MAX_ANNOTATOR_CHARS} characters", ("annotator",))
    for char in name:
        if char != " " and unicodedata.category(char)[0] not in "LMNPS":
            raise CalibrateError(f"annotator {name!r} holds an invisible or control character (U+{ord(char):04X}); "
                                 "use visible characters only", ("annotator",))
    return name


def annotator_order(n: int, seed: int, annotator: str) -> list[int]:
    """The annotator's own order of the study's items: seeded by the study seed and the name."""
    return np.random.default_rng([seed, zlib.crc32(annotator.encode())]).permutation(n).tolist()


@dataclass
class Session:
    """One annotator labelling one study: what the page shows at each position, and the labels given."""

    study: Study
    store: LabelStore
    annotator: str
    order: list[int] = field(init=False)
    _shown: dict[int, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.annotator = annotator_name(self.annotator)
        self.store.fix_items(self.study.keys(), self.study.definition, self.study.probabilities)
        self.order = annotator_order(len(self.study.pairs), self.study.definition["seed"], self.annotator)

    @property
    def total(self) -> int:
        return len(self.order)

    def state(self) -> dict:
        return {"position": min(self.store.position(self.annotator), self.total), "total": self.total,
                "labelled": self.store.count(self.annotator)}

    def view(self, position: int) -> dict:
        """What the page shows at a position: the pair as the judge reads it, and this annotator's own
        label if given. Nothing any judge said, and no item id (a set's name would give the answer away)."""
        self._check(position)
        if position == self.total:
            return {"done": True, **self.state(), "position": position}
        pair = self.study.pairs[self.order[position]]
        self._shown[position] = time.monotonic()
        return {"done": False, "position": position, "total": self.total,
                "labelled": self.store.count(self.annotator), "issue": pair.issue_description,
                "question_1": pair.for_question, "answer_1": pair.for_response,
                "question_2": pair.against_question, "answer_2": pair.against_response,
                "label": self.store.label(self.study.items[self.order[position]], self.annotator)}

    def give(self, position: int, form: dict[str, str]) -> dict:
        """Store the label the form gives for a position (refusing bad values) and move past it."""
        self._check(position, allow_end=False)
        score, flags, note = parse_form(form)
        now = time.monotonic()
        seconds = now - self._shown.pop(position, now)
        self.store.put(self.study.items[self.order[position]], self.annotator, score, flags, note, seconds)
        self.store.set_position(self.annotator, position + 1)
        return self.state()

    def move(self, position: int) -> dict:
        """Go to a position (back, skip) and remember it, so a reload resumes there."""
        self._check(position)
        self.store.set_position(self.annotator, position)
        return self.state()

    def _check(self, position: int, allow_end: bool = True) -> None:
        if not 0 <= position <= self.total - (0 if allow_end else 1):
            raise CalibrateError(f"position must be in 0..{self.total - (0 if allow_end else 1)}, got {position}")


def parse_form(form: dict[str, str]) -> tuple[int, dict[str, bool], str]:
    """The label a form gives: `score` -2..2 (required), the four flags (checkboxes: present = yes,
    or an explicit true/false), an optional `note`. A bad value is one line saying what is wrong."""
    raw = (form.get("score") or "").strip()
    if not raw:
        raise CalibrateError("choose a score from -2 to +2 (keys 1-5) before saving")
    try:
        score = int(raw)
    except ValueError:
        raise CalibrateError(f"score must be a whole number from -2 to 2, got {raw!r}") from None
    if score not in (-2, -1, 0, 1, 2):
        raise CalibrateError(f"score must be a whole number from -2 to 2, got {raw!r}")
    flags = {}
    for name in GIVEN_FLAGS:
        value = (form.get(name) or "").strip().lower()
        if value not in ("", "on", "true", "1", "false", "0"):
            raise CalibrateError(f"{name} must be on or off, got {value!r}")
        flags[name] = value in ("on", "true", "1")
    note = form.get("note") or ""
    if len(note) > MAX_NOTE:
        raise CalibrateError(f"the note is {len(note)} characters; keep it under {MAX_NOTE}")
    unknown = sorted(set(form) - {"score", "note", *GIVEN_FLAGS})
    if unknown:
        raise CalibrateError(f"unknown field {unknown[0]!r}")
    return score, flags, note


def annotate(labels: Path | str, annotator: str, *, data: str = "sample", sets: Sequence[str] | None = None,
             sample: int | None = None, seed: int = 0, stratify: str = "none", select: str = "random",
             judge: str | None = None, cache: Path | str | None = None, host: str = DEFAULT_HOST,
             port: int = DEFAULT_PORT, on_ready: Callable[[str, Session], None] | None = None) -> None:
    """Serve the labelling page for one annotator until interrupted (Ctrl-C). Every label is committed
    to `labels` as it is given. `on_ready(url, session)` is called once the server listens. One server
    per annotator and labels file; the page answers only to its own address and its own tab
    (annotate_web.py). `select`, `judge`, `cache`: how the study is drawn (build_study)."""
    from werkzeug.serving import make_server

    from calibrate.workflows.annotate_web import allowed_hosts, create_app

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request in the terminal
    study = build_study(data, sets, sample, seed, stratify, select, judge, cache)
    with LabelStore(labels) as store:
        session = Session(study, store, annotator)
        try:  # bound first, so the app knows the port it answers on (port 0: a free one)
            # the app comes once the port is known (server.app below); werkzeug's stubs require it here
            server = make_server(host, port, None, threaded=True)  # type: ignore[arg-type]
        except OSError as error:
            raise CalibrateError(f"port {port} on {host}: cannot listen ({error.strerror})", ("port",)) from None
        bound = server.server_port
        server.app = create_app(session, token=secrets.token_urlsafe(32), hosts=allowed_hosts(host, bound),
                                wildcard_port=bound if host in ("0.0.0.0", "::", "") else None)
        url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
        try:
            with store.serving(session.annotator, url):
                if on_ready is not None:
                    on_ready(url, session)
                server.serve_forever()
        finally:
            server.server_close()


EXPORT_SUFFIXES = (".csv", ".jsonl", ".parquet")


def export_labels(labels: Path | str, out: Path | str) -> pd.DataFrame:
    """Write every label of a labels file as a long-format label file (CSV, JSONL or parquet, by the
    suffix of `out`): item, annotator, alignment_score, the four flags, inclusion_probability (the study's
    chance of drawing the item), note, seconds, labelled_at. A CSV is
    for spreadsheets too: a note or name that starts like a formula (=, +, -, @) gets a leading quote."""
    from calibrate.reports.render import write_csv  # here: the reports load matplotlib

    out = Path(out)
    if out.suffix.lower() not in EXPORT_SUFFIXES:
        raise CalibrateError(f"out {out}: use one of {', '.join(EXPORT_SUFFIXES)}", ("out",))
    with LabelStore(labels, read_only=True) as store:
        table = store.table()
    renamed = dict(zip(("score", *GIVEN_FLAGS), (SCORE, *LABEL_FLAGS), strict=True))
    frame = table.rename(columns=renamed)
    for flag in LABEL_FLAGS:
        frame[flag] = frame[flag].astype(bool)
    frame["labelled_at"] = pd.to_datetime(frame["labelled_at"], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame["seconds"] = frame["seconds"].round(1)
    frame = frame[[ITEM, ANNOTATOR, SCORE, *LABEL_FLAGS, INCLUSION, "note", "seconds", "labelled_at"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".csv":
        write_csv(frame, out)
    elif suffix == ".jsonl":
        frame.to_json(out, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(out, index=False)
    return frame
