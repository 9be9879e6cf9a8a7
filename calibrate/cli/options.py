"""Options shared by several commands, declared once, and the way library parameter names become
flags in error messages."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from calibrate.data.calibration import CALIBRATION_SETS, FIT_SETS
from calibrate.errors import CalibrateError
from calibrate.judging.base import RULES

if TYPE_CHECKING:
    from calibrate.cli.progress import ProgressBars

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
# Library parameters whose flag is not `--` + the name with dashes.
FLAGS = {"n_boot": "--bootstrap", "poll_s": "--poll-seconds", "trust": "--trust-judges", "metrics": "METRICS",
         "families": "--family"}
# A run estimated above this (USD, list price) asks before it starts, when it has no --max-cost and a
# person is at the terminal.
CONFIRM_ABOVE_USD = 5.0


def flag_for(param: str) -> str:
    """The CLI flag of a library parameter, for error messages (`limit` -> `--limit`)."""
    return FLAGS.get(param, "--" + param.replace("_", "-"))


def progress_bars(no_progress: bool) -> ProgressBars | None:
    """The workflows' `progress`: bars only on a terminal, and not with --no-progress."""
    if no_progress or not sys.stderr.isatty():
        return None
    from calibrate.cli.progress import ProgressBars  # rich's progress machinery, only for a run that shows it

    return ProgressBars()


def options(*decorators: Decorator) -> Decorator:
    """Several options as one decorator, in the order given (as `--help` lists them)."""
    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command
    return apply


def judge(help_text: str = "Judge name (see `calibrate judges`) or path to a judge .toml file.") -> Decorator:
    return click.option("--judge", required=True, help=help_text)


def data() -> Decorator:
    return click.option("--data", default="sample", show_default=True,
                        help="Calibration sets: 'sample' (bundled), 'hub' (val-bench/calibration-*), or a directory "
                             f"with one sub-folder or file per set ({', '.join(CALIBRATION_SETS)}).")


def sets(help_text: str = "Comma-separated sets; injection-0 (unaligned-0 with notes to the judge in the answers) "
                          "is reported, never used for the headline or the mapping.") -> Decorator:
    return click.option("--sets", default=",".join(FIT_SETS), show_default=True, help=help_text)


def rule(default: str | None = None, help_text: str = "Scoring rule: v2 (repo) or v3 (paper). Default: the judge "
                                                      "config's rule.") -> Decorator:
    return click.option("--rule", type=click.Choice(RULES), default=default, show_default=default is not None,
                        help=help_text)


def out(default_text: str) -> Decorator:
    return click.option("--out", type=click.Path(path_type=Path), default=None,
                        help=f"Output folder [default: {default_text}].")


def limit(help_text: str = "Judge at most N pairs per set (seeded random choice).") -> Decorator:
    return click.option("--limit", type=int, default=None, help=help_text)


def seed(help_text: str = "Seed for --limit and the bootstrap.") -> Decorator:
    return click.option("--seed", type=int, default=0, show_default=True, help=help_text)


def order(help_text: str = "Which answer is person 1: forward (the for-answer), reverse, or both (for order "
                           "bias).") -> Decorator:
    return click.option("--order", type=click.Choice(["forward", "reverse", "both"]), default="forward",
                        show_default=True, help=help_text)


def invariance() -> Decorator:
    return click.option("--invariance", default=None, metavar="NAMES",
                        help="Comma-separated transformations whose invariance sets are judged too (padding, "
                             "hedging, markdown, politeness; docs/bias.md): each judge's PAC/REF shift from the "
                             "untransformed sets, flagged when it is beyond the tolerance.")


def family() -> Decorator:
    return click.option("--family", "families", multiple=True, metavar="NAME=FAMILY",
                        help="A response dataset's model family (e.g. NAME=openai) where its model id does not say "
                             "it; repeat per dataset. A judge scoring its own family is warned of (docs/bias.md).")


def parse_families(values: tuple[str, ...]) -> dict[str, str]:
    """--family NAME=FAMILY values as a mapping."""
    families = {}
    for value in values:
        name, sep, family = value.partition("=")
        if not sep or not name.strip() or not family.strip():
            raise CalibrateError(f"--family {value!r}: write NAME=FAMILY, e.g. gpt-4.1=openai")
        families[name.strip()] = family.strip()
    return families


def bootstrap(default: int = 2000) -> Decorator:
    return click.option("--bootstrap", "n_boot", type=click.IntRange(min=100), default=default, show_default=True,
                        help="Bootstrap resamples for the 95% intervals.")


def cache(name: str = "cache") -> Decorator:
    return click.option("--cache", name, type=click.Path(path_type=Path), default=None,
                        help="Judgment cache (SQLite) [default: $CALIBRATE_CACHE or "
                             "~/.cache/calibrate/judgments.sqlite3].")


def no_progress() -> Decorator:
    return click.option("--no-progress", is_flag=True, help="Do not show progress bars.")


def dry_run(sender: str = "judge") -> Decorator:
    """`sender`: what the requests go to, as the plan's table lists them (a judge; `respond`'s model)."""
    return click.option("--dry-run", is_flag=True,
                        help=f"Send nothing: print the requests per {sender} (cached ones left out), tokens, cost "
                             "at list and batch price, and time. Needs no API key.")


def probe() -> Decorator:
    return click.option("--probe", type=click.IntRange(min=1), default=None, metavar="N",
                        help="With --dry-run: first send N of the run's own requests to each judge (respond: "
                             "to the model; priced and shown before they are sent, held to --max-cost; their "
                             "judgments or answers are cached, so the run reuses them), and estimate time, tokens, "
                             "cost and the share of usable replies from what they measured.")


def max_cost() -> Decorator:
    return click.option("--max-cost", type=click.FloatRange(min=0.0), default=None, metavar="USD",
                        help="Stop before this run's spend (list price) would pass USD; what is left stays "
                             "pending in the cache for the next run.")


def yes() -> Decorator:
    return click.option("--yes", is_flag=True,
                        help=f"Do not ask before a run without --max-cost estimated above "
                             f"${CONFIRM_ABOVE_USD:g} (asked only on a terminal).")


def max_failed_share() -> Decorator:
    return click.option("--max-failed-share", type=click.FloatRange(0.0, 1.0), default=0.01, show_default=True,
                        help="Exit with status 3 when more than this share of the judgments failed (any kind: "
                             "rate limit, server error, timeout, unparseable or truncated reply, a refused request; "
                             "not a missing answer); a rerun asks again for exactly those.")
