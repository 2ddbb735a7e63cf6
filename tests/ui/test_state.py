"""Issue 15, item 4 in a real browser against a real `rss serve` and Redis: what the page is doing is
visible. An answer the service is slow to take shows a spinner, then a message with Retry (the service
hung with SIGSTOP); keys typed ahead are refused where the rater sees them; the bar stays one line from
1024x600 to 1920x1080 as its counters grow; a zoom survives a resize of the window."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from rss_core import codec
from tests.helpers.client import client, read_results, register, wait_status
from tests.helpers.factories import episode, label_of, noisy
from tests.helpers.ui import canvas_at, sign_in, ui_service, wait_task

RATED = "document.querySelector('#rated').textContent"

# In the page: the performance.now() at which #pending was first shown, in window.__pendingShown.
WATCH_PENDING_JS = """
() => {
  const node = document.querySelector('#pending');
  new MutationObserver((_, observer) => {
    if (!node.hidden) { window.__pendingShown = performance.now(); observer.disconnect(); }
  }).observe(node, { attributes: true });
}
"""

# In the page: every element of the bar, {id or text, top, height, clipped}, and the bar's own height.
BAR_JS = """
() => {
  const bar = document.querySelector('header.bar');
  const items = [...bar.querySelectorAll(':scope > *')].filter((e) => e.offsetParent !== null && e.textContent.trim());
  return {
    height: bar.getBoundingClientRect().height,
    overflowing: bar.scrollWidth > bar.clientWidth,
    items: items.map((e) => ({
      text: e.textContent.trim(), top: e.getBoundingClientRect().top, height: e.getBoundingClientRect().height,
      clipped: e.scrollWidth > e.clientWidth + 1,
      right: e.getBoundingClientRect().right,
    })),
  };
}
"""


@pytest.fixture
def learner(service_url: str, db) -> Iterator[httpx.Client]:
    with client(service_url) as c:
        yield c


def post(learner: httpx.Client, run_id: str, masks: list[np.ndarray]) -> str:
    """Post one image-level episode and wait until its tasks are queued (so tasks queue in posting order)."""
    response = learner.post("/v1/episodes", json=episode(run_id, [codec.raw_mask(m) for m in masks]))
    assert response.status_code == 202, response.text
    episode_id = response.json()["episode_id"]
    wait_status(learner, episode_id, ("waiting_for_rater",))
    return episode_id


def test_a_pending_answer_shows_a_spinner_then_a_message_with_retry_and_typing_ahead_is_refused(
        page, redis_server, db) -> None:
    """With the service stopped (SIGSTOP), an answer shows no spinner for its first ~300 ms, then one; the
    8 and Enter typed meanwhile are refused beside the task (the 8 does not land on the next task); after a
    few seconds a message offers Retry. Retry, the service continued: the answer counts once and the next
    task shows."""
    with ui_service(redis_server, lease_s=60) as proc, client(proc.url) as learner:
        register(learner, "ui-hang", scorer="human")
        post(learner, "ui-hang", [label_of()])
        post(learner, "ui-hang", [noisy(label_of(), 3)])
        sign_in(page, proc.url)
        first = wait_task(page, "score")
        page.wait_for_timeout(500)  # the second task prefetched
        page.evaluate(WATCH_PENDING_JS)
        os.kill(proc.popen.pid, signal.SIGSTOP)
        try:
            page.keyboard.press("7")
            page.keyboard.press("Enter")
            pressed = time.monotonic()
            pending = page.locator("#pending")
            pending.wait_for(state="visible", timeout=3000)
            after_ms = page.evaluate(
                "window.__pendingShown - performance.getEntriesByName('rss:answer').at(-1).startTime")
            assert 250 <= after_ms < 1500, after_ms
            assert f"Sending your answer to task {first}" in pending.inner_text()
            # typed ahead while the answer is pending: each key refused, where the rater looks
            page.keyboard.press("8")
            page.keyboard.press("Enter")
            refused = page.locator("#refused")
            assert refused.is_visible() and "still being sent" in refused.inner_text()
            assert refused.get_attribute("data-count") == "2"
            assert page.locator("#score-value").inner_text() == "7"
            retry = page.locator(".message.error button.retry")
            retry.wait_for(timeout=10_000)
            assert time.monotonic() - pressed >= 3.5  # "a few seconds", not at once
            assert "has not answered" in page.locator(".message.error").inner_text()
            assert page.evaluate("document.body.dataset.taskId") == first and page.evaluate(RATED) == "0"
            retry.click()
            page.wait_for_function("document.querySelector('#pending-text').textContent.startsWith('Sending again')",
                                   timeout=2000)
            assert pending.is_visible()
        finally:
            os.kill(proc.popen.pid, signal.SIGCONT)
        second = wait_task(page, "score", other_than=first)
        assert page.locator("#score-value").inner_text() == "–"  # nothing typed ahead reached it
        page.wait_for_function(f"{RATED} === '1'")
        assert pending.is_hidden() and page.locator(".message.error").count() == 0
        (result,) = read_results(db, "ui-hang", 1)
        assert result["reward"] == pytest.approx(0.7)
        assert learner.get("/v1/stats").json()["raters"]["alice"]["rated"] == 1  # the retry counted once
        page.keyboard.press("3")
        page.keyboard.press("Enter")
        page.wait_for_function(f"{RATED} === '2'")
        assert page.evaluate("document.body.dataset.taskId") == second


def test_keys_typed_before_a_task_is_shown_are_refused_visibly(page, service_url, db) -> None:
    sign_in(page, service_url)
    page.wait_for_function("document.body.dataset.state === 'waiting'")
    page.keyboard.press("7")
    page.keyboard.press("Enter")
    refused = page.locator("#refused")
    assert refused.is_visible() and "no task is shown yet" in refused.inner_text()
    assert refused.get_attribute("data-count") == "2"


@pytest.mark.parametrize("size", [(1024, 600), (1920, 1080)])
def test_the_bar_stays_one_line_as_its_counters_grow(page, service_url, learner, db, size) -> None:
    """At 1024x600 the bar wrapped from the start, and at 1280x720 once the counters grew. Now every item
    sits on one line, none cut off, and the bar's height does not change when the counts reach four digits."""
    page.set_viewport_size({"width": size[0], "height": size[1]})
    register(learner, "ui-bar", scorer="human")
    post(learner, "ui-bar", [label_of()])
    sign_in(page, service_url)
    wait_task(page, "score")
    page.wait_for_function("document.querySelector('#queue').textContent.includes('for you')")
    small = page.evaluate(BAR_JS)
    # the counters grown: this session's (saved in the tab) and the queue's (as the service would say)
    big = {"waiting": 9999, "leased": 99, "available": 9999, "skipped_later": 99}
    page.route("**/v1/tasks/queue", lambda route: route.fulfill(json=big))
    page.evaluate("""() => { const s = JSON.parse(sessionStorage.getItem('rss.session'));
        Object.assign(s, { rated: 9999, skipped: 999, startedAt: Date.now() - 101 * 60000 });
        sessionStorage.setItem('rss.session', JSON.stringify(s)); }""")
    page.reload()
    wait_task(page, "score")
    page.wait_for_function("document.querySelector('#queue').textContent.startsWith('9999 for you')")
    assert page.locator("#progress").inner_text().startswith("9999 answered")
    assert page.locator("#rate").inner_text() == "99.0"
    grown = page.evaluate(BAR_JS)
    for bar in (small, grown):
        tops = {round(i["top"] + i["height"] / 2) for i in bar["items"]}
        assert max(tops) - min(tops) <= 2, f"the bar wraps at {size}: {json.dumps(bar['items'])}"
        assert not bar["overflowing"] and not [i["text"] for i in bar["items"] if i["clipped"]]
        assert max(i["right"] for i in bar["items"]) <= size[0]
    assert grown["height"] == small["height"] < 48
    assert "9999 for you · 99 later" in page.locator("header.bar").inner_text()


