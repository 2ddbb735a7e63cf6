"""`rss scorer up|ls|logs|down`: external scorers (the `http` scorer's endpoints) run as containers, through the
Docker SDK for Python.

`up` starts a user's scorer image unprivileged and confined (CPU and memory limits, no published port, a
read-only root filesystem with a tmpfs at /tmp, every capability dropped, no-new-privileges), on a Docker
network the reward service reaches, waits for its health endpoint and prints the URL to register runs with
(stdout, one line; everything else goes to stderr). Two kinds of network (docs/deployment.md, "External
scorers as containers"):

- the default, `rss-scorers`, which `up` creates: internal (the scorer reaches nothing outside it) and with a
  subnet of its own, so a scorer gets a fixed address derived from its name and its URL is that address,
  reachable from the host on Linux: for a service on the host (`rss serve`, `rss demo`). The same name gets
  the same address, so a second version swapped in under that name answers at the URL runs registered;
- any other network (`--network rss_default`: compose's), where the URL names the container
  (`http://rss-scorer-NAME:PORT/score`), which the services on that network resolve.

`up --run RUN_ID` adds the URL to that run's own endpoint allowlist (`rss_core.keys.run_endpoint_allow`),
written straight into the service's Redis: no HTTP route can add one, so no token can (docs/security.md).
`down` removes the container and those entries. Every container carries the label `rss.scorer=NAME`;
`ls`, `logs` and `down` touch only those.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Annotated, Any

import tyro

from rss_core import keys

log = logging.getLogger(__name__)

LABEL = "rss.scorer"  # the scorer's name
LABEL_URL = "rss.scorer.url"  # the URL `up` printed
LABEL_RUNS = "rss.scorer.runs"  # JSON list of the runs whose own allowlist names the URL
LABEL_NETWORK = "rss.scorers"  # on the networks `up` creates
DEFAULT_NETWORK = "rss-scorers"
PREFIX = "rss-scorer-"  # container names
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,47}")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # rss_core.schemas.RunId
ENV_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.S)
COMMANDS = ("up", "ls", "logs", "down")


class ScorerError(RuntimeError):
    """A scorer command that cannot go on; `rss` prints the message and exits 2."""


@dataclass
class UpArgs:
    """Start a scorer image as a container on the stack's network; print the URL to register runs with."""

    image: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="IMAGE")]
    """the scorer's image (on this engine: `docker build -t ...` first; nothing is pulled)"""
    name: str = "scorer"
    """the scorer's name (container rss-scorer-NAME); a name gets the same URL every time it is up"""
    env: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """KEY=VALUE for the container's environment (repeat the flag)"""
    run: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """add the URL to this run's own endpoint allowlist in the service's Redis (repeat for several runs)"""
    redis_url: str = ""
    """the service's Redis, for --run (default: $RSS_REDIS_URL, else redis://127.0.0.1:6379/0)"""
    network: str = DEFAULT_NETWORK
    """the Docker network: rss-scorers (made here; fixed addresses the host reaches) or one that exists, such as
    compose's rss_default (the URL then names the container)"""
    port: int = 9000
    """the port the scorer listens on inside the container (nothing is published on the host)"""
    path: str = "/score"
    """the scoring route (the URL's path)"""
    health_path: str = "/health"
    """answers 200 once the scorer is ready"""
    timeout_s: float = 120.0
    """how long to wait for the health endpoint"""
    cpus: float = 1.0
    """CPU limit, in cores"""
    memory: str = "1g"
    """memory limit (no swap beyond it)"""
    pids: int = 256
    """most processes and threads in the container"""
    tmpfs_size: str = "64m"
    """size of the tmpfs at /tmp"""
    read_only: bool = True
    """read-only root filesystem (--no-read-only for an image that writes outside /tmp)"""


@dataclass
class LsArgs:
    """List the scorer containers (label rss.scorer), running or not."""

    json: bool = False
    """a JSON list (name, status, image, url, runs, container) instead of a table"""


@dataclass
class LogsArgs:
    """Print a scorer container's output."""

    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME")]
    """the scorer's name"""
    tail: int = 200
    """lines from the end (0: all)"""
    follow: bool = False
    """keep printing until interrupted"""


