"""Fuzz the API from its own OpenAPI with schemathesis, over HTTP against a real `rss serve`.

Every operation gets up to ``RSS_FUZZ_EXAMPLES`` generated cases (default 25: about 300 in all, well
under a minute here), valid and invalid, sent with a learner token (a rater token for /v1/tasks).
No answer may be a 5xx, and every answer must be declared: its status, content type, headers and
body schema. The full run adds schemathesis's coverage phase (boundary values, missing and
mistyped fields) and more cases:
``RSS_FUZZ_EXAMPLES=350 RSS_FUZZ_COVERAGE=1 pytest -s tests/reward_service/test_fuzz.py`` (over 5,000 cases).

schemathesis only generates JSON a strict parser takes, so a second test poisons every operation with
what Python's parser takes besides, or what no int64 or double holds: NaN, Infinity, 1e999, 10**400,
lone surrogates, deep nesting, in any body field (a known one, an unknown one, the whole body), path
parameter, query parameter or header. ``3 x RSS_FUZZ_EXAMPLES`` cases per operation with a body,
``RSS_FUZZ_EXAMPLES`` per other operation (about 600 by default, 6,000 in the full run); every answer
must be below 500, strict JSON, leave the keep-alive connection usable and, when refused, Redis as it was.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_core import from_json
from schemathesis import checks

from reward_service.core.config import Settings
from reward_service.main import create_app
from rss.procs import RedisProcess
from rss_core import codec
from tests.helpers.client import client
from tests.helpers.factories import episode, label_of
from tests.helpers.service import DATABASES, LEARNER_TOKEN, RATERS, service_env, start_service

EXAMPLES = int(os.environ.get("RSS_FUZZ_EXAMPLES", "25"))
COVERAGE = os.environ.get("RSS_FUZZ_COVERAGE", "") == "1"
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance]


FUZZ_DB = DATABASES["fuzz"]


@pytest.fixture(scope="module")
def fuzz_service(redis_server: RedisProcess) -> Iterator[str]:
    """A service of its own (its own Redis database) with the rate limits off, so cases reach the handlers."""
    r = redis.Redis(port=redis_server.port, db=FUZZ_DB)
    r.flushdb()
    env = service_env(redis_server, redis_url=redis_server.db_url(FUZZ_DB), max_body_bytes=200_000,
                      rate_limit_episodes_per_s=0, rate_limit_ratings_per_min=0, lease_s=30,
                      rate_limit_polls_per_min=0, rate_limit_address_per_s=0)
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
            + ", ".join(f"{k}: {counts[k]}" for k in ("2xx", "4xx", "5xx"))
            + f"; poisoned: {counts['poison cases']} cases over {counts['poison operations']} operations, "
            + ", ".join(f"{k}: {counts['poison ' + k]}" for k in ("2xx", "4xx", "5xx")))
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


# --- poison: what Python's json takes and the contract does not ------------------------------------------

POISON_RUN = "fuzz-poison"
LEASE = "0" * 32
NUMBERS = st.one_of(
    st.sampled_from(["NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400", "2e308", "-0.5e99999",
                     "1" + "0" * 400 + ".5", str(2**63), str(-(2**63) - 1), "1" + "0" * 5000]),
    st.integers(309, 10**6).map(lambda e: f"{e % 9 + 1}e{e}"),
    st.integers(2**63, 10**400).map(str),
    st.integers(-(10**400), -(2**63) - 1).map(str),
)
SURROGATES = st.builds(lambda a, s, b: json.dumps(a + s + b), st.text(max_size=4), st.characters(categories=["Cs"]),
                       st.text(max_size=4))  # json.dumps writes the surrogate as its \uXXXX escape
DEEP = st.builds(lambda n, obj: '{"a":' * n + "0" + "}" * n if obj else "[" * n + "]" * n,
                 st.integers(150, 10_000), st.booleans())
POISON = st.recursive(st.one_of(NUMBERS, SURROGATES, DEEP), lambda inner: st.one_of(
    st.builds(lambda x: f"[1, {x}]", inner),
    st.builds(lambda k, x: f"{{{json.dumps(k)}: {x}}}", st.text(max_size=3), inner)), max_leaves=3)
# path and query parameters and headers are text: poison them with the same words, percent-escaped (a
# surrogate as its UTF-8 bytes, which are not UTF-8), and with bytes that are not UTF-8 at all
PARAM = st.one_of(NUMBERS.map(lambda t: quote(t, safe="")), st.sampled_from(
    ["%ed%bf%bf", "%ed%a0%80%ed%b0%80", "%ff%fe", "%c0%af", "%00", "%0a", "x%0a", "NaN%0a", "%f0%9f%98"]))
HEADER = st.one_of(st.sampled_from([b"\xed\xbf\xbf", b"\xff\xfe", b"NaN", b"1e999", b"\x80" * 3, b"\xc0\xaf"]),
                   st.lists(st.integers(0x21, 0x7E) | st.integers(0x80, 0xFF), min_size=1, max_size=12).map(bytes))
# (what HTTP lets a header value hold: visible ASCII and any byte above 0x7f; httpx refuses the rest)


def poison_bodies() -> dict[str, list[dict]]:
    """A valid body per operation that can be answered without writing (the run is registered with exactly
    this configuration; the image, task and lease are unknown): whatever a poison leaves alone, nothing
    is written, so any change in Redis is a poison that got through."""
    one = episode(POISON_RUN, [codec.raw_mask(label_of()), codec.RleMask(shape=(64, 64), values=[0], counts=[4096]),
                               codec.png_mask(np.zeros((4, 4), np.uint8))], image_id="train/999999",
                  scale=0, grid_mode="grid", offset=[0, 0])
    return {
        "/v1/runs": [{"run_id": POISON_RUN, "dataset": "shapes", "level": "image", "scorer": "gt", "metric": "miou",
                      "ratings_per_task": 2, "task_kind": "score", "image_size": 64, "min_rater_agreement": 0.5,
                      "endpoint": "http://127.0.0.1:9000/score"}],
        "/v1/episodes": [one],
        "/v1/episodes/batch": [{"episodes": [one, one]}],
        "/v1/tasks/{task_id}/rating": [{"lease_id": LEASE, "score": 0.5}, {"lease_id": LEASE, "preference": "tie"},
                                       {"lease_id": LEASE, "pixels": codec.png_mask(np.ones((4, 4), np.uint8))
                                        .model_dump()}],
        "/v1/tasks/{task_id}/skip": [{"lease_id": LEASE}],
    }


def places(value: object, path: tuple = ()) -> Iterator[tuple]:
    """Every value's path, and a new (unknown) key in every object."""
    yield path
    if isinstance(value, dict):
        yield (*path, "unknown_field")
        for key, item in value.items():
            yield from places(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from places(item, (*path, i))


def splice(body: object, path: tuple, raw: str) -> bytes:
    """``body`` as JSON with the raw JSON text ``raw`` where ``path`` points."""
    if not path:
        return raw.encode()
    body, marker = json.loads(json.dumps(body)), "\x00poison\x00"
    holder = body
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = marker
    return json.dumps(body).replace(json.dumps(marker), raw).encode()


def written(r: redis.Redis) -> set[bytes]:
    """The keys a request could write (less heartbeats, work queues, rate limits and minute counters, which
    change on their own clock)."""
    own = (b"rss:v1:workers", b"rss:v1:jobs", b"rss:v1:tasks", b"rss:v1:ratelimit:", b"rss:v1:stats:")
    return {k for k in r.keys("*") if not k.startswith(own)}


POISON_OPERATIONS = sorted((method.upper(), path) for path, ops in OPENAPI["paths"].items() for method in ops)
PARAMS = {"run_id": POISON_RUN, "episode_id": "0" * 32, "task_id": "0" * 32 + "-0", "image_id": "train/000003"}


@pytest.fixture(scope="module")
def poison_clients(fuzz_service: str, redis_server: RedisProcess) -> Iterator[dict]:
    """One keep-alive client per role, the poison run registered, and the fuzz service's Redis database."""
    r = redis.Redis(port=redis_server.port, db=FUZZ_DB)
    with client(fuzz_service) as learner, client(fuzz_service, RATERS["alice"]) as alice:
        registered = learner.post("/v1/runs", json=poison_bodies()["/v1/runs"][0])
        assert registered.status_code in (200, 201), registered.text
        yield {"learner": learner, "rater": alice, "redis": r}
    r.close()


@pytest.mark.parametrize(("method", "path"), POISON_OPERATIONS, ids=[f"{m} {p}" for m, p in POISON_OPERATIONS])
def test_poisoned_requests_are_refused_never_a_500(method, path, poison_clients, tally: Counter) -> None:
    operation = OPENAPI["paths"][path][method.lower()]
    bodies = poison_bodies().get(path) if "requestBody" in operation else None
    names = {p["name"]: p["in"] for p in operation.get("parameters", [])}
    rater = path.startswith("/v1/tasks") or path == "/v1/me"
    c, r = poison_clients["rater" if rater else "learner"], poison_clients["redis"]
    tally["poison operations"] += 1

    @settings(max_examples=EXAMPLES * (3 if bodies else 1), deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def case(data: st.DataObject) -> None:
        targets = [*(["body"] * 3 if bodies else []), *names, "header"]
        target = data.draw(st.sampled_from(targets), label="target")
        params = {name: quote(str(PARAMS.get(name, "")), safe="/") for name, where in names.items() if where == "path"}
        query, headers, content = {}, {}, None
        if bodies:
            body = data.draw(st.sampled_from(bodies), label="template")
            content = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if target == "body":
            where = data.draw(st.sampled_from(list(places(body))), label="where")
            content = splice(body, where, data.draw(POISON, label="poison"))
        elif target == "header":
            name = data.draw(st.sampled_from(["authorization", "content-type"]), label="header")
            raw = data.draw(HEADER, label="value")
            headers[name] = b"Bearer " + raw if name == "authorization" else b"application/" + raw
        elif names[target] == "path":
            params[target] = data.draw(PARAM, label="param")
        else:
            query[target] = data.draw(PARAM, label="query")
        url = path.format(**params) + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
        before = written(r) if bodies else None
        try:
            response = c.request(method, url, content=content, headers=headers)
        except httpx.TransportError as exc:
            tally["poison 5xx"] += 1
            raise AssertionError(f"{method} {url}: the connection failed: {exc!r}") from exc
        tally["poison cases"] += 1
        tally[f"poison {response.status_code // 100}xx"] += 1
        assert response.status_code < 500, (method, url, content and content[:300], response.text[:500])
        if response.headers.get("content-type", "").startswith("application/json"):
            from_json(response.content, allow_inf_nan=False)  # strict JSON, as a browser or a Go client reads it
        if bodies and response.status_code >= 400:
            assert written(r) == before, (method, url, content[:300], response.status_code)
        assert c.get("/v1/health").status_code == 200  # the same keep-alive connection still works

    case()
