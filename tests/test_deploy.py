"""The deployment files (Dockerfile, docker-compose*.yml, deploy/, .env.example), checked without a Docker engine.

Nothing here builds or starts a container (tests/deploy/test_compose_up.py does, on a real engine). What
is checked, in seconds: the compose files pass `docker-compose config` with `.env.example` (and fail
without a secret), their structure allows `--scale reward_service=N`, every command the images run
(`CMD`, `command:`, healthchecks) exists in the real CLI with every flag it passes, and the bundled
Redis's start script requires the password of RSS_REDIS_URL (run against a real redis-server).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import yaml

from rss.procs import RedisProcess, redis_executable
from tests.helpers import REPO
from tests.helpers.service import service_env, start_service

COMPOSE = ["docker-compose.yml"]
GPU = ["docker-compose.yml", "docker-compose.gpu.yml"]
ENV_EXAMPLE = REPO / ".env.example"
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def env_example() -> dict[str, str]:
    """The variables .env.example sets (uncommented lines)."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def documented_variables() -> set[str]:
    """Every variable .env.example names, set or commented out."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))


def compose(files: list[str], *args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose; .ci/run does this)")
    # Only the env file decides: none of its variables may leak in from this process's environment.
    env = {k: v for k, v in os.environ.items() if k not in documented_variables()}
    # The containers' env_file is .env, which a checkout does not have; point it at the example.
    env["ENV_FILE"] = str(env_file)
    argv = [exe, *(a for f in files for a in ("-f", f)), "--env-file", str(env_file), *args]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def config(files: list[str]) -> dict:
    result = compose(files, "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.mark.parametrize("files", [COMPOSE, GPU], ids=["cpu", "gpu-override"])
def test_compose_files_validate_with_the_example_env(files: list[str]) -> None:
    result = compose(files, "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("secret", ["LEARNER_TOKEN", "RSS_LEARNER_TOKENS", "RSS_REDIS_URL"])
def test_compose_refuses_to_start_without_a_required_variable(secret: str, tmp_path: Path) -> None:
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if not line.startswith(f"{secret}=")]
    env_file = tmp_path / "env"
    env_file.write_text("\n".join(lines) + "\n")
    result = compose(COMPOSE, "config", "-q", env_file=env_file)
    assert result.returncode != 0 and f"set {secret} in .env" in result.stderr, result.stderr


def test_every_compose_variable_is_documented_in_env_example() -> None:
    texts = [(REPO / name).read_text() for name in GPU]
    used = {m for text in texts for m in VARIABLE.findall(text)}
    assert used <= documented_variables(), used - documented_variables()
    required = {m for text in texts for m in re.findall(r"\$\{([A-Z0-9_]+):\?", text)}
    assert required and required <= set(env_example()), required - set(env_example())
    assert {"LEARNER_TOKEN", "TORCHRUN_FLAGS", "DATA_DIR", "RUNS_DIR", "SERVICE_PORT"} <= used


def test_service_scales_behind_one_published_port() -> None:
    """`docker compose up --scale reward_service=3` needs replicas that publish nothing and have no fixed
    name; the proxy publishes the one port and forwards to the service name, which Docker's DNS resolves
    to every replica."""
    services = config(COMPOSE)["services"]
    for name in ("reward_service", "worker"):
        assert "ports" not in services[name] and "container_name" not in services[name], name
    assert [p.split(":")[-1] for p in services["proxy"]["ports"]] == ["8080/tcp"]
    nginx = (REPO / "deploy" / "nginx.conf").read_text()
    assert re.search(r"^\s*listen 8080;", nginx, re.M)
    serve = shlex.split(services["reward_service"]["command"])
    service_port = serve[serve.index("--port") + 1]
    assert f"http://reward_service:{service_port};" in nginx and "resolver 127.0.0.11" in nginx
    assert re.findall(r"^\s*proxy_pass (\S+);", nginx, re.M) == ["$service"]  # a variable: resolved at run time
    train = shlex.split(services["learner"]["command"])
    assert train[train.index("--service-url") + 1] == "http://proxy:8080"
    # the HTTP replicas leave scoring to the worker service, so each scales on its own
    assert services["reward_service"]["environment"]["RSS_WORKER_PROCESSES"] == "0"


def test_durability_readiness_and_volumes() -> None:
    services = config(COMPOSE)["services"]
    redis_cmd = services["redis"]["command"]
    assert "--appendonly yes" in redis_cmd and "--appendfsync everysec" in redis_cmd
    assert "noeviction" in redis_cmd
    assert "redis-data:/data:rw" in services["redis"]["volumes"] and "--dir /data" in redis_cmd
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "sh", "/rss/redis.sh", "ping"]
    depends = {name: {d: c["condition"] for d, c in s.get("depends_on", {}).items()} for name, s in services.items()}
    assert depends["reward_service"]["redis"] == depends["worker"]["redis"] == "service_healthy"
    assert depends["learner"]["reward_service"] == "service_healthy"
    for name in ("reward_service", "worker", "learner"):
        assert "dataset:/data:ro" in services[name]["volumes"], name
    assert "runs:/runs:rw" in services["learner"]["volumes"]


def test_redis_requires_the_password_every_client_is_given() -> None:
    """The bundled Redis takes its password from RSS_REDIS_URL, the URL every other service connects with, and
    runs as the redis user (no image may run it as root: the official image's entrypoint is replaced)."""
    url = env_example()["RSS_REDIS_URL"]
    assert urlsplit(url).password and urlsplit(url).hostname == "redis"
    services = config(COMPOSE)["services"]
    redis_service = services["redis"]
    assert redis_service["entrypoint"] == ["sh", "/rss/redis.sh"] and redis_service["user"] == "redis"
    assert redis_service["environment"]["RSS_REDIS_URL"] == url
    assert f"{REPO / 'deploy' / 'redis.sh'}:/rss/redis.sh:ro" in redis_service["volumes"]
    assert "ports" not in redis_service  # the compose network only
    learner = shlex.split(services["learner"]["command"])
    assert learner[learner.index("--redis-url") + 1] == url
    # the service and the workers read it from the env file (`config` writes its values in)
    assert services["reward_service"]["environment"]["RSS_REDIS_URL"] == services["worker"]["environment"][
        "RSS_REDIS_URL"] == url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_script_starts_a_server_that_refuses_clients_without_the_password(tmp_path: Path) -> None:
    """deploy/redis.sh against a real redis-server: it refuses a URL without a password, the server it starts
    answers only clients with the password, and its healthcheck exits 0 only when an authenticated PING
    answers."""
    script = str(REPO / "deploy" / "redis.sh")
    if shutil.which("redis-cli") is None:
        pytest.fail("redis-cli is not installed (apt-get install redis-server; .ci/run does this)")
    for url in ("redis://redis:6379/0", "redis://:@redis:6379/0", "redis://user@redis:6379/0", ""):
        refused = subprocess.run(["sh", script], env={**os.environ, "RSS_REDIS_URL": url}, capture_output=True,
                                 text=True, timeout=10)
        assert refused.returncode == 1 and "has no password" in refused.stderr, (url, refused.stderr)
    port, password = free_port(), "s3cret-Pw_1"
    env = {**os.environ, "RSS_REDIS_URL": f"redis://:{password}@127.0.0.1:{port}/0"}
    env["PATH"] = f"{Path(redis_executable()).parent}:{env['PATH']}"  # the redis-server the suite uses
    server = subprocess.Popen(["sh", script, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                               "no", "--dir", str(tmp_path)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        ping = ["sh", script, "ping", "-p", str(port)]
        deadline = time.monotonic() + 20
        while subprocess.run(ping, env=env, capture_output=True, timeout=10).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, "redis.sh's server did not answer PING"
            time.sleep(0.1)
        with redis.Redis(port=port, socket_timeout=5) as anonymous:
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
        with redis.Redis(port=port, password=password, socket_timeout=5) as client:
            assert client.ping()
        wrong = {**env, "RSS_REDIS_URL": f"redis://:wrong@127.0.0.1:{port}/0"}
        assert subprocess.run(ping, env=wrong, capture_output=True, timeout=10).returncode != 0
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert subprocess.run(ping, env=env, capture_output=True, timeout=10).returncode != 0  # nothing answers


def test_gpu_override_reserves_nvidia_devices_with_a_cuda_image() -> None:
    cpu, gpu = config(COMPOSE)["services"], config(GPU)["services"]
    assert "deploy" not in cpu["learner"]
    devices = gpu["learner"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert "/whl/cu" in gpu["learner"]["build"]["args"]["TORCH_INDEX_URL"]
    assert gpu["learner"]["image"] != gpu["reward_service"]["image"]
    assert cpu["learner"]["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu")
    # the wheelhouse holds the CPU torch: a GPU image never installs from it
    assert gpu["learner"]["build"]["args"]["WHEELHOUSE_ONLY"] == ""


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), one list per stage."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.upper().startswith("FROM "):
            stages.append([])
        if line and not line.startswith("#") and stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_unprivileged_and_pins_the_cpu_torch() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    # both stages on the base image compose names (PYTHON_IMAGE), the public one by default
    text = (REPO / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text
    assert [line.split()[1] for stage in stages for line in stage[:1]] == ["${PYTHON_IMAGE}"] * len(stages)
    assert config(COMPOSE)["services"]["worker"]["build"]["args"]["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    final = stages[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1] not in ("0", "root")
    assert not any(re.search(r"apt-get|gcc|build-essential|pip install", line) for line in final)
    builder = "\n".join(stages[0])
    pin = re.search(r"ARG TORCH_VERSION=(\S+)", builder)[1]
    assert f"torch=={pin}" in (REPO / "Makefile").read_text()  # the same torch as `make install`
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in builder


def test_dockerignore_keeps_the_code_and_the_ui_and_drops_secrets() -> None:
    patterns = [p.strip().rstrip("/") for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    needs = ("rss_core", "learner", "reward_service", "rss", "deploy", "examples", "annotator_ui", "pyproject.toml",
             "README.md")
    for needed in needs:
        assert needed not in patterns, needed
    assert {".env", ".venv", ".git", "runs"} <= set(patterns)
    # the wheelhouse reaches the builder (never the image: the code is copied by name) but never git
    assert not any(p.startswith("deploy") for p in patterns)
    assert "/deploy/wheelhouse/*" in (REPO / ".gitignore").read_text().splitlines()


def test_dockerfile_copies_every_package_and_never_the_wheelhouse_into_app() -> None:
    """The code is copied folder by folder (a `COPY .` would put deploy/wheelhouse/ in the image): every
    package pyproject.toml installs, and the UI it serves, is among them."""
    import tomllib

    copies = [line.split()[1:] for stage in dockerfile_stages() for line in stage if line.upper().startswith("COPY ")]
    sources = {src for args in copies if not args[0].startswith("--from") for src in args[:-1]}
    assert "." not in sources and "deploy" not in sources and "deploy/" not in sources
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*").rstrip(".") for p in include if "." not in p.rstrip("*").rstrip(".")}
    assert packages | {"annotator_ui", "README.md", "pyproject.toml"} <= sources, packages - sources
    assert ["deploy/wheelhouse/", "/wheels/"] in copies  # only the builder's /wheels holds it


def image_commands() -> list[list[str]]:
    """Every command line the images run: the Dockerfile's CMD/ENTRYPOINT and compose's command/entrypoint
    and healthchecks, interpolated with .env.example."""
    commands = []
    for stage in dockerfile_stages():
        for line in stage:
            keyword, _, rest = line.partition(" ")
            if keyword.upper() in ("CMD", "ENTRYPOINT"):
                commands.append(json.loads(rest) if rest.startswith("[") else shlex.split(rest))
    for files in (COMPOSE, GPU):
        for service in config(files)["services"].values():
            for key in ("entrypoint", "command"):
                if key in service:
                    value = service[key]
                    commands.append(shlex.split(value) if isinstance(value, str) else list(value))
            test = service.get("healthcheck", {}).get("test")
            if test:
                commands.append(test[1:] if test[0] == "CMD" else shlex.split(test[1]))
    return commands


def flags(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def help_text(*argv: str) -> str:
    result = subprocess.run([sys.executable, *argv, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def check_rss(argv: list[str]) -> None:
    """``argv`` = ["rss", sub, flags...]: the subcommand exists and knows every flag; train parses them."""
    assert argv[0] == "rss", argv
    text = help_text("-m", "rss.cli", argv[1])
    unknown = [f for f in flags(argv[2:]) if not re.search(rf"{re.escape(f)}\b", text)]
    assert not unknown, f"`{shlex.join(argv)}`: {unknown} not in `rss {argv[1]} --help`"
    if argv[1] == "train":  # values too: parsed and validated as `rss train` would
        import tyro

        from learner.config import TrainArgs

        tyro.cli(TrainArgs, args=argv[2:]).validate()


def test_every_command_the_images_run_exists_with_its_flags() -> None:
    commands = {tuple(c): list(c) for c in image_commands()}.values()  # the GPU file repeats most
    seen = set()
    for argv in commands:
        if argv[0] == "torchrun":
            text = help_text("-m", "torch.distributed.run")
            split = argv.index("--no-python")  # what follows is the program and its arguments
            unknown = [f for f in flags(argv[1:split + 1]) if f not in text]
            assert not unknown, f"torchrun flags {unknown} unknown"
            argv = argv[split + 1:]
        if argv[0] == "rss":
            check_rss(argv)
            seen.add(argv[1])
    assert {"serve", "worker", "train"} <= seen, seen  # the test looked at every role the images play


def test_check_rss_catches_a_flag_that_does_not_exist() -> None:
    with pytest.raises(AssertionError, match="--no-such-flag"):
        check_rss(["rss", "serve", "--no-such-flag", "1"])
    with pytest.raises(SystemExit):
        check_rss(["rss", "train", "--reward", "bogus"])


def test_healthchecks_answer_like_docker_expects(redis_server: RedisProcess, redis_client) -> None:
    """The service's healthcheck command, pointed at a real `rss serve`, exits 0 when ready and 1 when not
    reachable."""
    services = config(COMPOSE)["services"]
    test = services["reward_service"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and "http://127.0.0.1:8000/v1/ready" in test[3]
    with start_service(service_env(redis_server)) as proc:
        ok = subprocess.run([sys.executable, "-c", test[3].replace("127.0.0.1:8000", f"127.0.0.1:{proc.port}")],
                            capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    gone = subprocess.run([sys.executable, "-c", test[3].replace("127.0.0.1:8000", f"127.0.0.1:{proc.port}")],
                          capture_output=True, timeout=30)
    assert gone.returncode != 0
    # the Redis healthcheck (deploy/redis.sh ping) is run against a real server by the test above


def test_deployment_page_matches_the_files() -> None:
    section = (REPO / "docs" / "deployment.md").read_text()
    assert "**Run in CI.**" in section and "tests/deploy/test_compose_up.py" in section
    services = config(GPU)["services"]
    assert {name for name in services if f"| `{name}` |" not in section} == set()
    texts = [(REPO / name).read_text() for name in GPU]
    required = {m for text in texts for m in re.findall(r"\$\{([A-Z0-9_]+):\?", text)}
    assert {name for name in required if f"`{name}`" not in section} == set()
    assert "--scale reward_service=3" in section and "docker-compose.gpu.yml" in section