@dataclass
class DownArgs:
    """Stop and remove a scorer container, and remove its URL from the allowlists of the runs `up --run` named."""

    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME")]
    """the scorer's name"""
    redis_url: str = ""
    """the service's Redis (default: $RSS_REDIS_URL, else redis://127.0.0.1:6379/0)"""
    keep_allow: bool = False
    """leave the runs' allowlist entries in Redis"""
    timeout_s: int = 10
    """seconds the scorer has to stop before it is killed"""


# --- the engine, the network, names ----------------------------------------------------------------------------

def engine() -> Any:
    """A Docker SDK client to an engine that answers; ScorerError naming what is missing otherwise."""
    try:
        import docker
    except ImportError:
        raise ScorerError("the Docker SDK for Python is not installed: pip install docker (`pip install -e "
                          "'.[system]'` installs it)") from None
    try:
        client = docker.from_env()
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise ScorerError(f"no Docker engine answers at {where} ({str(exc)[:300]}): start dockerd, or set "
                          "DOCKER_HOST") from None
    return client


def container_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ScorerError(f"scorer name {name!r}: lower-case letters, digits and _.- (up to 48), starting with a "
                          "letter or digit")
    return PREFIX + name


def redis_url(flag: str) -> str:
    return flag or os.environ.get("RSS_REDIS_URL") or "redis://127.0.0.1:6379/0"


def address_for(name: str, subnet: str, gateway: str | None) -> str:
    """The fixed address of scorer ``name`` on a network of ``subnet``: the same for the same name, so its URL
    outlives its container (a hash collision is refused by the engine, and `up` says which scorer has it)."""
    net = ipaddress.ip_network(subnet)
    usable = net.num_addresses - 2  # not the network's own address nor its broadcast
    if usable < 4:
        raise ScorerError(f"network subnet {subnet} is too small for fixed addresses")
    offset = 1 + int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % usable
    address = net.network_address + offset
    if gateway and str(address) == gateway.split("/")[0]:
        address = net.network_address + 1 + offset % usable
    return str(address)


def scorer_network(client: Any, name: str) -> tuple[Any, bool]:
    """The network and whether it is one `up` made (fixed addresses); `rss-scorers` is created when missing."""
    import docker

    try:
        network = client.networks.get(name)
    except docker.errors.NotFound:
        if name != DEFAULT_NETWORK:
            raise ScorerError(f"no Docker network {name!r} (`docker network ls`; compose names its network "
                              "<project>_default, e.g. rss_default)") from None
        network = create_network(client, name)
    owned = (network.attrs.get("Labels") or {}).get(LABEL_NETWORK) == "1"
    return network, owned


def create_network(client: Any, name: str) -> Any:
    """An internal bridge network with a subnet of its own: a fixed address needs one the user configured, so the
    subnet the engine's pools hand out is taken and the network made again with it named."""
    import docker

    probe = client.networks.create(name, driver="bridge", internal=True)
    config = probe.attrs["IPAM"]["Config"][0]
    probe.remove()
    ipam = docker.types.IPAMConfig(pool_configs=[
        docker.types.IPAMPool(subnet=config["Subnet"], gateway=config.get("Gateway"))])
    network = client.networks.create(name, driver="bridge", internal=True, ipam=ipam, labels={LABEL_NETWORK: "1"})
    log.info("created network %s (%s, internal: no way out of it)", name, config["Subnet"])
    return network


def scorers(client: Any, name: str | None = None) -> list[Any]:
    """Our containers (label rss.scorer), running or not; only ``name``'s when given."""
    label = f"{LABEL}={name}" if name else LABEL
    return client.containers.list(all=True, filters={"label": label})


def one_scorer(client: Any, name: str) -> Any:
    container_name(name)
    found = scorers(client, name)
    if not found:
        raise ScorerError(f"no scorer {name!r} (rss scorer ls lists them)")
    return found[0]


# --- the runs' own allowlists --------------------------------------------------------------------------------

