"""`rss scorer` without a Docker engine: fixed addresses, the runs' allowlist entries in a real Redis, and a clear
error for a missing SDK, an engine that does not answer or a bad flag (the engine's own test is
tests/deploy/test_scorer_up.py)."""

from __future__ import annotations

import ipaddress
import json
import sys

import pytest
import redis

from rss import scorer
from rss.cli import main
from rss_core import keys
from tests.helpers.cli import run_rss


def test_a_scorer_has_a_fixed_address_in_its_network_never_the_gateway() -> None:
    subnet = "172.19.0.0/16"
    addresses = {name: scorer.address_for(name, subnet, "172.19.0.1") for name in ("a", "b", "swaptest", "x" * 48)}
    assert addresses == {name: scorer.address_for(name, subnet, "172.19.0.1") for name in addresses}  # stable
    assert len(set(addresses.values())) == len(addresses)
    net = ipaddress.ip_network(subnet)
    for address in addresses.values():
        ip = ipaddress.ip_address(address)
        assert ip in net and ip not in (net.network_address, net.broadcast_address, ipaddress.ip_address("172.19.0.1"))
    small = "10.9.0.0/29"  # 6 usable addresses: every name lands on one of them, none the gateway
    assert {scorer.address_for(f"n{i}", small, "10.9.0.1") for i in range(200)} <= {f"10.9.0.{i}" for i in range(2, 7)}
    with pytest.raises(scorer.ScorerError, match="too small"):
        scorer.address_for("a", "10.9.0.0/30", None)


def test_up_and_down_add_and_remove_the_url_in_each_runs_own_allowlist(redis_client: redis.Redis,
                                                                        redis_server) -> None:
    url = "http://172.19.3.4:9000/score"
    redis_client.hset(keys.run("r2"), "config", json.dumps({"endpoint": "http://elsewhere:9000/score"}))
    scorer.allow_runs(url, redis_server.url, ("r1", "r2"), add=True)
    assert redis_client.smembers(keys.run_endpoint_allow("r1")) == {url.encode()}
    assert redis_client.smembers(keys.run_endpoint_allow("r2")) == {url.encode()}
    redis_client.sadd(keys.run_endpoint_allow("r1"), "http://other:9000")  # another scorer's entry stays
    scorer.allow_runs(url, redis_server.url, ("r1", "r2"), add=False)
    assert redis_client.smembers(keys.run_endpoint_allow("r1")) == {b"http://other:9000"}
    assert not redis_client.exists(keys.run_endpoint_allow("r2"))
    with pytest.raises(scorer.ScorerError, match="--redis-url"):
        scorer.allow_runs(url, "redis://127.0.0.1:1/0", ("r1",), add=True)  # nothing listens on port 1


@pytest.mark.parametrize(("args", "said"), [
    (["up", "img", "--env", "NOEQUALS"], "--env 'NOEQUALS' is not KEY=VALUE"),
    (["up", "img", "--name", "Upper"], "scorer name 'Upper'"),
    (["up", "img", "--run", "../x"], "--run '../x' is not a run id"),
    (["up", "img", "--path", "score"], "--path and --health-path start with /"),
    (["up", "img", "--cpus", "0"], "--cpus and --timeout-s must be positive"),
    (["launch"], "rss scorer needs one of: up, ls, logs, down"),
])
def test_bad_flags_are_a_clear_error_before_the_engine_is_asked(args: list[str], said: str, monkeypatch,
                                                                capsys) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # asking it would be another error
    assert main(["scorer", *args]) == 2
    err = capsys.readouterr().err
    assert said in err and "Docker engine" not in err, err


def test_no_sdk_and_no_engine_are_errors_naming_what_is_missing(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # importing it raises ImportError
    assert main(["scorer", "ls"]) == 2
    assert "the Docker SDK for Python is not installed: pip install docker" in capsys.readouterr().err
    monkeypatch.delitem(sys.modules, "docker")
    # a subprocess: the SDK's failed first request leaves a socket for the garbage collector to warn about
    done = run_rss("scorer", "down", "x", timeout=60, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert done.returncode == 2, done.stderr
    assert "rss scorer down: error: no Docker engine answers at unix:///nonexistent/docker.sock" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_scorer_command_has_help() -> None:
    for command in scorer.COMMANDS:
        done = run_rss("scorer", command, "--help", timeout=60)
        assert done.returncode == 0 and f"usage: rss scorer {command}" in done.stdout, done.stderr
    assert run_rss("scorer", timeout=60).returncode == 2
