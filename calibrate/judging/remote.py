"""What every API judge shares, whatever the provider: the prompt file, the settings it accepts, the
API key, and the ask-validate-ask-again loop over the call layer.

A provider backend (openai_backend.py, anthropic_backend.py) says only how one request is built, sent
and read, what to do when a server refuses its structured-output request (and which mode a request asked
for), and how to ask the server
about the judge's model before any judging (`check_model`). So retries, typed failures, parse retries
and accounting behave the same for every provider.

A 400/422 saying the model refuses a sampling setting the judge sets (temperature, top_p) would fail
every pair the same way: it stops the run with one line naming the setting, and is never taken for a
structured-output rejection.
"""

from __future__ import annotations

import os
import re
from abc import abstractmethod
from functools import partial
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from calibrate.errors import CalibrateError
from calibrate.judging.base import Backend, PairView, Spend, Verdict, call_failure, judgment_schema
from calibrate.judging.calls import (
    CallFailed,
    Cost,
    Pacer,
    PacingStats,
    RetryPolicy,
    call_with_retries,
    remember_secret,
    scrub,
)
from calibrate.judging.config import judge_dirs
from calibrate.judging.configfile import DEFAULT_MAX_REPLY_BYTES, check_rate, check_reply_bytes, is_http_url
from calibrate.judging.estimate import TYPICAL_OUTPUT_TOKENS, request_chars
from calibrate.judging.prompt import PromptTemplate, load_prompt, load_system_prompt
from calibrate.judging.published import PublishedEvaluator, read_published_evaluator

NO_KEY = "not-needed"
UNSET = "unset"  # a decoding setting left out of the request, so the server's default applies
# Both providers' batch APIs charge half the list price; a judge config may say otherwise.
BATCH_PRICE_FACTOR = 0.5
# Sampling settings a model may refuse, and how a 400/422 says it does (e.g. Anthropic's "temperature
# and top_p cannot both be specified for this model", OpenAI's "Unsupported parameter: 'temperature' is
# not supported with this model", "Extra inputs are not permitted").
SAMPLING_SETTINGS = ("temperature", "top_p", "top_k")
REFUSAL_WORDS = re.compile(r"\bnot\s+(?:be\s+)?(?:supported|allowed|permitted|accepted)\b|\bunsupported\b|"
                           r"\bcan(?:not|'t|\s+not)\b|\bdo(?:es)?\s+not\s+support\b|\bonly the default\b",
                           re.IGNORECASE)

# key -> (default, changes the judgment?); providers add their own keys and defaults.
REMOTE_KEYS: dict[str, tuple[Any, bool]] = {
    "model": (None, True),
    "prompt": (None, False),  # its text is hashed instead (meaning_extras)
    "system_prompt_file": (None, False),  # instead of `prompt`: a plain system prompt; its text is hashed
    "user_template_file": (None, False),  # with system_prompt_file; default: the published user layout
    "published_evaluator": (None, False),  # instead of `prompt`: a copy of evaluator_flow.py; its hash is hashed
    "temperature": (0.1, True),
    "top_p": (0.9, True),
    "max_tokens": (2048, True),
    "max_answer_chars": (10_000, True),
    "requests_per_minute": (None, False),
    "timeout_s": (120.0, False),
    "max_retries": (6, False),
    "parse_retries": (2, False),
    "batch_price_factor": (BATCH_PRICE_FACTOR, False),
    "typical_output_tokens": (TYPICAL_OUTPUT_TOKENS, False),  # a reply's tokens, for estimates (estimate.py)
    "allow_cleartext": (False, False),  # true: send the API key over plain http to another machine
    "max_reply_bytes": (DEFAULT_MAX_REPLY_BYTES, False),  # a reply decompressed; more: reply_too_large
}
LOOPBACK_HOSTS = ("localhost", "::1")


def prompt_path(settings: dict[str, Any], config_path: Path) -> Path:
    """Where `prompt` points: a path relative to the config file, or a file name found in the
    config's own prompts/ folder or in the prompts/ of the judge folders (so a judge TOML kept
    anywhere can use the shipped prompts by name)."""
    name = Path(settings["prompt"])
    if len(name.parts) > 1 or name.is_absolute():
        return config_path.parent / name
    folders = [config_path.parent / "prompts", *(folder / "prompts" for folder in judge_dirs())]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    return folders[0] / name  # missing: load_prompt reports it with this path