def allow_runs(url: str, redis: str, runs: tuple[str, ...], add: bool) -> None:
    """Add ``url`` to (or remove it from) each run's own endpoint allowlist, in the service's Redis."""
    try:
        import redis as redis_py
    except ImportError:
        raise ScorerError("--run needs redis-py: pip install redis (`pip install -e '.[system]'` installs it)") \
            from None
    client = redis_py.Redis.from_url(redis, socket_timeout=10, socket_connect_timeout=10)
    try:
        with client.pipeline(transaction=True) as pipe:
            for run_id in runs:
                (pipe.sadd if add else pipe.srem)(keys.run_endpoint_allow(run_id), url)
            pipe.execute()
        if add:
            for run_id in runs:
                config = client.hget(keys.run(run_id), "config")
                endpoint = json.loads(config).get("endpoint") if config else None
                if config and endpoint != url:
                    log.warning("run %s is registered already, with endpoint %r: the entry admits %s, which it "
                                "does not name", run_id, endpoint, url)
    except redis_py.RedisError as exc:
        raise ScorerError(f"the service's Redis refused or did not answer ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); pass --redis-url (or set RSS_REDIS_URL) as the service has it") \
            from None
    finally:
        client.close()


# --- the commands ----------------------------------------------------------------------------------------------

def check_up(args: UpArgs) -> dict[str, str]:
    """The environment of ``args``; ScorerError on a flag that cannot work."""
    container_name(args.name)
    for run_id in args.run:
        if not RUN_ID.fullmatch(run_id):
            raise ScorerError(f"--run {run_id!r} is not a run id (letters, digits and _.-, up to 64)")
    bad = [e for e in args.env if not ENV_ENTRY.fullmatch(e)]
    if bad:
        raise ScorerError(f"--env {bad[0]!r} is not KEY=VALUE")
    if not 1 <= args.port <= 65535:
        raise ScorerError(f"--port {args.port} is not a port")
    if not args.path.startswith("/") or not args.health_path.startswith("/"):
        raise ScorerError("--path and --health-path start with /")
    if args.cpus <= 0 or args.pids < 16 or args.timeout_s <= 0:
        raise ScorerError("--cpus and --timeout-s must be positive, --pids at least 16")
    return dict(e.split("=", 1) for e in args.env)


def up(args: UpArgs) -> str:
    """Start the scorer, wait for its health endpoint, allow it for ``args.run``; its URL."""
    import docker

    environment = check_up(args)
    client = engine()
    try:
        name = container_name(args.name)
        existing = scorers(client, args.name)
        if existing:
            raise ScorerError(f"scorer {args.name!r} exists ({existing[0].status}): rss scorer down {args.name} "
                              "first")
        try:
            client.images.get(args.image)
        except docker.errors.ImageNotFound:
            raise ScorerError(f"image {args.image!r} is not on this engine: `docker build -t {args.image} ...` "
                              "(or `docker pull` it) first") from None
        network, owned = scorer_network(client, args.network)
        endpoint_config = None
        if owned:
            ipam = network.attrs["IPAM"]["Config"][0]
            address = address_for(args.name, ipam["Subnet"], ipam.get("Gateway"))
            taken = [c for c in network.attrs.get("Containers", {}).values()
                     if c.get("IPv4Address", "").split("/")[0] == address]
            if taken:
                raise ScorerError(f"address {address} of scorer {args.name!r} is taken by {taken[0]['Name']} on "
                                  f"{args.network}: choose another name")
            endpoint_config = {args.network: client.api.create_endpoint_config(ipv4_address=address)}
            host = address
        else:
            host = name
        url = f"http://{host}:{args.port}{args.path}"
        container = client.containers.run(
            args.image, name=name, detach=True, environment=environment,
            labels={LABEL: args.name, LABEL_URL: url, LABEL_RUNS: json.dumps(list(args.run))},
            network=args.network, networking_config=endpoint_config,
            nano_cpus=int(args.cpus * 1e9), mem_limit=args.memory, memswap_limit=args.memory,
            pids_limit=args.pids, read_only=args.read_only,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={args.tmpfs_size}"},
            cap_drop=["ALL"], security_opt=["no-new-privileges"], restart_policy={"Name": "unless-stopped"})
        try:
            container.reload()
            reachable = container.attrs["NetworkSettings"]["Networks"][args.network]["IPAddress"]
            health = f"http://{reachable}:{args.port}{args.health_path}"
            seconds = wait_healthy(container, health, args.timeout_s)
            log.info("scorer %s (%s) healthy after %.1f s at %s", args.name, args.image, seconds, url)
            if args.run:
                allow_runs(url, redis_url(args.redis_url), args.run, add=True)
                log.info("allowed %s for run%s %s only", url, "s" if len(args.run) > 1 else "", ", ".join(args.run))
        except BaseException:
            container.remove(force=True)
            raise
        return url
    finally:
        client.close()


