"""Model families: who made a model, read from its id, so that a judge scoring answers of its own
family (the self-preference bias: a judge favouring its maker's models) can be named and measured.

A family comes from the model id by the patterns below (`claude-sonnet-4-6` → anthropic,
`google/gemma-3-27b-it` → google); an id none of them matches has no family. A judge config may state
its `family`; a response dataset's family is that of the model id in its `model` column (what
`calibrate respond` writes), else of the dataset's name, unless the caller's `families` mapping
(dataset name → family, the CLI's `--family NAME=FAMILY`) says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from calibrate.data.pairs import Pair
from calibrate.errors import CalibrateError

# (pattern searched in the lower-cased id, family), first match wins
FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"claude", "anthropic"),
    (r"deepseek", "deepseek"),  # before the families its distilled models name (deepseek-r1-distill-qwen)
    (r"(^|[/_-])(gpt|chatgpt)|(^|/)o[1-9]($|-)", "openai"),
    (r"gemma|gemini", "google"),
    (r"llama", "meta"),
    (r"qwen|qwq", "alibaba"),
    (r"mistral|mixtral|ministral|codestral|magistral", "mistral"),
)
FAMILY_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


def model_family(model_id: str | None) -> str | None:
    """The family of a model id, or None when no pattern knows it."""
    if not model_id:
        return None
    lowered = model_id.strip().lower()
    return next((family for pattern, family in FAMILY_PATTERNS if re.search(pattern, lowered)), None)


def check_family(family: object, what: str, parameters: tuple[str, ...] = ()) -> str:
    """A family as given by a user: a lower-case name (letters, digits, '.', '_', '-'); `parameters`: the
    library parameters that gave it (none for a config file's key, which `what` names)."""
    if not isinstance(family, str) or not FAMILY_NAME.fullmatch(family):
        raise CalibrateError(f"{what}: 'family' must be a lower-case name such as 'openai', got {family!r}",
                             parameters)
    return family


def check_families(families: Mapping[str, str] | None, names: list[str]) -> dict[str, str]:
    """The caller's dataset name → family mapping, every name one of the response datasets."""
    checked = {}
    for name, family in (families or {}).items():
        if name not in names:
            raise CalibrateError(f"families: '{name}' is not a response dataset given ({', '.join(names)})",
                                 ("families",))
        checked[name] = check_family(family, f"families: '{name}'", ("families",))
    return checked


def dataset_model(name: str, pair: Pair) -> str:
    """The model a response dataset holds answers of: its `model` column (first row), else its name."""
    model = pair.extras.get("model")
    return model if isinstance(model, str) and model.strip() else name


def dataset_family(name: str, pair: Pair, families: Mapping[str, str]) -> str | None:
    """A response dataset's family: the caller's, else its model id's (see `dataset_model`)."""
    return families.get(name) or model_family(dataset_model(name, pair))


def same_family_warning(judge: str, judge_family: str | None, model: str, family: str | None) -> str | None:
    """One line when a judge scores answers of its own family (self-preference may inflate them), else None."""
    if judge_family is None or judge_family != family:
        return None
    return (f"judge '{judge}' scores '{model}', a model of its own family ({family}); a judge may favour its "
            "own family's answers (compare with a judge of another family to measure it)")
