"""The service's one settings object: every knob, read from `RSS_*` environment variables or `.env`."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rss_core.schemas import PROCEDURAL

_HOST = re.compile(r"[A-Za-z0-9.-]+|[0-9A-Fa-f:.]+")  # a name or an address, no wildcard


class Settings(BaseSettings):
    """Reward-service settings. Each field's `description` is its documentation: `docs/settings.md` and
    `.env.example` are generated from these fields (`python -m reward_service.core.settings_doc`)."""

    model_config = SettingsConfigDict(env_prefix="RSS_", env_file=".env", extra="ignore")

    # network
    host: str = Field("127.0.0.1", description="Bind address of the HTTP API (`rss serve --host` overrides it).")
    port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP API (`rss serve --port` overrides it).")
    workers: int = Field(
        1, ge=1, description="uvicorn HTTP processes (scoring runs in RSS_WORKER_PROCESSES processes of its own).")
    log_level: str = Field("info", description="Python log level: debug, info, warning, error.")
    torch_threads: int = Field(
        1, ge=1, description="Threads for ground-truth scoring in each process (keep 1 when the learner shares "
                             "the machine).")

    # redis
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Where episodes, tasks and results live: one Redis database per dataset. Use rediss:// and a "
                    "password for a managed Redis.")
    redis_connect_retries: int = Field(
        10, ge=1, description="Connection attempts at start-up (one log line each).")
    redis_retry_delay_s: float = Field(0.5, gt=0, description="Pause between connection attempts at start-up, in s.")
    redis_socket_timeout_s: float = Field(
        5.0, gt=0, description="Socket timeout of ordinary commands, in s (blocking reads get their own, longer one).")

    # the dataset rewards are computed against and images are served from
    dataset: str = Field("shapes", description="shapes or scenes (built in, no files), voc, cityscapes or context.")
    data_root: Path | None = Field(
        None, description="Folder of a voc/cityscapes/context dataset (required for those; image ids never leave "
                          "it). Under docker compose it is always /data, where DATA_DIR is mounted read-only.")
    split: str = Field("train", description="Split whose images are scored and served.")
    num_classes: int | None = Field(None, description="Override the dataset's number of classes.")
    shapes_size: int = Field(64, ge=16, description="shapes only: image size (must match the learner's).")
    scenes_size: int = Field(128, ge=32, description="scenes only: image size (must match the learner's).")
    shapes_length: int | None = Field(
        None, description="shapes and scenes: number of images in the split (unset: the split's; must match "
                          "the learner's --train-size).")
    seed: int = Field(0, description="shapes and scenes: generator seed (must match the learner's).")
    label_cache_mb: float = Field(
        256.0, ge=0, description="Labels kept in memory per process (each HTTP and worker process), in MiB, least "
                                 "recently used out first (2000 shapes labels of 64 px: 8 MiB; 2000 scenes labels of "
                                 "128 px: 32 MiB).")
    warm_labels: bool = Field(
        True, description="Workers make a `shapes` or `scenes` split's labels ahead at start, in the background, "
                          "when they all fit the cache (as the learner builds its split before training).")

    # auth: tokens are secrets; no defaults
    learner_tokens: list[str] = Field(
        default_factory=list, description="REQUIRED: JSON list of bearer tokens allowed to register runs and post "
                                          "episodes (`rss serve` refuses to start without one).")
    rater_tokens: dict[str, str] = Field(
        default_factory=dict, description="JSON object: rater name -> bearer token, for the rating endpoints and "
                                          "the UI.")

    # limits
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body in bytes (413 above it).")
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="Largest request head (request line and headers) in bytes; 431 above it, "
                                        "counted while it arrives, before the app sees the request (uvicorn's "
                                        "protocol, reward_service.http_limits).")
    max_url_bytes: int = Field(
        8 * 1024, ge=256, description="Longest request URL (path and query) in bytes; 414 above it, as the head "
                                      "arrives.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a request's head (request line and headers) may take to arrive, from "
                                "the connection's opening or the request's first byte; then 408 and the "
                                "connection is closed (a connection that sent nothing is closed).")
    max_samples: int = Field(64, ge=1, description="Most samples (masks) per episode.")
    max_batch: int = Field(256, ge=1, description="Most episodes in one POST /v1/episodes/batch.")
    max_mask_pixels: int = Field(
        4096 * 4096, ge=64, description="Most mask pixels per episode (samples x height x width).")
    max_request_pixels: int = Field(
        64 * 2**20, ge=64, description="Most mask pixels one request may make the service decode and hold, over all "
                                       "its episodes (a batch of 16 episodes of 32 full 512x512 masks is 128 Mi: "
                                       "split it); 413 above it, before anything is decoded.")
    max_run_pending_pixels: int = Field(
        512 * 2**20, ge=0, description="Most mask pixels one run may have stored and not yet scored (queued, "
                                       "scoring, or waiting for raters; a pixel is a byte in Redis): a request "
                                       "that would pass it gets 429 with Retry-After, and nothing is stored. A "
                                       "learner at 512x512, K = 32, 16 episodes a step and 2 steps in flight "
                                       "holds 256 Mi. Requests checked at the same moment may each pass it "
                                       "once. 0 turns it off.")
    max_token_pending_pixels: int = Field(
        2 * 2**30, ge=0, description="The same bound over all the runs of one learner token (a token may register "
                                     "any number of runs): 2 Gi, four runs at RSS_MAX_RUN_PENDING_PIXELS. 0 turns "
                                     "it off.")
    # per-token rate limits (token buckets in Redis, shared by replicas); a rate of 0 turns one off.
    # Episodes: a learner at 16 episodes a step posts ~80/s on 2 CPU cores and ~1300/s at the in-process
    # speed of an H200 (83 steps/s, `rss bench loop --device cuda`); the default leaves room for that.
    rate_limit_episodes_per_s: float = Field(
        2000.0, ge=0, description="Episodes one learner token may post per second (a batch counts each of its "
                                  "episodes); 429 with Retry-After beyond it; 0 turns the limit off.")
    rate_limit_episodes_burst: int = Field(
        4000, ge=1, description="Episodes a learner token may post at once after idling (>= RSS_MAX_BATCH).")
    rate_limit_ratings_per_min: float = Field(
        600.0, ge=0, description="Ratings and skips one rater may send per minute (a person manages far fewer); "
                                 "429 with Retry-After beyond it; 0 turns the limit off.")
    rate_limit_ratings_burst: int = Field(60, ge=1, description="Ratings a rater may send at once after idling.")
    rate_limit_polls_per_min: float = Field(
        600.0, ge=0, description="Polls of GET /v1/tasks/next one rater may send per minute (the UI waits with "
                                 "wait_s, a few a minute); 429 with Retry-After beyond it; 0 turns the limit off.")
    rate_limit_polls_burst: int = Field(60, ge=1, description="Polls a rater may send at once after idling.")
    rate_limit_address_per_s: float = Field(
        200.0, ge=0, description="Requests one client address may send per second, whatever its tokens (or none: "
                                 "guessing tokens costs from the same bucket), on every /v1 route but health and "
                                 "readiness; 429 with Retry-After beyond it; 0 turns the limit off. Behind a proxy "
                                 "every client has the proxy's address unless RSS_TRUSTED_PROXIES lists it.")
    rate_limit_address_burst: int = Field(400, ge=1, description="Requests one address may send at once after idling.")
    trusted_proxies: list[str] = Field(
        default_factory=list, description="JSON list of proxy addresses or networks (\"10.0.0.0/8\") whose "
                                          "X-Forwarded-For is believed: the client address is then the last one "
                                          "in it that is not a trusted proxy. Empty (the default): the header is "
                                          "ignored, since any client can send it.")

    # the scoring worker
    worker_processes: int = Field(
        1, ge=0, description="Scoring processes `rss serve` starts beside its HTTP processes (each an `rss worker`; "
                             "0 when the workers run elsewhere, e.g. their own containers).")
    worker: bool = Field(False, description="Also run a scoring worker inside each HTTP process (tests, debugging).")
    worker_batch: int = Field(16, ge=1, description="Scoring jobs a worker reads per batch.")
    worker_block_ms: int = Field(1000, ge=10, description="How long a worker's blocking read for jobs waits, in ms.")
    max_attempts: int = Field(
        3, ge=1, description="Scoring attempts before an episode becomes error results plus a dead-letter entry.")
    retry_idle_s: float = Field(
        45.0, gt=0, description="A job pending this long (failed, or its worker died) is retried by any worker. Must "
                                "exceed the longest external call: RSS_HTTP_TIMEOUT_S x (RSS_HTTP_RETRIES + 1) "
                                "plus backoff.")
    episode_ttl_s: int = Field(
        86400, ge=1, description="Seconds a finished episode's status (and a task's ratings) stay readable.")
    results_trim_every_s: float = Field(
        30.0, gt=0, description="How often acknowledged entries are trimmed from the streams, in s.")

    # human rating
    lease_s: float = Field(
        120.0, gt=0, description="Seconds a rater holds a leased task; unanswered, it returns to the queue and a late "
                                 "answer gets 410.")
    max_skips: int = Field(
        3, ge=1, description="Skips after which a rating task is given up: its samples get error results (the "
                             "learner counts them failed) and a dead-letter entry. A task every rater has rated "
                             "or skipped is given up as well.")
    skip_retry_s: float = Field(
        30.0, gt=0, description="Seconds after a rater skipped a task before it is offered to that rater again, "
                                "when no other rater has taken it meanwhile: one rater alone can finish a queue "
                                "(each skip counts toward RSS_MAX_SKIPS).")
    amend_s: float = Field(
        5.0, ge=0, description="Seconds a rater may replace an answer (once: the UI's Undo; PUT "
                               "/v1/tasks/{id}/rating with the same lease). A task's last rating waits this long "
                               "before it is finalized into results, so the window is real; 0 turns amending off "
                               "and finalizes at once.")
    honeypot_fraction: float = Field(
        0.0, ge=0, le=1, description="Chance that a human task gets a honeypot twin whose answer ground truth knows. "
                                     "Answers to twins update the rater's agreement (GET /v1/stats) and never reach "
                                     "a results stream.")
    ui_dir: Path | None = Field(
        None, description="The annotator UI's folder, served at /ui (unset: the repository's annotator_ui/; not "
                          "served, with a warning, when missing).")

    # external (http) scorer
    http_timeout_s: float = Field(10.0, gt=0, description="Timeout of one try of an external call, in s.")
    http_retries: int = Field(2, ge=0, description="Retries of one call, with exponential backoff and jitter.")
    http_backoff_s: float = Field(0.2, ge=0, description="Base of the exponential backoff between retries, in s.")
    http_max_connections: int = Field(32, ge=1, description="Connection pool size to external endpoints.")
    breaker_failures: int = Field(
        5, ge=1, description="Consecutive failed calls that open an endpoint's circuit.")
    breaker_reset_s: float = Field(30.0, gt=0, description="How long an open circuit fails calls fast.")
    http_endpoint_allow: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:9000", "http://localhost:9000"],
        description="JSON list of the external endpoints a run's http endpoint may name, each "
                    "scheme://host:port[/path]: scheme, host and port must match exactly (no port: the scheme's, "
                    "80 or 443), the path is a prefix (that path and below); others are refused at registration "
                    "(422) and by the worker. The service's own address and Redis's are refused even when listed. "
                    "The default is examples/external_scorer's address; list your scorer's, e.g. "
                    "[\"http://scorer:9000/score\"], so a learner token cannot make the service call into its "
                    "network (SSRF). A run may also name an endpoint of its own allowlist in Redis, which only the "
                    "operator writes (`rss scorer up --run`).")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.dataset not in PROCEDURAL and self.data_root is None:
            raise ValueError(f"RSS_DATA_ROOT is required for dataset {self.dataset!r}")
        for name, token in self.rater_tokens.items():
            if not token:
                raise ValueError(f"RSS_RATER_TOKENS: rater {name!r} has an empty token")
            if not name or name.startswith(":"):
                raise ValueError(f"RSS_RATER_TOKENS: rater name {name!r} is empty or starts with ':' (reserved)")
        longest_call = self.http_timeout_s * (self.http_retries + 1) + self.http_backoff_s * 2**self.http_retries
        if self.retry_idle_s <= longest_call:
            raise ValueError(
                f"RSS_RETRY_IDLE_S ({self.retry_idle_s}) must exceed the longest external call "
                f"(timeout x (retries + 1) + backoff = {longest_call:g} s), or a job still being scored is retried")
        if self.rate_limit_episodes_per_s and self.rate_limit_episodes_burst < self.max_batch:
            raise ValueError(
                f"RSS_RATE_LIMIT_EPISODES_BURST ({self.rate_limit_episodes_burst}) must be at least RSS_MAX_BATCH "
                f"({self.max_batch}), or a full batch could never be accepted")
        for prefix in self.http_endpoint_allow:
            try:
                parts = urlsplit(prefix)
                parts.port  # noqa: B018 (a port that is not a number raises)
            except ValueError as exc:
                raise ValueError(f"RSS_HTTP_ENDPOINT_ALLOW: {prefix!r} is not a URL ({exc})") from exc
            if (parts.scheme not in ("http", "https") or not _HOST.fullmatch(parts.hostname or "")
                    or parts.username is not None
                    or parts.password is not None or parts.query or parts.fragment):
                raise ValueError(f"RSS_HTTP_ENDPOINT_ALLOW: {prefix!r} is not an http(s)://host[:port][/path] entry "
                                 "(list each endpoint's scheme, host and port; there is no wildcard)")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as exc:
                raise ValueError(f"RSS_TRUSTED_PROXIES: {proxy!r} is not an IP address or network") from exc
        if any(not t for t in self.learner_tokens):
            raise ValueError("RSS_LEARNER_TOKENS: empty token")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
