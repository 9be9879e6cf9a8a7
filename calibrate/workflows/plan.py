"""What a run would send and cost, before it sends anything (the `plan_` functions, `--dry-run`), and the
spend cap a run keeps to (`max_cost`, `--max-cost`).

A plan reads the cache (read-only; a missing cache is an empty one) to leave out what is already
judged, renders every request that would be sent to count its tokens, and touches no network: no key
is needed to see what a run would cost.

A measured plan (`probe=N`, `--dry-run --probe N`) first sends N of the run's own requests to each judge
(`probe_judging`): priced before anything is sent and held to `max_cost`, judged at the judge's
concurrency, their judgments committed to the cache like any run's (so the run reuses them). The plan
then takes its latency, tokens per request and cost from what they measured, and carries a `Probe` per
judge with the parse-success rate. A measured plan of `respond` (`plan_answers` with `probe`) asks the
model N of the run's own questions the same way (`_probe_answers`), its answers cached like a run's.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from calibrate.data.pairs import Pair
from calibrate.errors import CalibrateError
from calibrate.judging.base import Backend, Judgment, Key, PairView, view_of
from calibrate.judging.estimate import (
    ASSUMED_BASIS,
    ASSUMED_LATENCY_S,
    RATIO_SAMPLE,
    CostEstimate,
    RequestSizer,
    SpendBudget,
    key_is_set,
    request_input_tokens,
    sizer_for,
)
from calibrate.judging.models import ModelConfig
from calibrate.judging.preflight import check_ready
from calibrate.judging.progress import ProgressCallback
from calibrate.judging.responder import TYPICAL_ANSWER_TOKENS, USABLE_STATUSES, Responder, ask_all
from calibrate.judging.runner import CachedJudgments, judge_pairs, run_sync, split_cached
from calibrate.records import Record
from calibrate.store.judgments import JudgmentStore as CacheFile
from calibrate.store.responses import ResponseStore
from calibrate.store.sqlite import cache_path

# Where a probe's measurements come from, as the estimates built on them say it.
PROBED_BASIS = "probed now"
# Where a plan of `respond` takes its answers' tokens and latency from when the cache holds the model's answers.
CACHED_ANSWERS = "cached"


@dataclass(frozen=True)
class ProbeQuote(Record):
    """What a probe is about to send to one judge (or, probing `respond`, to the answering model: `judge`
    names it), priced (list price, as the run's budget prices a request) before anything is sent."""

    judge: str
    offline: bool  # judged here: nothing is sent or paid
    requests: int
    cost_usd: float


@dataclass(frozen=True)
class Probe(Record):
    """What `n_sent` real requests to one judge showed (a measured plan): how many came back parsed, the
    failures by kind with each kind's first reason, the median latency, tokens per judgment (a reply
    the judge could not parse is asked again: `requests` counts every request, their tokens included),
    and the cost, quoted before and spent. An offline judge is judged here: nothing is sent or paid.
    A probe of `respond` is the same record for the answering model: `judge` names the model, `n_sent`
    counts the questions asked, `n_parsed` the usable answers (`ok` or `truncated`), `requests` every
    attempt (retries included), and latency and tokens are per usable answer."""

    judge: str
    offline: bool
    n_sent: int
    n_parsed: int
    requests: int
    failures_by_kind: dict[str, int]
    first_reasons: dict[str, str]
    median_latency_s: float | None
    mean_input_tokens: float | None
    mean_output_tokens: float | None
    quoted_usd: float
    cost_usd: float

    @property
    def parse_rate(self) -> float:
        """Parsed / sent (NaN when nothing was sent: the run's requests were all cached)."""
        return self.n_parsed / self.n_sent if self.n_sent else math.nan


@dataclass
class RunPlan:
    """What a command would send, per judge (or model): requests, tokens, cost at list and batch
    price, and time at the judge's limits. Nothing was sent to make it, unless it was probed: then
    `probes` says what the probe's requests (now cached, left out of `estimates`) measured."""

    command: str
    estimates: list[CostEstimate]
    notes: list[str] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Requests to API judges (an offline judge's judgments are made here, not sent)."""
        return sum(estimate.requests for estimate in self.estimates if not estimate.offline)

    @property
    def cost_usd(self) -> float:
        """At list price (what a live run pays)."""
        return sum(estimate.cost_usd for estimate in self.estimates)

    @property
    def batch_cost_usd(self) -> float | None:
        """At batch price where the judge has a batch API (list price for those that have none)."""
        if not any(estimate.batch_cost_usd is not None for estimate in self.estimates):
            return None
        return sum(e.cost_usd if e.batch_cost_usd is None else e.batch_cost_usd for e in self.estimates)

    @property
    def time_s(self) -> float:
        """Judges run one after another."""
        return sum(estimate.time_s for estimate in self.estimates)

    @property
    def missing_keys(self) -> list[str]:
        """Key variables the real run needs that are not set now."""
        return list(dict.fromkeys(e.key_variable for e in self.estimates if e.key_variable and not e.key_set))

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "requests": self.requests, "cost_usd": self.cost_usd,
                "batch_cost_usd": self.batch_cost_usd, "time_s": self.time_s, "missing_keys": self.missing_keys,
                "estimates": [estimate.to_dict() for estimate in self.estimates], "notes": self.notes,
                "probes": [probe.to_dict() for probe in self.probes]}


def spend_budget(max_cost: float | SpendBudget | None) -> SpendBudget | None:
    """`max_cost` as the budget the runner consults: a cap in USD, or a budget shared by several runs."""
    if max_cost is None or isinstance(max_cost, SpendBudget):
        return max_cost
    return SpendBudget(max_cost)


class _NoCache:
    """The cache of a plan when there is no cache file yet: nothing is judged."""

    def get_many(self, config_hash: str, keys: Iterable[Key]) -> dict[Key, Judgment]:
        return {}


@contextmanager
def plan_store(cache: Path | str | None) -> Iterator[CachedJudgments]:
    """The cache, opened read-only (a plan writes nothing), or an empty one when there is no file."""
    path = cache_path(cache)
    if not path.exists():
        yield _NoCache()
        return
    with CacheFile(path, read_only=True) as store:
        yield store


def estimate_judging(backend: Backend, pairs: Sequence[Pair], store: CachedJudgments, orders: Sequence[str],
                     repeats: int = 1, exclude: set[tuple[str, str]] | frozenset = frozenset(),
                     sizers: dict[str, RequestSizer] | None = None) -> list[CostEstimate]:
    """What judging `pairs` would send, per judge (a panel: per member, as each is judged and cached on
    its own); `exclude`: (item, order) already on their way (open batch jobs). `sizers`: the judges'
    sizers, kept across calls so that the chunks of one plan are sized alike (by default, new ones)."""
    sizers = {} if sizers is None else sizers
    if backend.members:
        return [e for member in backend.members for e in estimate_judging(member, pairs, store, orders, repeats,
                                                                          exclude, sizers)]
    wanted, cached = split_cached(store, backend.config.config_hash, pairs, orders, repeats)
    todo = [view_of(pair, key[1]) for key, pair in wanted.items()
            if key not in cached and (key[0], key[1]) not in exclude]
    not_sent = sum(1 for pair in pairs if pair.missing_answers) * len(orders) * repeats
    sizer = sizer_for(backend, sizers)
    sizer.learn((view_of(wanted[key], key[1]), j) for key, j in cached.items())
    return [sizer.estimate(todo, cached=len(wanted) - len(todo), not_sent=not_sent)]


def check_probe(n: int) -> None:
    """A probe is a whole number of requests, 0 for none."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise CalibrateError(f"probe must be a whole number of requests >= 0, got {n!r}", ("probe",))


T = TypeVar("T")


def evenly_spaced(todo: Sequence[T], n: int) -> list[T]:
    """`n` of a run's requests still to send, evenly spaced through them in the run's order (the same on every
    call, so the run reuses what a probe sent)."""
    return [todo[i * len(todo) // n] for i in range(min(n, len(todo)))]


ProbeTarget = tuple[Backend, Sequence[Pair], Sequence[str]]  # a judge, the run's pairs for it, its orders


def probe_judging(targets: Sequence[ProbeTarget], n: int, *, cache: Path | str | None,
                  budget: SpendBudget | None, sizers: dict[str, RequestSizer],
                  progress: ProgressCallback | None = None,
                  on_quote: Callable[[list[ProbeQuote]], None] | None = None) -> list[Probe]:
    """Send `n` of the run's own requests to each judge of `targets` (a panel: each member; a judge in two
    targets: once), and measure them; with n = 0, nothing (no probe). The requests are those not cached
    yet, evenly spaced through the run's requests in its order (the same on every call, so the run
    reuses them). Everything is checked (keys, endpoints) and priced first: `on_quote` receives the
    price, and a price above what `budget` has left stops with nothing sent. The judges' sizers in
    `sizers` are set to what the probe measured, so a plan made with them extrapolates from it. A judge
    whose every probe request failed stops the plan with one line (its failure kinds, the first reason)."""
    check_probe(n)
    if not n:
        return []
    judges = _probe_judges(targets)
    check_ready([backend for backend, _, _ in judges.values()])  # every key and endpoint before anything is sent
    with CacheFile(cache_path(cache)) as store:
        picks: dict[str, list[tuple[Key, Pair]]] = {}
        quotes = []
        for config_hash, (backend, pairs, orders) in judges.items():
            wanted, cached = split_cached(store, config_hash, pairs, orders)
            sizer = sizer_for(backend, sizers)
            sizer.learn((view_of(wanted[key], key[1]), j) for key, j in cached.items())  # prices as the run would
            todo = [(key, pair) for key, pair in wanted.items() if key not in cached]
            picks[config_hash] = evenly_spaced(todo, n)
            requests = [sizer.request(view_of(pair, key[1])) for key, pair in picks[config_hash]]
            quotes.append(ProbeQuote(backend.config.name, not backend.SENDS_REQUESTS, len(picks[config_hash]),
                                     sum(sizer.cost_usd(request[0]) for request in requests if request)))
        if on_quote is not None:
            on_quote(quotes)
        price = sum(quote.cost_usd for quote in quotes)
        if budget is not None and budget.spent_usd + price > budget.cap_usd:
            raise CalibrateError(f"max_cost: the probe's {sum(q.requests for q in quotes)} requests are priced at "
                                 f"${price:.4f} at list price, above the cap of ${budget.cap_usd:g}; nothing was sent",
                                 ("max_cost",))
        probes = [_probe(backend, picks[config_hash], store, budget, sizers, progress, quote)
                  for (config_hash, (backend, _, _)), quote in zip(judges.items(), quotes, strict=True)]
    failed = [probe for probe in probes if probe.n_sent and not probe.n_parsed]
    if failed:
        raise CalibrateError("; ".join(
            f"judge '{probe.judge}': none of the {probe.n_sent} probe requests came back judged ("
            + ", ".join(f"{kind} {count}" for kind, count in probe.failures_by_kind.items())
            + f"; first: {next(iter(probe.first_reasons.values()), 'no reason given')})" for probe in failed)
            + "; the failures are in the cache's failure log; fix the judge (or its server) and try again")
    return probes


def _probe_judges(targets: Sequence[ProbeTarget]) -> dict[str, ProbeTarget]:
    """The judges that send (a panel's members, as each is judged and cached on its own), each once."""
    judges: dict[str, ProbeTarget] = {}
    for backend, pairs, orders in targets:
        if backend.members:
            judges.update({h: t for h, t in _probe_judges([(m, pairs, orders) for m in backend.members]).items()
                           if h not in judges})
        else:
            judges.setdefault(backend.config.config_hash, (backend, pairs, orders))
    return judges


def _probe(backend: Backend, picks: list[tuple[Key, Pair]], store: CacheFile, budget: SpendBudget | None,
           sizers: dict[str, RequestSizer], progress: ProgressCallback | None, quote: ProbeQuote) -> Probe:
    """Judge the picked requests as a run would (the judge's concurrency, committed to the cache), one
    order at a time, and measure them."""
    statuses: list[str] = []
    latencies: list[float] = []
    usage: list[tuple[PairView, int, int]] = []  # the requests' views and their reported tokens
    kinds: dict[str, int] = {}
    reasons: dict[str, str] = {}
    requests, spent = 0, 0.0
    for order in dict.fromkeys(key[1] for key, _ in picks):
        pairs = [pair for key, pair in picks if key[1] == order]
        table, counts = judge_pairs(backend, pairs, store, orders=(order,), progress=progress, budget=budget,
                                    sizers=sizers)
        statuses.extend(table["parse_status"])
        latencies.extend(value for value in table["latency_s"].dropna() if value > 0)
        usage.extend((view_of(pair, order), int(tokens_in), int(tokens_out)) for pair, tokens_in, tokens_out
                     in zip(pairs, table["input_tokens"].fillna(0), table["output_tokens"].fillna(0), strict=True)
                     if tokens_in > 0)
        spent += float(table["cost_usd_this_run"].sum())
        requests += counts["requests"]
        for kind, count in counts["failed_by_kind"].items():
            kinds[kind] = kinds.get(kind, 0) + count
        for kind, reason in counts.get("first_reasons", {}).items():
            reasons.setdefault(kind, reason)
    sizer_for(backend, sizers).measure(usage, latencies, PROBED_BASIS)
    return Probe(judge=backend.config.name, offline=not backend.SENDS_REQUESTS, n_sent=len(statuses),
                 n_parsed=statuses.count("ok"), requests=requests,
                 failures_by_kind=dict(sorted(kinds.items())), first_reasons=dict(sorted(reasons.items())),
                 median_latency_s=statistics.median(latencies) if latencies else None,
                 mean_input_tokens=statistics.fmean(tokens for _, tokens, _ in usage) if usage else None,
                 mean_output_tokens=statistics.fmean(tokens for _, _, tokens in usage) if usage else None,
                 quoted_usd=quote.cost_usd, cost_usd=spent)


def combined(estimates: Iterable[CostEstimate]) -> list[CostEstimate]:
    """One estimate per judge, its parts (chunks of a stream, several calls) added, in first-seen order."""
    by_name: dict[str, CostEstimate] = {}
    for estimate in estimates:
        by_name[estimate.name] = by_name[estimate.name].add(estimate) if estimate.name in by_name else estimate
    return list(by_name.values())


def plan_answers(config: ModelConfig, questions: dict[str, str], cache: Path | str | None, *, probe: int = 0,
                 budget: SpendBudget | None = None, progress: ProgressCallback | None = None,
                 on_quote: Callable[[list[ProbeQuote]], None] | None = None) -> RunPlan:
    """What `respond` would send: one request per question the cache holds no answer to, its tokens
    from the conversation as sent; the answers' tokens and latency from what the cache's answers
    measured, else a typical answer and the assumed latency. With `probe` N, N of those questions are
    asked first (`_probe_answers`: `on_quote` gets their price before they are sent, `budget` caps them,
    `progress` shows them), and the plan takes the answers' tokens and latency from them."""
    check_probe(probe)
    probes: list[Probe] = []
    probed: list[tuple[str, dict]] = []
    if probe:
        measured, probed = _probe_answers(config, questions, probe, cache=cache, budget=budget, progress=progress,
                                          on_quote=on_quote)
        probes.append(measured)
    path = cache_path(cache)
    cached: dict[str, dict] = {}
    if path.exists():
        with ResponseStore(path) as store:
            cached = store.get_many(config.config_hash, questions)
    todo = [question for key, question in questions.items() if key not in cached]
    sizes = (AnswerSizes.of(config, probed, PROBED_BASIS) if probes
             else AnswerSizes.of(config, ((questions[key], answer) for key, answer in cached.items())))
    estimate = CostEstimate(
        name=config.name, backend="openai", model=config.model, requests=len(todo), cached=len(cached),
        input_tokens=sum(round(_rendered_tokens(config, question) * sizes.input_ratio) for question in todo),
        output_tokens_per_request=sizes.output_tokens, output_basis=sizes.output_basis,
        input_ratio=sizes.input_ratio, latency_s=sizes.latency_s, latency_basis=sizes.latency_basis,
        price_input_per_mtok=config.price_input_per_mtok, price_output_per_mtok=config.price_output_per_mtok,
        requests_per_minute=config.requests_per_minute, concurrency=config.concurrency,
        key_variable=config.api_key_env or None, key_set=key_is_set(config.api_key_env))
    return RunPlan("respond", [estimate], probes=probes)


def _rendered_tokens(config: ModelConfig, question: str) -> int:
    """Input tokens of the conversation that asks `question`, as rendered (CHARS_PER_TOKEN)."""
    return request_input_tokens({"messages": config.messages(question)})


@dataclass(frozen=True)
class AnswerSizes:
    """What a model's answers measured: the provider's input tokens over the rendered count, the mean
    answer, the median latency, each saying where it comes from (a typical answer and the assumed
    latency where nothing was measured)."""

    input_ratio: float = 1.0
    output_tokens: float = TYPICAL_ANSWER_TOKENS
    output_basis: str = "typical"
    latency_s: float = ASSUMED_LATENCY_S
    latency_basis: str = ASSUMED_BASIS

    @classmethod
    def of(cls, config: ModelConfig, answers: Iterable[tuple[str, dict]], source: str = CACHED_ANSWERS) -> AnswerSizes:
        """From usable answers (each question with its answer record: reported tokens, latency); `source`
        says where they come from (the cache's answers, or a probe's)."""
        answers = list(answers)
        sizes = cls()
        used = [(question, answer) for question, answer in answers if answer.get("input_tokens", 0) > 0][:RATIO_SAMPLE]
        if used:
            rendered = sum(_rendered_tokens(config, question) for question, _ in used)
            sizes = replace(sizes, input_ratio=sum(answer["input_tokens"] for _, answer in used) / max(rendered, 1),
                            output_tokens=statistics.fmean(answer["output_tokens"] for _, answer in used),
                            output_basis=f"mean of {len(used)} {source}")
        latencies = [answer["latency_s"] for _, answer in answers if answer.get("latency_s")]
        if latencies:
            sizes = replace(sizes, latency_s=statistics.median(latencies),
                            latency_basis=f"median of {len(latencies)} {source}")
        return sizes


def _probe_answers(config: ModelConfig, questions: dict[str, str], n: int, *, cache: Path | str | None,
                   budget: SpendBudget | None, progress: ProgressCallback | None,
                   on_quote: Callable[[list[ProbeQuote]], None] | None) -> tuple[Probe, list[tuple[str, dict]]]:
    """Ask the model `n` of the run's own questions as `respond` asks them (its client, concurrency and
    retries, held to `budget`; the answers committed to the cache, so the run reuses them), and measure
    them. The questions are those the cache holds no answer to, evenly spaced through the run's
    questions in its order (the same on every call). They are priced first, as the plan prices them:
    `on_quote` receives the price, and a price above what `budget` has left stops with nothing sent.
    Returns the probe's record and its usable answers, each with its question; a probe none of whose
    questions was answered stops with one line (the failure kinds, the first reason)."""
    config.api_key()  # a missing key fails before anything is sent
    with ResponseStore(cache_path(cache)) as store:
        cached = store.get_many(config.config_hash, questions)
        sizes = AnswerSizes.of(config, ((questions[key], answer) for key, answer in cached.items()))
        todo = [(key, question) for key, question in questions.items() if key not in cached]
        picks = evenly_spaced(todo, n)
        quote = ProbeQuote(config.name, False, len(picks), sum(
            config.cost_usd(round(_rendered_tokens(config, question) * sizes.input_ratio), sizes.output_tokens)
            for _, question in picks))
        if on_quote is not None:
            on_quote([quote])
        if budget is not None and budget.spent_usd + quote.cost_usd > budget.cap_usd:
            raise CalibrateError(f"max_cost: the probe's {quote.requests} requests are priced at "
                                 f"${quote.cost_usd:.4f} at list price, above the cap of ${budget.cap_usd:g}; "
                                 "nothing was sent", ("max_cost",))
        fresh = run_sync(ask_all(Responder(config), picks, store, progress, budget)) if picks else {}
    answers = list(fresh.values())
    answered = {key: answer for key, answer in fresh.items() if answer["status"] in USABLE_STATUSES}
    usable = list(answered.values())
    failed = [answer for key, answer in fresh.items() if key not in answered]
    reasons: dict[str, str] = {}
    for answer in failed:
        reasons.setdefault(answer["failure_kind"], answer["failure_reason"] or "")
    latencies = [answer["latency_s"] for answer in usable if answer.get("latency_s")]
    reported = [answer for answer in usable if answer["input_tokens"] > 0]
    probe = Probe(judge=config.name, offline=False, n_sent=len(answers), n_parsed=len(usable),
                  requests=sum(answer["attempts"] for answer in answers),
                  failures_by_kind=dict(sorted(Counter(answer["failure_kind"] for answer in failed).items())),
                  first_reasons=dict(sorted(reasons.items())),
                  median_latency_s=statistics.median(latencies) if latencies else None,
                  mean_input_tokens=statistics.fmean(a["input_tokens"] for a in reported) if reported else None,
                  mean_output_tokens=statistics.fmean(a["output_tokens"] for a in reported) if reported else None,
                  quoted_usd=quote.cost_usd,
                  cost_usd=sum(config.cost_usd(answer["input_tokens"], answer["output_tokens"]) for answer in answers))
    if failed and not usable:
        raise CalibrateError(
            f"model '{config.name}': none of the {len(answers)} probe requests came back answered ("
            + ", ".join(f"{kind} {count}" for kind, count in probe.failures_by_kind.items())
            + f"; first: {failed[0]['failure_reason'] or 'no reason given'}); the failures are in the cache's "
            "failure log; fix the model (or its server) and try again")
    return probe, [(questions[key], answer) for key, answer in answered.items()]