def test_a_zoom_survives_a_resize_of_the_window(page, service_url, learner, db) -> None:
    """A resize fitted the image again, losing the rater's zoom and pan. Now the zoom factor stays, and the
    image point at the canvas's centre stays at its centre (the same pixels are drawn there); a view
    nobody zoomed is fitted to the new size."""
    register(learner, "ui-resize", scorer="human")
    post(learner, "ui-resize", [noisy(label_of(), 2)])
    sign_in(page, service_url)
    wait_task(page, "score")

    def view() -> tuple[float, float, float, dict]:
        box = page.locator("#canvas").bounding_box()
        scale, x, y = (float(page.get_attribute("#canvas", f"data-{k}")) for k in ("scale", "x", "y"))
        return scale, (box["width"] / 2 - x) / scale, (box["height"] / 2 - y) / scale, box

    fitted, *_ = view()
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.6)
    page.mouse.wheel(0, -500)
    page.wait_for_function(f"Number(document.querySelector('#canvas').dataset.scale) > {fitted * 1.5}")
    scale, cx, cy, box = view()
    centre = lambda b: [(b["x"] + b["width"] / 2 + dx, b["y"] + b["height"] / 2 + dy)  # noqa: E731
                        for dx in (-20, 0, 20) for dy in (-20, 0, 20)]
    before = canvas_at(page, centre(box))
    for width, height in ((1300, 820), (1024, 600)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_function(f"document.querySelector('#canvas').getBoundingClientRect().width < {box['width'] - 50}"
                               if width < 1100 else
                               f"document.querySelector('#canvas').getBoundingClientRect().width > {box['width'] + 50}")
        page.wait_for_timeout(200)
        now_scale, now_cx, now_cy, now_box = view()
        assert now_scale == scale and now_box["width"] != box["width"]
        assert abs(now_cx - cx) < 1e-6 and abs(now_cy - cy) < 1e-6
        np.testing.assert_array_equal(canvas_at(page, centre(now_box)), before)
    page.keyboard.press("r")  # reset: fitted again, and a fitted view follows the window
    page.set_viewport_size({"width": 1300, "height": 820})
    page.wait_for_timeout(300)
    refit, *_, refit_box = view()
    assert refit == pytest.approx(min(refit_box["width"], refit_box["height"]) / 64)
