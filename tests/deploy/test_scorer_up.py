"""`rss scorer up|ls|logs|down` on a real Docker engine: the example external scorer's image, built offline in two
versions, swapped in and out under one name while a real `rss serve` (on the host, with its Redis) keeps running,
and each version's results traced by the `scorer_version` they carry.

The image builds as the compose test's do (local base image, wheelhouse; its torch layer comes from the cache the
main image's build left, when there is one). The engine is the session's (tests/deploy/conftest.py): started when
none answers, stopped after; RSS_COMPOSE_TEST=off skips this with the compose test. Every container, image tag and
network the test makes is removed at the end, on failure too (the layers stay in the build cache).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from rss.procs import RedisProcess
from rss.scorer import DEFAULT_NETWORK, LABEL
from rss_core import codec, keys
from tests.helpers import REPO
from tests.helpers.cli import run_rss
from tests.helpers.client import client, read_results, register, wait_status
from tests.helpers.docker import OfflineBuild
from tests.helpers.factories import episode, label_of, noisy
from tests.helpers.service import DATABASES, service_env, start_service

pytestmark = pytest.mark.compose

NAME = "swaptest"  # the scorer's name; its container is rss-scorer-swaptest
IMAGE = "rss-example-scorer:swaptest"
VERSIONS = ("example-gt-1-test", "example-gt-2-test")
RUN, OTHER_RUN = "swapped", "not-allowed"
DB = DATABASES["scorer_containers"]


def note(name: str, seconds: float) -> None:
    print(f"scorer test: {name} {seconds:.1f} s")  # noqa: T201


@pytest.fixture(scope="module")
def images(engine, offline_build_inputs: OfflineBuild) -> Iterator[list[str]]:
    """The example scorer's image in both versions (one build argument apart: the second build is one layer)."""
    import docker

    tags = [f"{IMAGE}-{i + 1}" for i in range(len(VERSIONS))]
    try:
        for tag, version in zip(tags, VERSIONS, strict=True):
            start = time.monotonic()
            try:
                engine.images.build(path=str(REPO), dockerfile="examples/external_scorer/Dockerfile", tag=tag,
                                    rm=True, buildargs={"PYTHON_IMAGE": offline_build_inputs.python_image,
                                                        "WHEELHOUSE_ONLY": "1", "SCORER_VERSION": version})
            except docker.errors.BuildError as exc:
                pytest.fail(f"{tag}: {exc}\n" + "".join(str(c.get("stream", "")) for c in exc.build_log)[-3000:])
            note(f"docker build {tag}", time.monotonic() - start)
        yield tags
    finally:
        for tag in tags:
            try:
                engine.images.remove(tag, noprune=True)  # its parent layers stay: the next run's build cache
            except docker.errors.ImageNotFound:
                pass


@pytest.fixture
def our_scorers(engine) -> Iterator[None]:
    """Leaves no scorer container of this test, nor the network `up` made if there was none before."""
    had_network = bool(engine.networks.list(names=[DEFAULT_NETWORK]))

    def clean() -> None:
        for container in engine.containers.list(all=True, filters={"label": f"{LABEL}={NAME}"}):
            container.remove(force=True)

    clean()
    try:
        yield
    finally:
        clean()
        if not had_network:
            for network in engine.networks.list(names=[DEFAULT_NETWORK]):
                network.remove()


def scorer(*args: str, timeout: float = 180) -> str:
    """`rss scorer ...` in a subprocess; its stdout, after checking it exited 0."""
    done = run_rss("scorer", *args, timeout=timeout)
    assert done.returncode == 0, f"rss scorer {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def score_and_read(learner: httpx.Client, r: redis.Redis, seeds: range) -> list[dict]:
    """Post one image-level episode per seed (the label itself, then noisier masks) and read its results."""
    masks = [label_of() if seed == 0 else noisy(label_of(), seed) for seed in seeds]
    ids = []
    for mask in masks:
        answer = learner.post("/v1/episodes", json=episode(RUN, [codec.raw_mask(mask)]))
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["episode_id"])
    for episode_id in ids:
        wait_status(learner, episode_id, ("scored",), timeout=60)
    return read_results(r, RUN, len(ids))


