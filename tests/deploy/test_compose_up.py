"""docker-compose.yml for real: the images built and the whole stack run on a Docker engine, checked from
outside through the one published port, the way its users reach it.

Offline, as on a machine that reaches no registry and no index: the base images are built by
deploy/local-images.sh (debootstrap from apt's own mirror), the Python packages come from the wheelhouse
deploy/wheelhouse.sh fills (docs/deployment.md, "Building offline"). Then, with a test .env:
`docker-compose up -d --build`, /v1/ready through the proxy, a learner run trained through proxy, service,
worker and Redis (its final.json in the runs volume, every sample applied once), the rater UI in Chromium
answering a task a second learner run applies, two replicas and two workers (both replicas serve; one
stopped loses no accepted episode), `down`/`up` keeping queued work and `down -v` removing it, the
containers unprivileged, only the proxy on a host port (127.0.0.1), and Redis refusing a client without
its password.

A Docker engine is started (`dockerd`, as root) when none answers, and stopped at the end; so is
everything the test starts, on failure too. Without an engine the test fails and says why;
RSS_COMPOSE_TEST=off skips it on a machine known to have none. `pytest -m compose` runs it alone.
Measured timings go to the test's output (-s) and to $RSS_COMPOSE_TIMINGS (a JSON file) when set.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rss_core import codec
from tests.helpers.docker import SWITCH, OfflineBuild, run
from tests.helpers.factories import episode, label_of, noisy
from tests.helpers.service import LEARNER_TOKEN, RATERS

pytestmark = pytest.mark.compose

PROJECT = "rsscomposetest"
TRAIN_STEPS, BATCH, SAMPLES = 20, 8, 4
REDIS_PASSWORD = "compose-test-redis-password"


TIMINGS: dict[str, float] = {}


def note(name: str, seconds: float) -> None:
    TIMINGS[name] = round(seconds, 1)
    print(f"compose test: {name} {seconds:.1f} s")  # noqa: T201


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    """The running compose project: its env file, published URL and the Docker SDK client."""

    docker: object
    env_file: Path
    url: str
    values: dict[str, str]

    def compose(self, *args: str, env_file: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in self.values and k not in ("DOCKER_BUILDKIT",
                                                                                       "COMPOSE_DOCKER_CLI_BUILD")}
        return run(["docker-compose", "-p", PROJECT, "--env-file", str(env_file or self.env_file), *args], timeout,
                   env=env)

    def containers(self, service: str | None = None, all: bool = False) -> list:
        labels = [f"com.docker.compose.project={PROJECT}"]
        if service:
            labels.append(f"com.docker.compose.service={service}")
        return self.docker.containers.list(all=all, filters={"label": labels})

    def read(self, container, path: str) -> bytes:
        """A file from a container (running or exited), through the engine's archive API."""
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            return tar.extractfile(tar.getmembers()[0]).read()

    def wait_ready(self, timeout: float = 240) -> float:
        start, last = time.monotonic(), None
        while time.monotonic() - start < timeout:
            try:
                last = httpx.get(f"{self.url}/v1/ready", timeout=5)
                if last.status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.5)
        raise AssertionError(f"/v1/ready through the proxy not 200 after {timeout} s: {last}")

    def learner(self, container, run_name: str, timeout: float = 600) -> dict:
        """Wait for a learner container to exit 0; its run's final.json from the runs volume."""
        status = container.wait(timeout=timeout)
        logs = container.logs(tail=40).decode(errors="replace")
        assert status["StatusCode"] == 0, logs
        return json.loads(self.read(container, f"/runs/{run_name}/final.json"))


def write_env(path: Path, **values: str) -> dict[str, str]:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return values


