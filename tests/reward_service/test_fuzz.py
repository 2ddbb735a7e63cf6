"""Fuzz the API from its own OpenAPI with schemathesis, over HTTP against a real `rss serve`.

Every operation gets up to ``RSS_FUZZ_EXAMPLES`` generated cases (default 25: about 300 in all, well
under a minute here), valid and invalid, sent with a learner token (a rater token for /v1/tasks).
No answer may be a 5xx, and every answer must be declared: its status, content type, headers and
body schema. The full run adds schemathesis's coverage phase (boundary values, missing and
mistyped fields) and more cases:
``RSS_FUZZ_EXAMPLES=250 RSS_FUZZ_COVERAGE=1 pytest tests/reward_service/test_fuzz.py``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from reward_service.core.config import Settings
from reward_service.main import create_app
from rss.procs import RedisProcess
from tests.helpers.service import LEARNER_TOKEN, RATERS, service_env, start_service

EXAMPLES = int(os.environ.get("RSS_FUZZ_EXAMPLES", "25"))
COVERAGE = os.environ.get("RSS_FUZZ_COVERAGE", "") == "1"
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_service(redis_server: RedisProcess) -> Iterator[str]:
    """A service of its own (Redis database 6) with the rate limits off, so cases reach the handlers."""
    r = redis.Redis(port=redis_server.port, db=6)
    r.flushdb()
    env = service_env(redis_server, redis_url=redis_server.db_url(6), max_body_bytes=200_000,
                      rate_limit_episodes_per_s=0, rate_limit_ratings_per_min=0, lease_s=30)
    with start_service(env) as proc:
        yield proc.url
    r.flushdb()
    r.close()


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Iterator[Counter]:
    """Cases sent and answers by status class; printed at the end (the README quotes the full run's)."""
    counts: Counter = Counter()
    yield counts
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    line = (f"fuzz: {counts['cases']} cases over {counts['operations']} operations, "
            + ", ".join(f"{k}: {counts[k]}" for k in ("2xx", "4xx", "5xx")))
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + line)


def openapi() -> dict:
    """The OpenAPI the service publishes, built from the same app at collection time (schemathesis's lazy
    `from_fixture` loader fails on pytest 9); the first test checks the served one is identical."""
    settings_ = Settings(_env_file=None, learner_tokens=[LEARNER_TOKEN], rater_tokens=RATERS)
    return create_app(settings_).openapi()


OPENAPI = openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)
# the coverage phase adds ~65 deterministic cases per operation (boundaries, missing and mistyped fields)
schema.config.phases.update(phases=["examples", "fuzzing", *(["coverage"] if COVERAGE else [])])


def test_the_fuzzed_schema_is_the_served_one(fuzz_service: str) -> None:
    served = httpx.get(f"{fuzz_service}/openapi.json", timeout=60)
    assert served.status_code == 200 and served.json() == json.loads(json.dumps(OPENAPI))


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_answers_every_generated_case_as_declared(case, fuzz_service: str, tally: Counter) -> None:
    token = RATERS["alice"] if case.path.startswith("/v1/tasks") else LEARNER_TOKEN
    if not tally[case.operation.label]:
        tally["operations"] += 1
    tally[case.operation.label] += 1
    if case.query and isinstance(case.query.get("wait_s"), int | float) and 0.5 < case.query["wait_s"] <= 30:
        case.query["wait_s"] = 0.5  # a valid long wait on an empty queue only costs wall time (tested elsewhere)
    response = case.call(base_url=fuzz_service, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    tally["cases"] += 1
    tally[f"{response.status_code // 100}xx"] += 1
    case.validate_response(response, checks=CHECKS)
