"""`torchrun --nproc-per-node 2 rss train --reward-source remote`: two gloo ranks on CPU training through a real
`rss serve` and redis-server, as the compose learner does on several GPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import redis

from rss.procs import RedisProcess
from tests.helpers import REPO
from tests.helpers.cli import SMALL
from tests.helpers.service import DATABASES, LEARNER_TOKEN, service_env, start_service

STEPS, BATCH, SAMPLES = 4, 4, 4


def test_two_ranks_train_through_the_service_with_one_syncan_scale(redis_server: RedisProcess, tmp_path: Path) -> None:
    """Each rank registers a run of its own (`<run>-rank<r>`), so neither reads the other's results; SyncAN
    all-reduces its statistics, so both ranks divide by the same std although their rewards differ."""
    url = redis_server.db_url(DATABASES["ddp"])
    redis.Redis.from_url(url).flushdb()
    env = service_env(redis_server, shapes_size=32, shapes_length=64, redis_url=url)
    out = tmp_path / "ddp"
    flags = [*SMALL, "--steps", str(STEPS), "--eval-every", str(STEPS), "--batch-size", str(BATCH),
             "--samples", str(SAMPLES), "--device", "cpu", "--out", str(out), "--reward-source", "remote",
             "--redis-url", url, "--reward-timeout-s", "30"]
    with start_service(env) as service:
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
             "-m", "rss.cli", "train", *flags, "--service-url", service.url],
            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "RSS_LEARNER_TOKEN": LEARNER_TOKEN},
            capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        runs = {r: httpx.get(f"{service.url}/v1/runs/ddp-rank{r}", timeout=10,
                             headers={"Authorization": f"Bearer {LEARNER_TOKEN}"}) for r in (0, 1)}

    ranks = [[json.loads(line) for line in (out / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert [s["step"] for s in ranks[0]] == [s["step"] for s in ranks[1]] == list(range(1, STEPS + 1))
    for a, b in zip(*ranks, strict=True):
        assert a["adv_std"] > 0 and a["adv_std"] == b["adv_std"], (a, b)
    # the ranks scored different images: a per-rank std would differ, the synchronised one does not
    assert any(a["reward"] != b["reward"] for a, b in zip(*ranks, strict=True))
    for rank in ranks:  # every reward reached the rank that posted it, once
        counts = rank[-1]["rewards"]
        assert counts["posted"] == counts["applied"] == STEPS * BATCH * SAMPLES, counts
        assert counts.get("stale", 0) == counts.get("late", 0) == counts.get("duplicates", 0) == 0, counts
    assert all(response.status_code == 200 for response in runs.values()), {r: v.text for r, v in runs.items()}
    client = redis.Redis.from_url(url)
    for r in (0, 1):
        assert client.xpending(f"rss:v1:results:ddp-rank{r}", "learner")["pending"] == 0
    assert not client.exists("rss:v1:results:ddp")
    final = json.loads((out / "final.json").read_text())  # rank 0 writes the report and the checkpoint
    assert final["steps"] == STEPS and (out / "checkpoint.pt").exists()