def test_scorer_versions_swap_in_and_out_under_one_url_and_their_results_are_traced(
        engine, images: list[str], our_scorers, redis_server: RedisProcess) -> None:
    r = redis.Redis(port=redis_server.port, db=DB)
    r.flushdb()
    redis_url = redis_server.db_url(DB)
    env = service_env(redis_server, redis_url=redis_url)  # the default allowlist: neither container's address
    limits = ["--cpus", "0.5", "--memory", "512m", "--pids", "128", "--redis-url", redis_url, "--run", RUN,
              "--env", "EXAMPLE_SCORER_SEED=0", "--timeout-s", "120"]
    with start_service(env) as service, client(service.url) as learner:
        pid = service.popen.pid
        start = time.monotonic()
        url = scorer("up", images[0], "--name", NAME, *limits).strip()
        note("rss scorer up (version 1) -> healthy", time.monotonic() - start)
        assert url.startswith("http://") and url.endswith(":9000/score"), url
        assert r.smembers(keys.run_endpoint_allow(RUN)) == {url.encode()}

        # confined as `up` promises: limits, read-only root, no capability, no published port, not root
        (container,) = engine.containers.list(filters={"label": f"{LABEL}={NAME}"})
        host = container.attrs["HostConfig"]
        assert host["NanoCpus"] == 500_000_000 and host["Memory"] == host["MemorySwap"] == 512 * 2**20, host
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], host
        assert host["SecurityOpt"] == ["no-new-privileges"] and host["PidsLimit"] == 128, host
        assert "/tmp" in host["Tmpfs"] and not host["PortBindings"], host
        assert container.attrs["NetworkSettings"]["Ports"] in ({}, {"9000/tcp": None}), container.attrs
        assert container.attrs["Config"]["User"] == "10001"
        code, out = container.exec_run(["sh", "-c", "touch /app/x 2>&1; echo $?; touch /tmp/x; echo $?"])
        assert b"Read-only file system" in out and out.split()[-2:] == [b"1", b"0"], out  # /tmp takes a write

        # the URL is allowed for this run only
        refused = learner.post("/v1/runs", json={"run_id": OTHER_RUN, "dataset": "shapes", "level": "image",
                                                 "scorer": "http", "endpoint": url})
        assert refused.status_code == 422 and "RSS_HTTP_ENDPOINT_ALLOW" in refused.json()["detail"], refused.text
        register(learner, RUN, scorer="http", endpoint=url)

        first = score_and_read(learner, r, range(3))
        assert [x["scorer_version"] for x in first] == [VERSIONS[0]] * 3, first
        assert all(x["source"] == "http" and "error" not in x for x in first), first
        rewards = {x["episode_id"]: x["reward"] for x in first}
        assert max(rewards.values()) == pytest.approx(1.0) and min(rewards.values()) < 1.0, rewards

        (row,) = json.loads(scorer("ls", "--json"))
        assert row == {"name": NAME, "status": "running", "image": images[0], "url": url, "runs": [RUN],
                       "container": f"rss-scorer-{NAME}"}, row
        assert scorer("logs", NAME).count('"POST /score HTTP/1.1" 200') == 3  # the container scored them

        start = time.monotonic()
        scorer("down", NAME, "--redis-url", redis_url)
        note("rss scorer down", time.monotonic() - start)
        assert json.loads(scorer("ls", "--json")) == []
        assert r.smembers(keys.run_endpoint_allow(RUN)) == set()  # no scorer, no entry
        again = learner.post("/v1/runs", json={"run_id": RUN + "-late", "dataset": "shapes", "level": "image",
                                               "scorer": "http", "endpoint": url})
        assert again.status_code == 422, again.text

        start = time.monotonic()
        assert scorer("up", images[1], "--name", NAME, *limits).strip() == url  # the same name, the same URL
        note("rss scorer up (version 2) -> healthy", time.monotonic() - start)
        same = learner.post("/v1/runs", json={"run_id": RUN, "dataset": "shapes", "level": "image",
                                              "scorer": "http", "endpoint": url})
        assert same.status_code == 200, same.text  # the run as it was registered: the same configuration
        second = score_and_read(learner, r, range(3))
        assert [x["scorer_version"] for x in second] == [VERSIONS[1]] * 3, second
        assert sorted(x["reward"] for x in second) == sorted(rewards.values())  # the same scoring, new version
        assert service.popen.poll() is None and service.popen.pid == pid  # never restarted
        scorer("down", NAME, "--redis-url", redis_url)
    r.close()


def test_on_a_network_of_the_stacks_the_url_names_the_container(engine, images: list[str], our_scorers) -> None:
    """`--network` of compose's kind (a user network `up` did not make): no fixed address, the URL names the
    container, which the other containers on that network resolve."""
    network = engine.networks.create(f"{NAME}-stack", driver="bridge")
    try:
        url = scorer("up", images[0], "--name", NAME, "--network", network.name, "--timeout-s", "120").strip()
        assert url == f"http://rss-scorer-{NAME}:9000/score", url
        (container,) = engine.containers.list(filters={"label": f"{LABEL}={NAME}"})
        probe = f"import urllib.request; print(urllib.request.urlopen({url.replace('/score', '/health')!r}).read())"
        code, out = container.exec_run(["python", "-c", probe])  # by name, through the network's DNS
        assert code == 0 and b'"ok"' in out, out
        scorer("down", NAME)
    finally:
        for container in engine.containers.list(all=True, filters={"label": f"{LABEL}={NAME}"}):
            container.remove(force=True)
        network.remove()