def wait_healthy(container: Any, url: str, timeout_s: float) -> float:
    """Seconds until ``url`` answered 200; ScorerError with the container's last output if it never did."""
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < timeout_s:
        container.reload()
        if container.status in ("exited", "dead") or container.attrs["State"].get("Restarting"):
            last = f"the container {container.status} (exit code {container.attrs['State'].get('ExitCode')})"
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (our own http URL)
                if answer.status == 200:
                    return time.monotonic() - start
                last = f"{answer.status}"
        except urllib.error.HTTPError as exc:
            last = f"{exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.5)
    output = container.logs(tail=50).decode(errors="replace")
    raise ScorerError(f"the scorer's {url} did not answer 200 within {timeout_s:g} s (last: {last}); its last "
                      f"output:\n{output}")


def ls(args: LsArgs) -> list[dict[str, Any]]:
    client = engine()
    try:
        rows = [{"name": c.labels[LABEL], "status": c.status, "image": ",".join(c.image.tags) or c.image.short_id,
                 "url": c.labels.get(LABEL_URL, ""), "runs": json.loads(c.labels.get(LABEL_RUNS) or "[]"),
                 "container": c.name} for c in scorers(client)]
    finally:
        client.close()
    return sorted(rows, key=lambda row: row["name"])


def logs(args: LogsArgs) -> None:
    client = engine()
    try:
        container = one_scorer(client, args.name)
        if args.follow:
            for chunk in container.logs(stream=True, follow=True, tail=args.tail or "all"):
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
        else:
            sys.stdout.write(container.logs(tail=args.tail or "all").decode(errors="replace"))
    finally:
        client.close()


def down(args: DownArgs) -> None:
    client = engine()
    try:
        container = one_scorer(client, args.name)
        runs = tuple(json.loads(container.labels.get(LABEL_RUNS) or "[]"))
        if runs and not args.keep_allow:  # first: a Redis that does not answer leaves the container up, to retry
            allow_runs(container.labels[LABEL_URL], redis_url(args.redis_url), runs, add=False)
            log.info("removed %s from the allowlist of %s", container.labels[LABEL_URL], ", ".join(runs))
        container.stop(timeout=args.timeout_s)
        container.remove(force=True)
        log.info("scorer %s stopped and removed", args.name)
    finally:
        client.close()


def table(rows: list[dict[str, Any]]) -> str:
    header = ("NAME", "STATUS", "IMAGE", "URL", "RUNS")
    cells = [header] + [(r["name"], r["status"], r["image"], r["url"], ",".join(r["runs"]) or "-") for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: rss scorer {{{','.join(COMMANDS)}}} [options]\n\n"  # noqa: T201
              "External scorers as containers: up IMAGE starts one and prints its URL; ls, logs NAME, down NAME.\n"
              "Run `rss scorer <command> --help` for the options of each.")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        return dispatch(command, rest)
    except ScorerError:
        raise
    except Exception as exc:  # the engine's refusals (docker.errors.APIError...) as one line, not a traceback
        if type(exc).__module__.startswith("docker"):
            raise ScorerError(f"the Docker engine refused: {getattr(exc, 'explanation', None) or exc}") from None
        raise


def dispatch(command: str, rest: list[str]) -> int:
    prog = f"rss scorer {command}"
    if command == "up":
        print(up(tyro.cli(UpArgs, args=rest, prog=prog)))  # noqa: T201 (the URL alone on stdout, for scripts)
    elif command == "ls":
        args = tyro.cli(LsArgs, args=rest, prog=prog)
        rows = ls(args)
        print(json.dumps(rows) if args.json else table(rows))  # noqa: T201
    elif command == "logs":
        logs(tyro.cli(LogsArgs, args=rest, prog=prog))
    elif command == "down":
        down(tyro.cli(DownArgs, args=rest, prog=prog))
    else:
        raise ScorerError(f"rss scorer needs one of: {', '.join(COMMANDS)}")
    return 0
