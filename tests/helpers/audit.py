"""What happened to the rewards: the learner's ledger of applied updates, and the workers' queue drained."""

from __future__ import annotations

import time
from pathlib import Path

from learner.remote import read_jsonl


def ledger(out: Path) -> list[dict]:
    """The learner's `applied.jsonl` in ``out``: one entry per update (none before the first)."""
    return read_jsonl(out / "applied.jsonl")


def wait_until_scored(client, timeout: float = 60) -> None:
    """Until the workers have read and finished every scoring job queued in ``client``'s database, so an
    audit of a results stream sees every result the service will ever write for what it accepted."""
    deadline = time.monotonic() + timeout
    while True:
        group = next(g for g in client.xinfo_groups("rss:v1:jobs") if g["name"] == b"scorers")
        last = client.xinfo_stream("rss:v1:jobs")["last-generated-id"]
        if group["pending"] == 0 and group["last-delivered-id"] == last:
            return
        assert time.monotonic() < deadline, f"scoring jobs still queued or held after {timeout} s: {group}"
        time.sleep(0.1)