def published_evaluator(settings: dict[str, Any], config_path: Path) -> PublishedEvaluator | None:
    """The copy of the public evaluator `published_evaluator` names (relative to the config file), if any."""
    if not settings["published_evaluator"]:
        return None
    return read_published_evaluator(config_path.parent / settings["published_evaluator"],
                                    f"judge config {config_path}")


def load_template(settings: dict[str, Any], config_path: Path) -> PromptTemplate:
    """The judge's prompt, unless it is a published evaluator's: a prompt file (`prompt`), or a plain
    system prompt file with the published user layout or a user template of its own (`system_prompt_file`,
    `user_template_file`), paths relative to the config file."""
    where = f"judge config {config_path}"
    if settings["system_prompt_file"]:
        user = settings["user_template_file"]
        return load_system_prompt(config_path.parent / settings["system_prompt_file"],
                                  config_path.parent / user if user else None, where)
    return load_prompt(prompt_path(settings, config_path), where)


def refused_settings(body: dict[str, Any], failure: CallFailed) -> list[str]:
    """The sampling settings a failed request carried that the server's 400/422 says the model refuses
    (named in its message, with words of refusal); [] for any other failure."""
    if failure.status not in (400, 422):
        return []
    text = failure.detail or failure.reason
    if not REFUSAL_WORDS.search(text):
        return []
    return [key for key in SAMPLING_SETTINGS if key in body and re.search(rf"(?<![\w]){key}(?![\w])", text)]


def check_choice(settings: dict[str, Any], key: str, choices: tuple[str, ...], where: str) -> None:
    if settings[key] not in choices:
        raise CalibrateError(f"{where}: '{key}' must be one of {', '.join(choices)}")


