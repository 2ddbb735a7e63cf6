"""The service's one settings object: every knob, read from `RSS_*` environment variables or `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Reward-service settings. `.env.example` documents each one; the README lists them."""

    model_config = SettingsConfigDict(env_prefix="RSS_", env_file=".env", extra="ignore")

    # network
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, description="uvicorn worker processes (each runs a scoring worker).")
    log_level: str = "info"
    torch_threads: int = Field(1, ge=1, description="Threads for ground-truth scoring in each process.")

    # redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_connect_retries: int = Field(10, ge=1)
    redis_retry_delay_s: float = Field(0.5, gt=0)
    redis_socket_timeout_s: float = Field(5.0, gt=0)

    # the dataset rewards are computed against and images are served from
    dataset: str = "shapes"
    data_root: Path | None = None
    split: str = "train"
    num_classes: int | None = None
    shapes_size: int = Field(64, ge=16)
    shapes_length: int | None = None
    seed: int = 0

    # auth: tokens are secrets; no defaults
    learner_tokens: list[str] = Field(
        default_factory=list, description="Bearer tokens allowed to register runs and post episodes.")
    rater_tokens: dict[str, str] = Field(default_factory=dict, description="Rater name -> bearer token.")

    # limits
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_samples: int = Field(64, ge=1)
    max_batch: int = Field(256, ge=1, description="Most episodes in one POST /v1/episodes/batch.")
    max_mask_pixels: int = Field(4096 * 4096, ge=64)
    # per-token rate limits (token buckets in Redis, shared by replicas); a rate of 0 turns one off.
    # Episodes: a learner at 16 episodes a step posts ~80/s on 2 CPU cores and ~1300/s at the in-process
    # speed of an H200 (83 steps/s, `rss bench loop --device cuda`); the default leaves room for that.
    rate_limit_episodes_per_s: float = Field(
        2000.0, ge=0, description="Episodes one learner token may post per second.")
    rate_limit_episodes_burst: int = Field(
        4000, ge=1, description="Episodes a learner token may post at once after idling (>= RSS_MAX_BATCH).")
    rate_limit_ratings_per_min: float = Field(
        600.0, ge=0, description="Ratings and skips one rater may send per minute (a person manages far fewer).")
    rate_limit_ratings_burst: int = Field(60, ge=1, description="Ratings a rater may send at once after idling.")

    # the scoring worker
    worker_processes: int = Field(
        1, ge=0, description="Scoring processes `rss serve` starts beside its HTTP processes (`rss worker`).")
    worker: bool = Field(False, description="Also run a scoring worker inside each HTTP process (tests, debugging).")
    worker_batch: int = Field(16, ge=1)
    worker_block_ms: int = Field(1000, ge=10)
    max_attempts: int = Field(3, ge=1, description="Scoring attempts before a job is dead-lettered.")
    retry_idle_s: float = Field(
        45.0, gt=0, description="A job pending this long (failed, or its worker died) is retried.")
    episode_ttl_s: int = Field(86400, ge=1, description="How long a finished episode's status stays readable.")
    results_trim_every_s: float = Field(30.0, gt=0)

    # human rating
    lease_s: float = Field(120.0, gt=0, description="How long a rater holds a task before it returns to the queue.")
    honeypot_fraction: float = Field(
        0.0, ge=0, le=1, description="Chance that a human task gets a honeypot twin whose answer ground truth knows.")
    ui_dir: Path | None = Field(
        None, description="The annotator UI's folder, served at /ui (default: the repository's annotator_ui/).")

    # external (http) scorer
    http_timeout_s: float = Field(10.0, gt=0)
    http_retries: int = Field(2, ge=0, description="Retries of one call, with exponential backoff and jitter.")
    http_backoff_s: float = Field(0.2, ge=0)
    http_max_connections: int = Field(32, ge=1)
    breaker_failures: int = Field(5, ge=1, description="Consecutive failed calls that open the circuit.")
    breaker_reset_s: float = Field(30.0, gt=0, description="How long an open circuit fails calls fast.")
    http_endpoint_allow: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1", "http://localhost", "http://[::1]"],
        description="URL prefixes (scheme, host, optional port and path) a run's http endpoint must match; "
                    "[\"*\"] allows any. The default, loopback only, keeps a learner token from making the "
                    "service call into its network (SSRF).")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.dataset != "shapes" and self.data_root is None:
            raise ValueError(f"RSS_DATA_ROOT is required for dataset {self.dataset!r}")
        for name, token in self.rater_tokens.items():
            if not token:
                raise ValueError(f"RSS_RATER_TOKENS: rater {name!r} has an empty token")
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
            parts = urlsplit(prefix)
            if prefix != "*" and (parts.scheme not in ("http", "https") or not parts.hostname or parts.username
                                  or parts.query or parts.fragment):
                raise ValueError(f"RSS_HTTP_ENDPOINT_ALLOW: {prefix!r} is not an http(s)://host[:port][/path] prefix")
        if any(not t for t in self.learner_tokens):
            raise ValueError("RSS_LEARNER_TOKENS: empty token")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
