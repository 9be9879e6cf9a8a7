"""Every problem that would stop a run, found before anything is judged and reported together: judge
configs that cannot be read, API keys that are not set, endpoints that cannot be reached, and what
each server says about its model. Fixing one problem should never reveal the next only on the next try.

Reachability is a TCP connection to the endpoint's host and port, with the TLS handshake for https (or a
TCP connection to the proxy the environment names for it), with no request sent; its failure is named (a
host that does not resolve, a refused connection, a certificate or handshake refused). The model check
(`check_model`) is asked only of judges whose key and endpoint are fine.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from calibrate.errors import CalibrateError
from calibrate.judging.base import Backend
from calibrate.judging.config import JudgeConfig
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.remote import RemoteBackend
from calibrate.judging.transport import env_proxy

CONNECT_TIMEOUT_S = 5.0


def load_judges(names: Sequence[str]) -> tuple[list[tuple[JudgeConfig, Backend]], list[str]]:
    """Every judge that loads, with its backend, and one line for each that does not."""
    loaded, problems = [], []
    for name in names:
        try:
            config = load_judge_config(name)
            loaded.append((config, make_backend(config)))
        except CalibrateError as problem:
            problems.append(str(problem))
    return loaded, problems


def remote_members(backends: Iterable[Backend]) -> list[RemoteBackend]:
    """The API judges among `backends`, a panel's members included, each once."""
    found: dict[int, RemoteBackend] = {}
    for backend in backends:
        for member in backend.members or [backend]:
            if isinstance(member, RemoteBackend):
                found.setdefault(id(member), member)
    return list(found.values())


def key_variables(backend: Backend) -> list[str]:
    """Every API key variable a judge needs (a panel: its members'), in order, each once."""
    return list(dict.fromkeys(b.config.settings["api_key_env"] for b in remote_members([backend])
                              if b.config.settings["api_key_env"]))


def check_ready(backends: Sequence[Backend], problems: Sequence[str] = ()) -> None:
    """Raise one CalibrateError naming every problem (`problems`: those found already, e.g. configs
    that did not load): each judge's `problems` (key, cleartext, the server's word on its model when its
    endpoint is reachable), then the unreachable endpoints."""
    from calibrate.judging.runner import run_sync  # here, not at the top: the runner loads pandas

    found = list(problems)
    remotes = remote_members(backends)
    unreachable = run_sync(_unreachable(remotes))
    for backend in remotes:
        found.extend(backend.problems(reachable=backend.endpoint not in unreachable))
    found.extend(unreachable.values())
    report(found)


def report(problems: Sequence[str]) -> None:
    """Raise one CalibrateError naming every problem (one line for one, a line each for several)."""
    found = list(dict.fromkeys(problems))
    if len(found) == 1:
        raise CalibrateError(f"{found[0]}; nothing was judged")
    if found:
        raise CalibrateError(f"{len(found)} problems, nothing was judged:\n  " + "\n  ".join(found))


async def _unreachable(backends: Sequence[RemoteBackend]) -> dict[str, str]:
    """Endpoint -> why it cannot be reached, for each endpoint that cannot."""
    endpoints = list(dict.fromkeys(backend.endpoint for backend in backends))
    names = {endpoint: [b.config.name for b in backends if b.endpoint == endpoint] for endpoint in endpoints}
    reasons = await asyncio.gather(*(_connect(endpoint) for endpoint in endpoints))
    return {endpoint: f"judge{'s' if len(names[endpoint]) > 1 else ''} "
                      f"{', '.join(repr(n) for n in names[endpoint])}: cannot reach {endpoint} ({reason})"
            for endpoint, reason in zip(endpoints, reasons, strict=True) if reason}


async def _connect(endpoint: str) -> str | None:
    """None when a TCP connection to the endpoint (or its proxy) opens, else why not."""
    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    direct = (host, port)
    proxy = env_proxy(endpoint)  # the route the requests take
    if proxy:
        proxy_url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname or host, proxy_url.port or 80
    tls = ssl.create_default_context() if url.scheme == "https" and (host, port) == direct else None
    try:  # with the TLS handshake, when calibrate itself speaks TLS to the endpoint
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=tls), CONNECT_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {CONNECT_TIMEOUT_S:g}s"
    except socket.gaierror as error:
        return f"the host name {host} does not resolve: {error.strerror}"
    except ConnectionRefusedError:
        return f"connection refused at {host}:{port}; is the server running?"
    except ssl.SSLCertVerificationError as error:
        return f"the TLS certificate of {host} is not accepted: {error.verify_message}"
    except ssl.SSLError as error:
        return f"the TLS handshake with {host}:{port} failed: {error.reason or error}"
    except OSError as error:
        return error.strerror or str(error) or type(error).__name__
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None