class RemoteBackend(Backend):
    """A judge behind an HTTP API. Subclasses implement `send`, `read_reply` and `build_request`."""

    CONFIG_KEYS: ClassVar[dict[str, tuple[Any, bool]]] = REMOTE_KEYS
    SENDS_REQUESTS: ClassVar[bool] = True
    MAX_TEMPERATURE: ClassVar[float] = 2.0

    @classmethod
    def validate_settings(cls, settings: dict[str, Any], path: Path, where: str) -> None:
        if not isinstance(settings["model"], str) or not settings["model"]:
            raise CalibrateError(f"{where}: 'model' must be set")
        for key in ("prompt", "system_prompt_file", "user_template_file", "published_evaluator"):
            if settings[key] is not None and not isinstance(settings[key], str):
                raise CalibrateError(f"{where}: '{key}' must be a file name or path")
        if sum(bool(settings[key]) for key in ("prompt", "system_prompt_file", "published_evaluator")) != 1:
            raise CalibrateError(f"{where}: set either 'prompt' (a prompt file), 'system_prompt_file' (a plain "
                                 "system prompt) or 'published_evaluator' (a copy of evaluator_flow.py), exactly one "
                                 "(a variant of a judge that has a prompt clears it with prompt = \"\")")
        if settings["user_template_file"] and not settings["system_prompt_file"]:
            raise CalibrateError(f"{where}: 'user_template_file' goes with 'system_prompt_file'")
        numbers = {"temperature": (0.0, cls.MAX_TEMPERATURE), "top_p": (0.0, 1.0), "timeout_s": (0.001, 3600.0),
                   "batch_price_factor": (0.0, 1.0)}
        for key, (low, high) in numbers.items():
            value = settings[key]
            unsettable = key in ("temperature", "top_p")
            if unsettable and value == UNSET:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise CalibrateError(f"{where}: '{key}' must be a number in {low}..{high}"
                                     + (f', or "{UNSET}" to leave it to the server' if unsettable else ""))
        for key, low in (("max_tokens", 1), ("max_answer_chars", 100), ("max_retries", 0), ("parse_retries", 0),
                         ("typical_output_tokens", 1)):
            if isinstance(settings[key], bool) or not isinstance(settings[key], int) or settings[key] < low:
                raise CalibrateError(f"{where}: '{key}' must be an integer >= {low}")
        check_rate(settings["requests_per_minute"], where)
        check_reply_bytes(settings["max_reply_bytes"], where)
        base_url = settings.get("base_url")
        if base_url is not None and not is_http_url(base_url):
            raise CalibrateError(f"{where}: 'base_url' must be an http:// or https:// URL, got {base_url!r}")
        if not isinstance(settings["allow_cleartext"], bool):
            raise CalibrateError(f"{where}: 'allow_cleartext' must be true or false")
        if not isinstance(settings["api_key_env"], str):
            raise CalibrateError(f"{where}: 'api_key_env' must be an environment variable name, or \"\" for none")

    @classmethod
    def meaning_extras(cls, settings: dict[str, Any], path: Path) -> dict[str, Any]:
        """The prompt's words change judgments, and so does every byte of a published evaluator file (its
        schema too); reading them here also checks the files."""
        evaluator = published_evaluator(settings, path)
        if evaluator is not None:
            return {"prompt_text": evaluator.template.text, "published_evaluator_sha256": evaluator.sha256}
        return {"prompt_text": load_template(settings, path).text}

    def __init__(self, config) -> None:
        super().__init__(config)
        settings = config.settings
        evaluator = published_evaluator(settings, config.path)
        self.prompt: PromptTemplate = evaluator.template if evaluator else load_template(settings, config.path)
        # the reply's schema: the published evaluator's own, verbatim, or the published types for the rule
        self.schema: dict[str, Any] = evaluator.schema if evaluator else judgment_schema(config.rule)
        self.policy = RetryPolicy(max_retries=settings["max_retries"])
        self.pacer = Pacer(settings["requests_per_minute"])  # its state lasts as long as the backend
        self.model_checked = False  # check_model runs once per backend, i.e. once per run

    def decoding(self) -> dict[str, Any]:
        """The decoding settings a request carries (those left "unset" are left out)."""
        s = self.config.settings
        return {key: s[key] for key in ("temperature", "top_p") if s[key] != UNSET}

    def decoding_sent(self) -> dict[str, Any]:
        """Temperature, top_p (None when left out) and max_tokens, as every request carries them."""
        return {"temperature": None, "top_p": None, **self.decoding(),
                "max_tokens": self.config.settings["max_tokens"]}

    @property
    def published_branch(self) -> str:
        """Which branch of the public code this judge's model takes: Claude's, or vLLM / OpenAI's."""
        return "claude" if "claude" in self.config.settings["model"].lower() else "openai"

    def schema_sent(self) -> tuple[dict[str, Any] | None, bool]:
        """The JSON schema a request carries (None without one), and whether it asks for strict adherence."""
        return None, False

    def api_key(self) -> str:
        variable = self.config.settings["api_key_env"]
        if not variable:
            return NO_KEY
        key = os.environ.get(variable, "").strip()
        if not key:
            raise CalibrateError(f"judge '{self.config.name}': the API key variable {variable} is not set")
        return remember_secret(key)

    def preflight(self) -> None:
        problems = self.problems()
        if problems:
            raise CalibrateError(problems[0])

    def problems(self, reachable: bool = True) -> list[str]:
        """What stops this judge, for `preflight` to raise and `preflight.check_ready` to collect: the key
        first (no request without it), then, once and only when the endpoint is `reachable`, what the
        server says about the model."""
        try:
            if self.api_key() != NO_KEY:
                self.check_cleartext()
            if reachable and not self.model_checked:
                from calibrate.judging.runner import (
                    run_sync,  # here, not at the top: importing calibrate stays light (the runner loads pandas)
                )

                run_sync(self.check_model())
                self.model_checked = True
        except CalibrateError as problem:
            return [str(problem)]
        return []

    def pacing(self) -> PacingStats:
        return self.pacer.stats

    def check_cleartext(self) -> None:
        """Refuse to send the API key in cleartext to another machine (plain http, not loopback)
        unless the config says so."""
        url = urlsplit(self.endpoint)
        host = (url.hostname or "").lower()
        loopback = host in LOOPBACK_HOSTS or host.startswith("127.")
        if url.scheme == "http" and not loopback and not self.config.settings["allow_cleartext"]:
            raise CalibrateError(f"judge '{self.config.name}': {self.endpoint} is plain http to another machine, so "
                                 f"the API key would cross the network unencrypted; use https, or set "
                                 f"allow_cleartext = true in {self.config.path}")

    async def check_model(self) -> None:
        """Ask the server about the configured model before any judging: raise CalibrateError when it
        cannot judge (retired, unknown, not served), warn when it soon cannot. One cheap request; a
        server without the endpoint must never block the run. Providers override it."""

    def refused_settings_error(self, refused: list[str], failure: CallFailed) -> CalibrateError:
        """One line for a model that refuses sampling settings the judge sets: which, and what to change."""
        said = " ".join((failure.detail or failure.reason).split())[:300]
        # "temperature and top_p cannot both be set": keep the published temperature, leave top_p out
        unset = ["top_p"] if {"temperature", "top_p"} <= set(refused) else refused
        advice = " and ".join(f'{key} = "{UNSET}"' for key in unset)
        return CalibrateError(f"judge '{self.config.name}': the model refuses these settings ({said}); "
                              f"set {advice} in {self.config.path}")

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """Where requests go, for messages."""

    @abstractmethod
    def build_request(self, view: PairView) -> tuple[dict[str, Any], int]:
        """The request body for one view, and how many answer characters were cut."""

    @abstractmethod
    async def send(self, body: dict[str, Any]) -> Any:
        """Send one body; return the reply or raise the call layer's StatusError / ConnectionFailure."""

    @abstractmethod
    def read_reply(self, raw: Any) -> Verdict:
        """Validated fields from one reply, or a typed failure with its reason."""

    @abstractmethod
    def sdk_client(self, download: bool = False) -> Any:
        """The provider's official SDK client (its batch API drives it: provider_batch.py); with `download`,
        one for the batch result files."""

    def without_structured_output(self, body: dict[str, Any], failure: CallFailed) -> dict[str, Any] | None:
        """When a server refuses the structured-output part of a request: the body in a plainer form (and
        later requests too), or None when the failure is no such refusal or there is nothing to fall back from."""
        return None

    def mode_of(self, body: dict[str, Any]) -> str | None:
        """The structured-output mode a request body asks for (None: this judge has no such setting)."""
        return None

    async def judge(self, view: PairView) -> Verdict:
        return await self.judge_request(*self.build_request(view))

    async def judge_request(self, body: dict[str, Any], cut: int) -> Verdict:
        """Judge with a request already built (`build_request`): under a spend cap the runner builds
        it first to price it, and sends that one rather than building it again."""
        totals: Spend = {"input_tokens": 0, "output_tokens": 0, "attempts": 0}
        where = f"judge '{self.config.name}' at {self.endpoint}"
        cost = Cost(request_chars(body), self.config.settings["max_tokens"])
        asked = 0
        while True:
            try:
                raw, attempts = await call_with_retries(partial(self.send, body), self.policy, self.pacer, where, cost)
            except CallFailed as failure:
                totals["attempts"] += failure.attempts
                refused = refused_settings(body, failure)
                if refused:  # every pair would fail alike: stop the run, before any structured-output fallback
                    raise self.refused_settings_error(refused, failure) from None
                fallback = self.without_structured_output(body, failure)
                if fallback is not None:
                    body = fallback
                    continue
                failed = call_failure(failure.kind, failure.reason, truncated_chars=cut, **totals)
                failed.response_format = self.mode_of(body)
                return failed
            totals["attempts"] += attempts
            verdict = self.read_reply(raw)
            self.pacer.calibrate(cost, verdict.input_tokens, verdict.output_tokens)
            totals["input_tokens"] += verdict.input_tokens
            totals["output_tokens"] += verdict.output_tokens
            asked += 1
            if verdict.parse_status == "ok" or asked > self.config.settings["parse_retries"]:
                break
        verdict.input_tokens, verdict.output_tokens = totals["input_tokens"], totals["output_tokens"]
        verdict.attempts, verdict.truncated_chars = totals["attempts"], cut
        verdict.response_format = self.mode_of(body)
        if verdict.parse_status != "ok":  # what a failure keeps (raw reply, reason) never carries a credential
            verdict.raw_output = scrub(verdict.raw_output)
            verdict.failure_reason = scrub(verdict.failure_reason or "") or None
        return verdict

    async def aclose(self) -> None:
        """Connections and the pacer's locks belong to one event-loop run; the next run makes its own."""
        self.pacer.release_loop()

