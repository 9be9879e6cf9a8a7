"""Backend registry: the `backend` key of a judge config names one of these."""

from __future__ import annotations

from calibrate.errors import CalibrateError
from calibrate.judging.anthropic_backend import AnthropicBackend
from calibrate.judging.base import Backend
from calibrate.judging.constant import ConstantBackend
from calibrate.judging.heuristic import HeuristicBackend
from calibrate.judging.openai_backend import OpenAIBackend
from calibrate.judging.panel import PanelBackend

BACKENDS: dict[str, type[Backend]] = {
    "anthropic": AnthropicBackend,
    "constant": ConstantBackend,
    "heuristic": HeuristicBackend,
    "openai": OpenAIBackend,
    "panel": PanelBackend,
}


def backend_class(name: str, where: str) -> type[Backend]:
    if name not in BACKENDS:
        raise CalibrateError(f"{where}: unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]


def make_backend(config) -> Backend:
    return backend_class(config.backend, f"judge config {config.path}")(config)
