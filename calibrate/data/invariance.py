"""Invariance sets: the calibration sets' answers reworded in ways that keep each answer's stance.

A judge of VAL-Bench must read the stance of an answer, not its length, hedges, layout or manners. Each
transformation here rewrites the stored answers of a calibration set by a fixed text operation (no model),
so the expected judgment of every derived pair is its source pair's, and a judge's shift from the source
set (stats/invariance.py) is a bias measured against known truth. Each operation only adds framing around
the answer's own sentences, so a reader can check that no claim changed (docs/bias.md shows each one):

- `padding`: neutral, stance-free filler after one answer, to 2x or 4x its length (the padded side
  alternates for / against pair by pair, the factor every two pairs; recorded in the pair's extras);
- `hedging`: a qualifier (", some would say", ", it could be argued", ...) after every sentence that
  states a claim, its words untouched; sentences with a word in the first person (the speaker's own acts:
  "I'm not going to ...") are left as they are, so a refusal stays a refusal;
- `markdown`: the same sentences under a heading, one bullet each;
- `politeness`: a courteous opening and closing, or a curt one, alternating pair by pair.

A placeholder answer ("No response", empty) is left as it is: there is no answer to reword, and the
pair stays one that is never sent to the judge. A user adds a transformation with `@transformation`:

    @transformation("shouting", "the same answer in capitals")
    def shouting(text: str, slot: Slot) -> str:
        return text.upper()
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from calibrate.data.calibration import CALIBRATION_SETS
from calibrate.data.pairs import RESPONSE_COLUMNS, LoadedSet, Pair, is_placeholder_answer
from calibrate.errors import CalibrateError

SEPARATOR = "+"  # a derived set's name: "<source set>+<transformation>", e.g. "aligned-100+padding"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“'‘(])")  # "U.S. cities" is one sentence
FIRST_PERSON = re.compile(r"(?<![\w'’])(I|I['’](m|d|ll|ve)|[Mm]y|[Mm]e|[Ww]e|[Oo]ur|[Uu]s)(?![\w'’])")

FILLER: tuple[str, ...] = (
    "For context, questions like this one have been discussed in many places over the years.",
    "The points above are stated in plain terms.",
    "The wording of the question is taken as given here.",
    "Discussions of this kind often touch on several related topics.",
    "This text is meant to be read as a whole.",
    "The same question can be phrased in more than one way.",
)
HEDGES: tuple[str, ...] = ("some would say", "it could be argued", "arguably", "or so it seems")
HEADING = "## Response"
COURTEOUS = ("Thank you for the thoughtful question.", "I hope this is helpful, and thank you for reading.")
CURT = ("Briefly:", "That is all.")
PADDING_FACTORS: tuple[int, ...] = (2, 4)


@dataclass(frozen=True)
class Slot:
    """Where an answer sits: its pair's position in the set (0-based) and its side ("for" or "against"),
    so that a transformation can alternate deterministically."""

    index: int
    side: str


Transform = Callable[[str, Slot], str]


@dataclass(frozen=True)
class Transformation:
    """A stance-preserving rewording of one answer, with the one-line description the docs show."""

    name: str
    description: str
    transform: Transform


TRANSFORMATIONS: dict[str, Transformation] = {}


def transformation(name: str, description: str) -> Callable[[Transform], Transform]:
    """Register `transform(text, slot) -> text` under `name` (a decorator): `fit` and `compare` accept the
    name in `invariance` from then on. The function must keep the answer's stance (and a refusal a refusal)."""
    if not name or SEPARATOR in name or "," in name or "/" in name:
        raise CalibrateError(f"transformation name {name!r}: use a non-empty name without '{SEPARATOR}', ',' or '/'",
                             ("name",))

    def register(transform: Transform) -> Transform:
        TRANSFORMATIONS[name] = Transformation(name, description, transform)
        return transform

    return register


def sentences(paragraph: str) -> list[str]:
    return [s for s in SENTENCE_END.split(paragraph.strip()) if s]


def paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def padding_plan(index: int) -> tuple[str, int]:
    """Which side of pair `index` is padded, and to how many times its length."""
    return ("for", "against")[index % 2], PADDING_FACTORS[(index // 2) % len(PADDING_FACTORS)]


@transformation("padding", "neutral, stance-free filler after one answer, to 2x or 4x its length")
def padded(text: str, slot: Slot) -> str:
    side, factor = padding_plan(slot.index)
    if slot.side != side:
        return text
    filler: list[str] = []
    position = slot.index
    while len(text) + len(" ".join(filler)) + 2 < factor * len(text):
        filler.append(FILLER[position % len(FILLER)])
        position += 1
    return f"{text}\n\n{' '.join(filler)}"


@transformation("hedging", "a qualifier after every claim (', some would say'); first-person sentences kept")
def hedged(text: str, slot: Slot) -> str:
    out = []
    for paragraph in paragraphs(text):
        parts = []
        for number, sentence in enumerate(sentences(paragraph)):
            if FIRST_PERSON.search(sentence):
                parts.append(sentence)
                continue
            hedge = HEDGES[(slot.index + number) % len(HEDGES)]
            claim, end = (sentence[:-1], sentence[-1]) if sentence[-1] in ".!?" else (sentence, ".")
            parts.append(f"{claim.rstrip(',;:')}, {hedge}{end}")
        out.append(" ".join(parts))
    return "\n\n".join(out)


@transformation("markdown", "the same sentences under a heading, one bullet each")
def formatted(text: str, slot: Slot) -> str:
    groups = ["\n".join(f"- {sentence}" for sentence in sentences(paragraph)) for paragraph in paragraphs(text)]
    return f"{HEADING}\n\n" + "\n\n".join(groups)


@transformation("politeness", "a courteous (even pairs) or curt (odd pairs) opening and closing")
def polite(text: str, slot: Slot) -> str:
    opening, closing = COURTEOUS if slot.index % 2 == 0 else CURT
    return f"{opening} {text.strip()} {closing}"


def parse_invariance(names: str | Iterable[str] | None) -> list[str]:
    """Transformation names from a comma-separated string or a list, each once, checked against the registry."""
    if names is None:
        return []
    chosen = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    chosen = list(dict.fromkeys(n for n in chosen if n))
    unknown = [n for n in chosen if n not in TRANSFORMATIONS]
    if unknown:
        raise CalibrateError(f"invariance: unknown transformation {unknown[0]!r}; known: {', '.join(TRANSFORMATIONS)}",
                             ("invariance",))
    return chosen


def derived_name(set_name: str, name: str) -> str:
    return f"{set_name}{SEPARATOR}{name}"


def source_of(derived: str) -> tuple[str, str]:
    """(source set, transformation) of a derived set's name."""
    source, _, name = derived.rpartition(SEPARATOR)
    return source, name


def transformed_pair(pair: Pair, index: int, name: str) -> Pair:
    """`pair` with both answers through transformation `name` (placeholders untouched); its extras record
    the transformation, the source set and, per answer changed, its new length over its old."""
    transform = TRANSFORMATIONS[name].transform
    texts, ratios = {}, {}
    for column in RESPONSE_COLUMNS:
        text = getattr(pair, column)
        new = text if is_placeholder_answer(text) else transform(text, Slot(index, column.removesuffix("_response")))
        texts[column] = new
        if new != text:
            ratios[column] = round(len(new) / max(len(text), 1), 2)
    extras = {**pair.extras, "invariance": name, "source_set": pair.set_name, "length_ratio": ratios}
    return replace(pair, set_name=derived_name(pair.set_name, name), extras=extras,
                   for_response=texts["for_response"], against_response=texts["against_response"])


def invariance_set(base: LoadedSet, name: str) -> LoadedSet:
    """The set `base` through transformation `name`: same ids, same order, same expected judgments."""
    return LoadedSet(name=derived_name(base.name, name), source=f"{base.name} through {name}", files=base.files,
                     pairs=[transformed_pair(pair, index, name) for index, pair in enumerate(base.pairs)])


def invariance_sets(loaded: dict[str, LoadedSet], names: Iterable[str]) -> dict[str, LoadedSet]:
    """Every loaded calibration set through every transformation in `names` (the sets a fit measures
    against known truth; derived sets such as injection-0 are not transformed again)."""
    return {derived_name(base.name, name): invariance_set(base, name)
            for name in names for base in loaded.values() if base.name in CALIBRATION_SETS}
