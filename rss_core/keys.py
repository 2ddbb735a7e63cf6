"""Every Redis key and stream name the service and the learner use, and the payload schema version.

One module so that a replica, the learner's consumer and an operator's `redis-cli` agree on
names. Keys are prefixed with the schema version: a change to the payloads bumps it, and old
and new deployments never read each other's entries.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
PREFIX = f"rss:v{SCHEMA_VERSION}"

# The scoring work queue: one entry per job ({"kind": "episode" | "finalize", "id": ...}),
# read by every replica's worker through one consumer group.
JOBS = f"{PREFIX}:jobs"
JOBS_GROUP = "scorers"

# Rating tasks for people (and the simulated rater), leased through one consumer group.
TASKS = f"{PREFIX}:tasks"
TASKS_GROUP = "raters"
# The consumer that holds task entries waiting for a rater again (a lease expired, or the rater who read
# the entry may not take it): they keep their place in the stream, and the next rater who asks claims them.
TASKS_RETURNED = ":returned"

# Jobs that ran out of attempts (or cannot succeed), kept for an operator: field `payload`, JSON
# {kind, id, run_id, reason, attempts, at}.
DEAD_LETTER = f"{PREFIX}:deadletter"

# The consumer group the learner reads a run's results with (created when the run registers,
# so results written before the learner connects are kept).
RESULTS_GROUP = "learner"

RUNS = f"{PREFIX}:runs"  # set of run ids

# Sorted set: task id -> when its finalize job is due. A task whose last rating arrived waits RSS_AMEND_S here
# (the answer may still be amended), then the worker's sweep queues its finalize job.
FINALIZE_LATER = f"{PREFIX}:finalize-later"

# Sorted set: scoring worker -> time of its last poll (readiness: is any worker alive?).
WORKERS = f"{PREFIX}:workers"

# Hash: scoring worker -> JSON {"at": time, "circuits": {endpoint: closed | open | half_open}}, its `http`
# scorer's circuit breakers as of its last poll (breakers live in each worker process).
BREAKERS = f"{PREFIX}:breakers"

# What this Redis database serves (dataset, split, root...): replicas must agree, and a service
# configured for other data refuses to start here instead of scoring against the wrong labels.
DEPLOYMENT = f"{PREFIX}:deployment"


def run(run_id: str) -> str:
    """Hash: the run's registered configuration (JSON in field ``config``)."""
    return f"{PREFIX}:run:{run_id}"


def run_endpoint_allow(run_id: str) -> str:
    """Set: endpoint allowlist entries (scheme://host:port[/path]) for this run only, beside
    RSS_HTTP_ENDPOINT_ALLOW; written by the operator's `rss scorer up --run` straight into Redis (no route writes
    it), removed by `rss scorer down`."""
    return f"{PREFIX}:run:{run_id}:endpoint-allow"


def pending_pixels(run_id: str) -> str:
    """Integer: mask pixels of the run's episodes stored and not yet scored or failed (queued, scoring, waiting for
    raters); RSS_MAX_RUN_PENDING_PIXELS bounds it."""
    return f"{PREFIX}:pending-pixels:{run_id}"


def token_pending_pixels(owner: str) -> str:
    """Integer: the same over every run of one learner token (``owner``: the token's id, never the token);
    RSS_MAX_TOKEN_PENDING_PIXELS bounds it."""
    return f"{PREFIX}:token-pending-pixels:{owner}"


def results(run_id: str) -> str:
    """Stream: one entry per scored (or failed) sample of the run's episodes."""
    return f"{PREFIX}:results:{run_id}"


def episode(episode_id: str) -> str:
    """Hash: an episode's metadata, its masks (raw uint8 bytes) and its status."""
    return f"{PREFIX}:episode:{episode_id}"


def task(task_id: str) -> str:
    """Hash: a rating task (which samples of which episode, ratings needed) and its status."""
    return f"{PREFIX}:task:{task_id}"


def task_ratings(task_id: str) -> str:
    """List: the JSON ratings a task has received."""
    return f"{PREFIX}:task:{task_id}:ratings"


def task_raters(task_id: str) -> str:
    """Set: raters who rated or skipped a task (it is not offered to them again)."""
    return f"{PREFIX}:task:{task_id}:raters"


def lease(lease_id: str) -> str:
    """Hash: one rater's lease on one task entry, with its expiry time."""
    return f"{PREFIX}:lease:{lease_id}"


def stats_minute(name: str, minute: int) -> str:
    """Counter of ``name`` events in one wall-clock minute (expires after an hour)."""
    return f"{PREFIX}:stats:{name}:{minute}"


def rater_stats(rater: str) -> str:
    """Hash: a rater's counters (rated, skipped, honeypot agreement)."""
    return f"{PREFIX}:rater:{rater}"


def rate_limit(limit: str, who: str) -> str:
    """Hash: one token bucket (``tokens``, ``at``) of a per-token rate limit; expires once full again."""
    return f"{PREFIX}:ratelimit:{limit}:{who}"


def idempotency(who: str, key: str) -> str:
    """Hash: what one ``Idempotency-Key`` of one learner token was first used for (``digest`` of the batch,
    ``answer`` JSON); expires with the episodes (``RSS_EPISODE_TTL_S``)."""
    return f"{PREFIX}:idempotency:{who}:{key}"


def rater_seconds(scope: str) -> str:
    """List: the latest ``rater_seconds`` of answers (newest first, the last 1000), per ``kind:<task kind>``
    and per ``rater:<name>``; GET /v1/stats shows their medians."""
    return f"{PREFIX}:seconds:{scope}"


def run_metrics(run_id: str) -> str:
    """Sorted set: the run's learning curve, one JSON point per evaluation scored by its step (a step posted again
    replaces its point); the lowest steps go once it holds more than the service's bound (2000)."""
    return f"{PREFIX}:run:{run_id}:metrics"


def run_gallery(run_id: str) -> str:
    """String: JSON of the run's latest gallery (its learner's argmax and a sampled mask on a few images)."""
    return f"{PREFIX}:run:{run_id}:gallery"
