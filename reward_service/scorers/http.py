"""The `http` scorer's client: one episode POSTed to an external endpoint, with retries and a circuit breaker.

The contract is `ExternalScoreRequest` in, `ExternalScoreResponse` out (examples/external_scorer
implements it). Transport errors, timeouts, 5xx and 429 are retried with exponential backoff and
equal jitter; other 4xx are the request's fault and are not (`Rejected`). A breaker per endpoint
opens after `breaker_failures` consecutive failed calls, so a dead endpoint is failed fast
(`CircuitOpen`) instead of holding the worker, and lets one trial call through every
`breaker_reset_s`. Breakers live in the process: each worker process keeps its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import random
import socket
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

import httpx
import numpy as np
from pydantic import ValidationError

from reward_service.core.config import Settings
from rss_core.codec import decode_array
from rss_core.schemas import ExternalScoreRequest, ExternalScoreResponse

log = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]
MAX_BACKOFF_S = 30.0
OFFLOAD_BYTES = 1 << 20  # answers larger than this are parsed in a thread, off the event loop
REFUSAL_TTL_S = 60.0  # how long the worker trusts an endpoint's check (names resolve to other addresses)
REFUSALS_KEPT = 4096  # endpoint checks cached per worker process
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


DEFAULT_PORTS = {"http": 80, "https": 443}
BODY_LOG_CHARS = 500  # of an endpoint's refusal or bad answer, in the worker's log (never in a result)


def _origin(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) of an http(s) URL, the port defaulted by the scheme; None if it has none, a
    user part, or parses differently in httpx (parser differentials are how SSRF filters fail)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None \
            or parts.password is not None:
        return None
    try:  # the client that makes the call must read the same host and port
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    port = DEFAULT_PORTS[parts.scheme] if port is None else port
    if parsed.host != parts.hostname.strip("[]") or (parsed.port or DEFAULT_PORTS[parts.scheme]) != port:
        return None
    return parts.scheme, parts.hostname, port, parts.path


def endpoint_allowed(endpoint: str, allow: list[str]) -> bool:
    """Whether ``endpoint`` matches one entry of ``allow`` (RSS_HTTP_ENDPOINT_ALLOW), compared parsed, not as
    text: `http://127.0.0.1:9000` must not admit `http://127.0.0.1.evil.example:9000/` or
    `http://127.0.0.1:9000@evil.example/`. An entry matches the same scheme, host and port exactly (a URL
    without a port has its scheme's) and its path and anything below it."""
    url = _origin(endpoint)
    if url is None:
        return False
    for entry in allow:
        p = _origin(entry)
        if p is None:
            continue
        path = p[3].rstrip("/")
        if url[:3] == p[:3] and (not path or url[3] == path or url[3].startswith(path + "/")):
            return True
    return False


@lru_cache(maxsize=1)
def _own_addresses() -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """This machine's addresses as its name resolves (a container's own address, say)."""
    return frozenset(_resolve(socket.gethostname()))


def _resolve(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    host = host.strip("[]")
    try:
        return {ipaddress.ip_address(host)}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return set()
    return {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}


def _local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_loopback or ip.is_unspecified or ip in _own_addresses()


def same_host(a: str, b: str) -> bool:
    """Whether hosts ``a`` and ``b`` may be the same machine: the same name, an address in common, or both
    this machine (loopback, the wildcard a server binds, this machine's own addresses). Resolves names: call it
    off the event loop."""
    if a.strip("[]").lower() == b.strip("[]").lower():
        return True
    ours, theirs = _resolve(a), _resolve(b)
    return bool(ours & theirs) or (any(map(_local, ours)) and any(map(_local, theirs)))


def forbidden_targets(settings: Settings) -> list[tuple[str, int, str]]:
    """(host, port, what) of the addresses no endpoint may name: the service's own and Redis's."""
    targets = [(settings.host, settings.port, "the reward service's own address")]
    redis = urlsplit(settings.redis_url)
    if redis.scheme in ("redis", "rediss") and redis.hostname:
        targets.append((redis.hostname, redis.port or 6379, "Redis's address"))
    return targets


def endpoint_refusal(endpoint: str, settings: Settings, run_allow: Sequence[str] = ()) -> str | None:
    """Why a run may not name ``endpoint`` (None: it may): in neither RSS_HTTP_ENDPOINT_ALLOW nor ``run_allow``
    (the run's own entries, which only the operator writes: `rss scorer up --run`), or the service's own or
    Redis's address, listed or not. Resolves names: call it off the event loop."""
    if not endpoint_allowed(endpoint, [*settings.http_endpoint_allow, *run_allow]):
        return "is not allowed by RSS_HTTP_ENDPOINT_ALLOW nor by the run's own allowlist (rss scorer up --run)"
    _, host, port, _ = _origin(endpoint)
    for target_host, target_port, what in forbidden_targets(settings):
        if port == target_port and same_host(host, target_host):
            return f"is {what} (RSS_PORT / RSS_REDIS_URL), which no endpoint may name, even one listed"
    return None


class ScorerError(RuntimeError):
    """An episode the endpoint did not score; the message is the short reason recorded with it."""


class Rejected(ScorerError):
    """The endpoint refused the request (a 4xx other than 429): sending it again will not help."""


class CircuitOpen(ScorerError):
    """The endpoint's circuit is open: the call failed fast, without touching the network."""


def backoff_delay(retry: int, backoff: float, rng: random.Random | None = None, cap: float = MAX_BACKOFF_S) -> float:
    """Seconds before retry ``retry`` (0-based): ``d = min(cap, backoff * 2**retry)``, equal jitter in [d/2, d]."""
    d = min(cap, backoff * 2.0 ** min(retry, 64))
    return d / 2 + (rng or random).uniform(0.0, d / 2)


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failed calls -> half-open after ``reset_s``: one trial call.

    Pure logic with an injectable clock. The caller asks `allow()` before a call and reports
    `success()`, `failure()` or, for a call that ended without a verdict (cancelled), `release()`.
    """

    def __init__(
        self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic, name: str = ""
    ) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError("a breaker needs failures >= 1 and reset_s > 0")
        self.failures, self.reset_s, self.clock, self.name = failures, reset_s, clock, name
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial = False  # a half-open trial call is in flight

    @property
    def state(self) -> BreakerState:
        """``open`` turns ``half_open`` once ``reset_s`` has passed, before the trial call goes out."""
        if self._state == "open" and self.clock() - self._opened_at >= self.reset_s:
            return "half_open"
        return self._state

    def allow(self) -> bool:
        """Whether a call may go out now; while half-open, only the one trial call may."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._trial:
            return False
        self._move("half_open")
        self._trial = True
        return True

    def success(self) -> None:
        self._trial, self._consecutive = False, 0
        if self._state == "half_open":
            self._move("closed")

    def failure(self) -> None:
        self._trial = False
        self._consecutive += 1
        if self._state == "half_open" or (self._state == "closed" and self._consecutive >= self.failures):
            self._opened_at = self.clock()
            self._move("open")

    def release(self) -> None:
        self._trial = False

    def _move(self, state: BreakerState) -> None:
        if state != self._state:
            level = logging.WARNING if state == "open" else logging.INFO
            log.log(level, "circuit %s: %s -> %s (%d consecutive failed calls)",
                    self.name, self._state, state, self._consecutive)
            self._state = state


class HttpScorer:
    """Forwards episodes to external endpoints over one pooled `httpx.AsyncClient`; close with `aclose()`.

    Settings come from ``settings`` (the service's `http_*` and `breaker_*` fields, else their
    defaults); explicit keyword arguments override them. An injected ``client`` is not closed by
    `aclose()`; the timeout still applies to each request, the connection limit does not.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        max_connections: int | None = None,
        breaker_failures: int | None = None,
        breaker_reset_s: float | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        def pick(value, field: str):
            if value is not None:
                return value
            return getattr(settings, field) if settings is not None else Settings.model_fields[field].default

        self.timeout = float(pick(timeout, "http_timeout_s"))
        self.retries = int(pick(retries, "http_retries"))
        self.backoff = float(pick(backoff, "http_backoff_s"))
        self.breaker_failures = int(pick(breaker_failures, "breaker_failures"))
        self.breaker_reset_s = float(pick(breaker_reset_s, "breaker_reset_s"))
        connections = int(pick(max_connections, "http_max_connections"))
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0 or connections < 1:
            raise ValueError("HttpScorer needs timeout > 0, retries >= 0, backoff >= 0, max_connections >= 1")
        self.clock, self.rng = clock, rng or random.Random()
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(
            timeout=self.timeout,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self._breakers: dict[str, CircuitBreaker] = {}
        self.settings = settings  # None: no allowlist (a library caller that picks its own endpoints)
        # (endpoint, the run's own entries) -> (why refused, when checked)
        self._refusals: dict[tuple[str, tuple[str, ...]], tuple[str | None, float]] = {}

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> HttpScorer:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def breaker(self, endpoint: str) -> CircuitBreaker:
        if endpoint not in self._breakers:
            self._breakers[endpoint] = CircuitBreaker(self.breaker_failures, self.breaker_reset_s, self.clock, endpoint)
        return self._breakers[endpoint]

    def breaker_states(self) -> dict[str, str]:
        """Endpoint URL -> ``closed`` / ``open`` / ``half_open``, for readiness and stats."""
        return {endpoint: b.state for endpoint, b in self._breakers.items()}

    async def score(self, endpoint: str, request: ExternalScoreRequest,
                    run_allow: Sequence[str] = ()) -> ExternalScoreResponse:
        """The endpoint's checked answer for one episode; raises `ScorerError` (or a subclass) with the reason.
        ``run_allow``: the run's own allowlist entries, beside the settings' (`Store.run_endpoint_allow`)."""
        # a run registered before the allowlist was narrowed, or its scorer container taken down, say
        refusal = await self.refusal(endpoint, run_allow)
        if refusal is not None:
            raise Rejected(f"endpoint {refusal}; not called")
        breaker = self.breaker(endpoint)
        if not breaker.allow():
            raise CircuitOpen(f"endpoint circuit is open after {breaker.failures} failed calls; not called")
        verdict = None
        try:
            answer = await self._call(endpoint, request)
            verdict = breaker.success
            return answer
        except Rejected:
            verdict = breaker.success  # the endpoint is up and answering; the request was the problem
            raise
        except ScorerError:
            verdict = breaker.failure
            raise
        finally:
            (verdict or breaker.release)()

    async def refusal(self, endpoint: str, run_allow: Sequence[str] = ()) -> str | None:
        """`endpoint_refusal` under this scorer's settings and ``run_allow``, checked again after REFUSAL_TTL_S
        (names resolve) and whenever ``run_allow`` differs (an entry removed is refused at once)."""
        if self.settings is None:
            return None
        key = (endpoint, tuple(sorted(run_allow)))
        cached = self._refusals.get(key)
        if cached is None or self.clock() - cached[1] > REFUSAL_TTL_S:
            cached = (await asyncio.to_thread(endpoint_refusal, endpoint, self.settings, key[1]), self.clock())
            if len(self._refusals) >= REFUSALS_KEPT:  # one key per endpoint and run entries: bounded
                self._refusals.clear()
            self._refusals[key] = cached
        return cached[0]

    async def _call(self, endpoint: str, request: ExternalScoreRequest) -> ExternalScoreResponse:
        body = request.model_dump_json().encode()
        tries = self.retries + 1
        for attempt in range(tries):
            try:
                # httpx's timeout bounds each phase (a read: the gap between bytes); wait_for bounds the whole try
                resp = await asyncio.wait_for(
                    self.client.post(endpoint, content=body, headers=JSON_HEADERS, timeout=self.timeout), self.timeout)
            except (httpx.TimeoutException, asyncio.TimeoutError):
                reason, said = f"endpoint timed out after {self.timeout:g} s", ""
            except httpx.TransportError as exc:
                # the exception's text can quote what the other end sent (h11 quotes a status line that is not
                # HTTP, a Redis error say): the log gets it, the reason a client reads only the exception's type
                reason, said = f"endpoint unreachable ({type(exc).__name__})", repr(str(exc)[:BODY_LOG_CHARS])
            else:
                # an answer's body is the endpoint's, not the client's to read (an internal service's answer would
                # come back through the episode's reason): the reason says the status, the log gets the body, cut
                said = repr(resp.content[:BODY_LOG_CHARS])
                if resp.status_code == 429 or resp.status_code >= 500:
                    reason = f"endpoint returned {resp.status_code}"
                elif resp.status_code >= 300:
                    log.warning("POST %s: %d, not retried; body: %s", endpoint, resp.status_code, said)
                    raise Rejected(f"endpoint returned {resp.status_code}; not retried (its body is in the "
                                   "worker's log)")
                elif len(resp.content) > OFFLOAD_BYTES:
                    return await asyncio.to_thread(check_answer, resp.content, request)
                else:
                    return check_answer(resp.content, request)
            said = f"; it said {said}" if said else ""
            if attempt + 1 < tries:
                delay = backoff_delay(attempt, self.backoff, self.rng)
                log.warning("POST %s: %s; retry %d of %d in %.2f s%s", endpoint, reason, attempt + 1, self.retries,
                            delay, said)
                await asyncio.sleep(delay)
            else:
                log.warning("POST %s: %s; no tries left%s", endpoint, reason, said)
        raise ScorerError(f"{reason} ({tries} {'try' if tries == 1 else 'tries'})")


def check_answer(content: bytes, request: ExternalScoreRequest) -> ExternalScoreResponse:
    """Parse and check an endpoint's answer against the request: one finite reward or one map per sample."""
    try:
        data = json.loads(content)
    except ValueError:
        log.warning("endpoint answered with invalid JSON: %.*r", BODY_LOG_CHARS, content[:BODY_LOG_CHARS])
        raise ScorerError("endpoint answered with invalid JSON") from None
    try:
        answer = ExternalScoreResponse.model_validate(data)
    except ValidationError as exc:
        log.warning("endpoint answer does not fit the contract: %.*r", BODY_LOG_CHARS, content[:BODY_LOG_CHARS])
        error = exc.errors(include_url=False, include_input=False)[0]  # where and what, from the schema
        where = ".".join(str(p) for p in error["loc"]) or "body"
        raise ScorerError(f"endpoint answer does not fit the contract: {where}: {error['msg']}") from None
    n = len(request.samples)
    if request.level == "image":
        if answer.rewards is None:
            raise ScorerError("endpoint returned no rewards for an image-level episode")
        if len(answer.rewards) != n:
            raise ScorerError(f"endpoint returned {len(answer.rewards)} rewards for {n} samples")
        bad = [i for i, r in enumerate(answer.rewards) if not math.isfinite(r)]
        if bad:
            raise ScorerError(f"endpoint returned a non-finite reward for sample {bad[0]}")
        return answer
    if answer.reward_maps is None:
        raise ScorerError("endpoint returned no reward_maps for a pixel-level episode")
    if len(answer.reward_maps) != n:
        raise ScorerError(f"endpoint returned {len(answer.reward_maps)} reward maps for {n} samples")
    for i, (reward_map, sample) in enumerate(zip(answer.reward_maps, request.samples, strict=True)):
        if reward_map.dtype != "float32":
            raise ScorerError(f"endpoint returned a {reward_map.dtype} reward map for sample {i}, not float32")
        try:
            array = decode_array(reward_map, f"reward map {i}")
        except ValueError as exc:  # MaskError, or numpy's own for a shape whose size overflows
            log.warning("endpoint answer: reward map %d: %.*s", i, BODY_LOG_CHARS, exc)
            raise ScorerError(f"endpoint returned a reward map for sample {i} that is not a float32 array "
                              "(the worker's log says why)") from None
        if array.shape != tuple(sample.shape):
            log.warning("endpoint answer: reward map %d has shape %.*s", i, BODY_LOG_CHARS, array.shape)
            raise ScorerError(
                f"endpoint returned a reward map for sample {i} that is not of the sample's shape "
                f"{tuple(sample.shape)}")
        if np.isinf(array).any():
            raise ScorerError(f"endpoint returned an infinite reward in the map of sample {i}")
    return answer
