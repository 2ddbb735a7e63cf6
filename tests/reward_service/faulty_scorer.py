"""An external scorer that misbehaves on demand, for the `http` scorer's tests; the path picks the fault.

``/ok`` scores like examples/external_scorer; ``/fail`` always answers 500; ``/garbage`` answers 200
with a body that is not JSON; ``/slow?delay=S`` waits S seconds (5) and then scores; ``/flaky?fails=N``
answers 500 to the first N calls of each episode_id (counted in this process) and then scores;
``/wrong-count`` scores and adds one reward (or map) too many. ``/sometimes?fail_every=N&delay=S``
numbers episodes as it first sees them and fails every call of every N-th one, taking turns between a
500, garbage and a timeout (waits S seconds, 2); ``GET /calls`` says how often each episode was called
and which fault it got.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

from fastapi import FastAPI, HTTPException, Response
from starlette.concurrency import run_in_threadpool

from examples.external_scorer.app import score_episode
from rss_core.schemas import ExternalScoreRequest, ExternalScoreResponse, Health

app = FastAPI(title="faulty external scorer")
flaky_calls: Counter[str] = Counter()
FAULTS = ("500", "garbage", "timeout")
sometimes_calls: Counter[str] = Counter()
sometimes_faults: dict[str, str] = {}  # episode id -> its fault ("" for none), in the order first seen
sometimes_lock = threading.Lock()


@app.get("/health")
def read_health() -> Health:
    return Health()


@app.post("/ok")
def score_ok(request: ExternalScoreRequest) -> ExternalScoreResponse:
    return score_episode(request)


@app.post("/fail")
def score_fail() -> None:
    raise HTTPException(status_code=500, detail="Always fails.")


@app.post("/garbage")
def score_garbage() -> Response:
    return Response(content=b"<html>not json</html>", media_type="application/json")


@app.post("/slow")
async def score_slow(request: ExternalScoreRequest, delay: float = 5.0) -> ExternalScoreResponse:
    await asyncio.sleep(delay)
    return await run_in_threadpool(score_episode, request)


@app.post("/flaky")
def score_flaky(request: ExternalScoreRequest, fails: int = 1) -> ExternalScoreResponse:
    flaky_calls[request.episode_id] += 1
    if flaky_calls[request.episode_id] <= fails:
        raise HTTPException(status_code=500, detail=f"Failing call {flaky_calls[request.episode_id]} of {fails}.")
    return score_episode(request)


@app.post("/wrong-count")
def score_wrong_count(request: ExternalScoreRequest) -> ExternalScoreResponse:
    answer = score_episode(request)
    if answer.rewards is not None:
        answer.rewards.append(0.5)
    if answer.reward_maps is not None:
        answer.reward_maps.append(answer.reward_maps[-1])
    return answer


@app.post("/sometimes")
async def score_sometimes(request: ExternalScoreRequest, fail_every: int = 3, delay: float = 2.0) -> Response:
    with sometimes_lock:
        if request.episode_id not in sometimes_faults:
            seq = len(sometimes_faults) + 1
            sometimes_faults[request.episode_id] = FAULTS[(seq // fail_every - 1) % 3] if seq % fail_every == 0 else ""
        sometimes_calls[request.episode_id] += 1
        fault = sometimes_faults[request.episode_id]
    if fault == "500":
        raise HTTPException(status_code=500, detail="Failing this episode.")
    if fault == "garbage":
        return Response(content=b"<html>not json</html>", media_type="application/json")
    if fault == "timeout":
        await asyncio.sleep(delay)
    answer = await run_in_threadpool(score_episode, request)
    return Response(content=answer.model_dump_json(), media_type="application/json")


@app.get("/calls")
def read_calls() -> dict:
    return {"calls": dict(sometimes_calls), "faults": dict(sometimes_faults)}