@pytest.fixture(scope="module")
def stack(engine, offline_build_inputs: OfflineBuild, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The local base images and the wheelhouse, then `docker-compose up -d --build` with a test .env; at the end
    (or on failure) `down -v`, which removes the containers, the network and the volumes."""
    if shutil.which("docker-compose") is None:
        pytest.fail(f"docker-compose is not installed (apt-get install docker-compose; .ci/run does this), or set "
                    f"{SWITCH}=off on a machine without an engine")
    for name, seconds in offline_build_inputs.timings.items():
        note(name, seconds)
    local = offline_build_inputs.env
    env_file = tmp_path_factory.mktemp("compose") / "env"
    port = free_port()
    values = write_env(
        env_file,
        RSS_REDIS_URL=f"redis://:{REDIS_PASSWORD}@redis:6379/0",
        RSS_LEARNER_TOKENS=json.dumps([LEARNER_TOKEN]),
        RSS_RATER_TOKENS=json.dumps(RATERS),
        RSS_SHAPES_LENGTH="200",
        RSS_LOG_LEVEL="info",
        LEARNER_TOKEN=LEARNER_TOKEN,
        SERVICE_BIND="127.0.0.1",
        SERVICE_PORT=str(port),
        RUN_NAME="compose-gt",
        TORCHRUN_FLAGS="--standalone --nproc-per-node 1",
        TRAIN_FLAGS=f"--steps {TRAIN_STEPS} --batch-size {BATCH} --samples {SAMPLES} --eval-every {TRAIN_STEPS} "
                    f"--val-size 32 --threads 1",
        IMAGE="rss:compose-test",
        WHEELHOUSE_ONLY="1",
        ENV_FILE=str(env_file),
        **local,
    )
    s = Stack(engine, env_file, f"http://127.0.0.1:{port}", values)
    s.compose("down", "-v", "--remove-orphans", timeout=300)  # what a killed earlier run may have left
    try:
        start = time.monotonic()
        s.compose("up", "-d", "--build", timeout=1800)
        TIMINGS["_up_started"] = start
        note("docker-compose up -d --build", time.monotonic() - start)
        yield s
    finally:
        try:
            for oneoff in engine.containers.list(all=True, filters={"label": [f"com.docker.compose.project={PROJECT}",
                                                                              "com.docker.compose.oneoff=True"]}):
                oneoff.remove(force=True)  # `docker-compose run` containers, which `down` leaves
            s.compose("down", "-v", "--remove-orphans", timeout=300)
        finally:
            if os.environ.get("RSS_COMPOSE_TIMINGS"):
                Path(os.environ["RSS_COMPOSE_TIMINGS"]).write_text(
                    json.dumps({k: v for k, v in TIMINGS.items() if not k.startswith("_")}, indent=2) + "\n")


def learner_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {LEARNER_TOKEN}"}, timeout=30)


def post_episode(c: httpx.Client, run_id: str, seed: int, retry_s: float = 60) -> str | None:
    """POST one image-level episode; retried like the learner retries (502/503/504, a lost connection).
    Returns its id once accepted (202)."""
    body = episode(run_id, [codec.raw_mask(noisy(label_of(), seed))])
    deadline = time.monotonic() + retry_s
    while True:
        try:
            response = c.post("/v1/episodes", json=body)
            if response.status_code == 202:
                return response.json()["episode_id"]
            assert response.status_code in (502, 503, 504), response.text
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"episode {seed} not accepted within {retry_s} s"
        time.sleep(0.5)


def wait_scored(c: httpx.Client, ids: list[str], timeout: float = 120) -> None:
    deadline, left = time.monotonic() + timeout, set(ids)
    while left and time.monotonic() < deadline:
        for episode_id in sorted(left):
            answer = c.get(f"/v1/episodes/{episode_id}")
            if answer.status_code == 200 and answer.json()["status"] == "scored":
                left.discard(episode_id)
        time.sleep(0.5)
    assert not left, f"{len(left)} of {len(ids)} accepted episodes never scored: {sorted(left)[:5]}"


def register(c: httpx.Client, run_id: str) -> None:
    response = c.post("/v1/runs", json={"run_id": run_id, "dataset": "shapes", "level": "image"})
    assert response.status_code == 201, response.text


def test_ready_through_the_proxy_and_the_learner_trains_through_the_stack(stack: Stack) -> None:
    ready = stack.wait_ready()
    note("up returned -> /v1/ready 200", ready)
    (container,) = stack.containers("learner", all=True)
    final = stack.learner(container, "compose-gt")
    note("up started -> learner's final.json", time.monotonic() - TIMINGS["_up_started"])
    rewards = final["rewards"]
    posted = TRAIN_STEPS * BATCH * SAMPLES
    assert final["steps"] == TRAIN_STEPS and rewards["posted"] == rewards["applied"] == posted, rewards
    assert not any(rewards.get(k) for k in ("duplicates", "stale", "orphaned", "failed", "dropped_stale")), rewards
    # the ledger: every episode applied by exactly one update
    ledger = [json.loads(line) for line in stack.read(container, "/runs/compose-gt/applied.jsonl").splitlines()]
    episodes = [e for line in ledger for e in line["episodes"]]
    assert len(episodes) == len(set(episodes)) == TRAIN_STEPS * BATCH


def test_containers_are_unprivileged_healthy_and_only_the_proxy_listens_on_the_host(stack: Stack) -> None:
    containers = stack.containers(all=True)
    services = {c.labels["com.docker.compose.service"] for c in containers}
    assert services == {"redis", "worker", "reward_service", "proxy", "learner"}, services
    for container in stack.containers():  # running: every process in it, tini included, has a non-zero uid
        top = container.top(ps_args="-o uid,pid,comm")
        uids = {int(p[0]) for p in top["Processes"]}
        assert 0 not in uids, (container.name, top)
        bound = {port: [(b["HostIp"], b["HostPort"]) for b in binds or []]
                 for port, binds in container.attrs["NetworkSettings"]["Ports"].items()}
        published = [b for binds in bound.values() for b in binds]
        if container.labels["com.docker.compose.service"] == "proxy":
            assert published == [("127.0.0.1", stack.values["SERVICE_PORT"])], bound
        else:
            assert published == [], (container.name, bound)
    for service in ("redis", "reward_service"):
        (container,) = stack.containers(service)
        assert container.attrs["State"]["Health"]["Status"] == "healthy", service


def test_redis_refuses_a_client_without_the_password(stack: Stack) -> None:
    """From another container on the compose network, as any client there would connect."""
    (worker,) = stack.containers("worker")
    probe = ("import redis, sys\n"
             "try:\n    redis.Redis(host='redis', socket_timeout=5).ping()\nexcept redis.AuthenticationError as e:\n"
             "    print('refused:', e)\nelse:\n    sys.exit('answered without a password')\n"
             f"assert redis.Redis(host='redis', password={REDIS_PASSWORD!r}, socket_timeout=5).ping()\n")
    code, out = worker.exec_run(["python", "-c", probe])
    assert code == 0 and b"refused:" in out, out


def test_a_rater_answers_in_the_browser_and_the_learner_applies_it(stack: Stack, tmp_path: Path) -> None:
    """A second learner run, scored by people: one image, one mask, one task; a rater answers it in the UI
    served through the proxy, and the learner applies that answer."""
    from playwright.sync_api import sync_playwright

    from rss.bench.ui import CHROMIUM, CHROMIUM_ARGS
    from tests.helpers.ui import sign_in, wait_task

    env_file = tmp_path / "env"
    write_env(env_file, **{**stack.values, "RUN_NAME": "compose-human",
                           "TRAIN_FLAGS": "--scorer human --steps 1 --batch-size 1 --samples 1 --eval-every 1 "
                                          "--val-size 8 --threads 1"})
    name = f"{PROJECT}_learner_human"
    stack.compose("run", "-d", "--no-deps", "--name", name, "learner", env_file=env_file)
    container = stack.docker.containers.get(name)
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does this)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            sign_in(page, stack.url)
            wait_task(page, "score", timeout=180_000)
            page.keyboard.press("7")
            page.keyboard.press("Enter")
            page.wait_for_function("document.querySelector('#rated').textContent === '1'")
            assert errors == []
        finally:
            browser.close()
    try:
        final = stack.learner(container, "compose-human", timeout=300)
    finally:
        container.remove(force=True)  # a one-off container: `down` leaves it
    assert final["rewards"]["posted"] == final["rewards"]["applied"] == 1, final["rewards"]
    assert final["config"]["scorer"] == "human"


def metric(container, name: str) -> float:
    code, out = container.exec_run(["python", "-c", "import urllib.request; print(urllib.request.urlopen("
                                    "'http://127.0.0.1:8000/metrics', timeout=5).read().decode())"])
    assert code == 0, out
    return sum(float(line.rsplit(" ", 1)[1]) for line in out.decode().splitlines() if line.startswith(name + "{"))


def test_two_replicas_both_serve_and_stopping_one_loses_no_accepted_episode(stack: Stack) -> None:
    start = time.monotonic()
    stack.compose("up", "-d", "--no-recreate", "--scale", "reward_service=2", "--scale", "worker=2",
                  "reward_service", "worker")
    deadline = time.monotonic() + 240
    while True:
        replicas = stack.containers("reward_service")
        healthy = [c for c in replicas if c.attrs["State"].get("Health", {}).get("Status") == "healthy"]
        if len(replicas) == len(healthy) == 2:
            break
        assert time.monotonic() < deadline, [(c.name, c.attrs["State"].get("Health")) for c in replicas]
        time.sleep(1)
        for c in replicas:
            c.reload()
    note("--scale reward_service=2 worker=2 -> both replicas healthy", time.monotonic() - start)
    assert len(stack.containers("worker")) == 2
    time.sleep(11)  # nginx re-resolves `reward_service` every 10 s (deploy/nginx.conf)
    with learner_client(stack.url) as c:
        register(c, "scaled")
        before = {r.name: metric(r, "rss_episodes_accepted_total") for r in replicas}
        accepted = [post_episode(c, "scaled", seed) for seed in range(20)]
        served = {r.name: metric(r, "rss_episodes_accepted_total") - before[r.name] for r in replicas}
        assert sum(served.values()) == 20 and all(n > 0 for n in served.values()), served
        stopped = replicas[0]
        stopped.stop(timeout=10)
        start = time.monotonic()
        accepted += [post_episode(c, "scaled", seed) for seed in range(20, 40)]
        note("20 episodes posted through the proxy with one of two replicas stopped", time.monotonic() - start)
        (proxy,) = stack.containers("proxy")
        upstream = [line for line in proxy.logs().decode(errors="replace").splitlines() if "upstream" in line]
        print(f"compose test: proxy errors after the stop: {len(upstream)}", *upstream[:3], sep="\n  ")  # noqa: T201
        wait_scored(c, accepted)
    # the stopped replica is started again, so the stack is whole for the next test
    stopped.start()


def test_down_and_up_keep_queued_work_and_down_v_removes_it(stack: Stack) -> None:
    with learner_client(stack.url) as c:
        register(c, "durable")
        stack.compose("stop", "worker")  # nothing scores: the episodes stay queued in Redis
        queued = [post_episode(c, "durable", seed) for seed in range(5)]
        assert all(c.get(f"/v1/episodes/{e}").json()["status"] == "queued" for e in queued)
    stack.compose("down")
    volumes = {v.name for v in stack.docker.volumes.list(filters={"label": f"com.docker.compose.project={PROJECT}"})}
    assert f"{PROJECT}_redis-data" in volumes, volumes
    start = time.monotonic()
    stack.compose("up", "-d", "reward_service", "worker", "proxy")  # returns once reward_service is healthy
    stack.wait_ready()
    note("down, then up -d -> /v1/ready 200 through the proxy (images built)", time.monotonic() - start)
    with learner_client(stack.url) as c:
        wait_scored(c, queued)  # the queued episodes survived down/up (AOF on the redis-data volume)
    note("down, then up -d -> the queued episodes scored", time.monotonic() - start)
    stack.compose("down", "-v")
    left = stack.docker.volumes.list(filters={"label": f"com.docker.compose.project={PROJECT}"})
    assert left == [], [v.name for v in left]
    assert stack.containers(all=True) == []
