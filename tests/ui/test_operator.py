"""The operator page (/ui/runs) in a real browser against a real `rss serve`: a learner token signs in, the
curve canvas shows every posted evaluation where its step and value put it, in its legend's colour, the figures
are the service's, and the gallery draws the posted masks in the overlay palette."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from rss_core import codec
from tests.helpers.client import answer, client, lease, rater, register
from tests.helpers.factories import label_of, noisy
from tests.helpers.service import LEARNER_TOKEN, RATERS
from tests.helpers.ui import shoot

STEPS = list(range(0, 3001, 100))
SHOWN = ("val_miou", "val_pixel_acc", "reward_mean")  # drawn at first (annotator_ui/src/operator/main.js)
GALLERY = [f"train/{i:06d}" for i in range(4)]
OBJECT_COLOURS = [(230, 159, 0), (86, 180, 233), (204, 121, 167), (240, 228, 66)]  # annotator_ui/src/overlay.js

# In the page: the RGBA of the curve canvas at each (x, y) css px of the canvas, and its data attributes.
CURVE_AT_JS = """
async (points) => {
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const canvas = document.querySelector('#curve');
  const sx = canvas.width / canvas.clientWidth, sy = canvas.height / canvas.clientHeight;
  const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  const at = points.map(([x, y]) => {
    const i = 4 * (Math.floor(y * sy) * canvas.width + Math.floor(x * sx));
    return Array.from(data.subarray(i, i + 4));
  });
  return { at, ...canvas.dataset };
}
"""

# In the page: the RGBA of one gallery pane at the centre of each mask pixel (a 64 x 64 mask fitted to the pane).
PANE_JS = """
([image, mask, size]) => {
  const canvas = document.querySelector(`canvas[data-image="${image}"][data-mask="${mask}"]`);
  const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  const cell = canvas.width / size, out = [];
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) {
    const i = 4 * (Math.floor((y + 0.5) * cell) * canvas.width + Math.floor((x + 0.5) * cell));
    out.push([data[i], data[i + 1], data[i + 2]]);
  }
  return out;
}
"""


def curve(step: int) -> dict[str, float]:
    miou = 0.15 + 0.7 * (1 - math.exp(-step / 800))
    return {"val_miou": round(miou, 4), "val_pixel_acc": round(min(0.99, miou + 0.12), 4),
            "reward_mean": round(miou - 0.2, 4), "loss": round(1.5 * (1 - miou), 4)}


@pytest.fixture
def learner(service_url: str, db) -> Iterator[httpx.Client]:
    with client(service_url) as c:
        yield c


def sign_in_operator(page, url: str, token: str = LEARNER_TOKEN) -> None:
    page.goto(f"{url}/ui/runs")
    page.fill("#token", token)
    page.press("#token", "Enter")


def next_refresh(page) -> None:
    """Until the page finished a refresh that started after now."""
    seen = int(page.evaluate("Number(document.body.dataset.refreshed || 0)"))
    page.wait_for_function(f"Number(document.body.dataset.refreshed || 0) >= {seen + 2}", timeout=20_000)


def shown_figures(page) -> dict[str, str]:
    ids = ["last-step", "last-miou", "pending-pixels", "results-unread", "results-unacked", "median-seconds", "jobs",
           "tasks", "dead-letters", "results-rate", "ratings-rate", "agreement", "inter-rater"]
    return {i: page.locator(f"#{i}").inner_text() for i in ids}


def expected_figures(o: dict) -> dict[str, str]:
    """What the page must show for overview ``o`` (the formats annotator_ui/src/operator/main.js writes)."""
    s = o["stats"]
    miou = curve(o["last_step"])["val_miou"]
    return {
        "last-step": str(o["last_step"]), "last-miou": f"{miou:.4f}", "pending-pixels": str(o["pending_pixels"]),
        "results-unread": str(o["results_unread"]), "results-unacked": str(o["results_unacked"]),
        "median-seconds": f"{o['median_rater_seconds']:.1f} s",
        "jobs": f"{s['jobs_waiting']} / {s['jobs_pending']}", "tasks": f"{s['tasks_waiting']} / {s['leases_pending']}",
        "dead-letters": str(s["dead_letters"]),
        "results-rate": f"{s['results_last_minute']} / {s['results_per_minute_5m']:.1f}",
        "ratings-rate": f"{o['ratings_last_minute']} / {o['ratings_per_minute_5m']:.1f}",
        "agreement": "not recorded", "inter-rater": "not recorded",
    }


def test_the_operator_page_draws_the_curve_and_shows_the_services_figures(service_url, learner, page) -> None:
    register(learner, "z-gt-run")
    register(learner, "seg", scorer="human")
    for step in STEPS:
        gallery = [{"image_id": image_id, "shape": [64, 64], "argmax": codec.png_mask(label_of(image_id)).model_dump(),
                    "sampled": codec.png_mask(noisy(label_of(image_id), n, 0.15)).model_dump()}
                   for n, image_id in enumerate(GALLERY)] if step == STEPS[-1] else None
        posted = learner.post("/v1/runs/seg/metrics", json={"step": step, "metrics": curve(step), "gallery": gallery})
        assert posted.status_code == 200, posted.text
    for seed in (1, 2):  # two score tasks: one answered (4.5 s on screen), one waiting
        mask = codec.raw_mask(noisy(label_of(GALLERY[0]), seed)).model_dump()
        response = learner.post("/v1/episodes", json={"run_id": "seg", "image_id": GALLERY[0], "level": "image",
                                                      "policy_version": 3000, "samples": [mask]})
        assert response.status_code == 202, response.text
    with rater(service_url, "alice") as alice:
        task = lease(alice, wait_s=10)
        assert answer(alice, task, score=0.7, rater_seconds=4.5).status_code == 200
    deadline = time.monotonic() + 30
    while learner.get("/v1/runs/seg/overview").json()["results_unread"] < 1:  # the answer's result is written
        assert time.monotonic() < deadline
        time.sleep(0.1)

    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in_operator(page, service_url, RATERS["alice"])  # a rater token sees none of this
    page.wait_for_selector("text=that is a rater token; this page needs a learner token")
    assert page.locator("#dashboard").is_hidden()
    page.fill("#token", LEARNER_TOKEN)
    page.press("#token", "Enter")
    page.wait_for_function("document.body.dataset.state === 'dashboard' && document.body.dataset.refreshed")
    assert page.locator("#run-select option").all_inner_texts() == ["seg", "z-gt-run"]
    assert page.locator("#run-select").input_value() == "seg"  # the newest run, at first

    # The figures are the service's, as the page formats them; the page refreshes by itself.
    for _ in range(5):
        next_refresh(page)
        overview = learner.get("/v1/runs/seg/overview").json()
        if shown_figures(page) == expected_figures(overview):
            break
    assert shown_figures(page) == expected_figures(overview)
    assert overview["median_rater_seconds"] == 4.5 and overview["stats"]["tasks_waiting"] == 1
    assert overview["pending_pixels"] == 64 * 64 and overview["last_step"] == STEPS[-1]
    assert page.locator("#raters tbody tr").first.inner_text().split("\t")[:3] == ["alice", "1", "0"]

    # Every posted point is drawn where its step and value put it, in its legend swatch's colour.
    legend = {}
    for name in SHOWN:
        swatch = page.locator(f"#curve-legend li:has(input[data-series='{name}']) .swatch")
        legend[name] = tuple(int(v) for v in re.findall(r"\d+", swatch.evaluate(
            "(node) => getComputedStyle(node).backgroundColor")))
        assert page.locator(f"input[data-series='{name}']").is_checked()
    assert not page.locator("input[data-series='loss']").is_checked()  # listed, not drawn at first

    def drawn() -> dict[str, np.ndarray]:
        spots = {name: [] for name in SHOWN}
        geometry = page.evaluate(CURVE_AT_JS, [])
        left, top, width, height = (float(v) for v in geometry["box"].split(","))
        x0, x1, y0, y1 = (float(geometry[k]) for k in ("x0", "x1", "y0", "y1"))
        for name in SHOWN:
            for step in STEPS:
                spots[name].append((left + (step - x0) / (x1 - x0) * width,
                                    top + (1 - (curve(step)[name] - y0) / (y1 - y0)) * height))
        colours = page.evaluate(CURVE_AT_JS, [p for name in SHOWN for p in spots[name]])["at"]
        rgb = np.array(colours, np.int64)[:, :3].reshape(len(SHOWN), len(STEPS), 3)
        return {name: rgb[i] for i, name in enumerate(SHOWN)}

    for name, rgb in drawn().items():
        assert (rgb == legend[name]).all(), (name, rgb[(rgb != legend[name]).any(1)])
    page.locator("input[data-series='val_pixel_acc']").uncheck()
    hidden = drawn()
    assert not (hidden["val_pixel_acc"] == legend["val_pixel_acc"]).all(1).any()  # gone from the canvas
    assert (hidden["val_miou"] == legend["val_miou"]).all()
    page.locator("input[data-series='val_pixel_acc']").check()

    # The gallery: per image, the argmax pane draws a pixel of class c nearest class c's colour (over the dimmed image
    # a mask of the image's own objects), and the sampled pane is the same picture but where the two masks differ.
    assert page.locator("#gallery figure").count() == 4
    for n, image_id in enumerate(GALLERY):
        argmax, sampled = label_of(image_id), noisy(label_of(image_id), n, 0.15)
        panes = {name: np.array(page.evaluate(PANE_JS, [image_id, name, 64]), np.float64).reshape(64, 64, 3)
                 for name in ("argmax", "sampled")}
        objects = argmax > 0  # each mask pixel is a cell drawn nearest-neighbour: its centre shows its class
        nearest = np.abs(panes["argmax"][objects][:, None] - np.array(OBJECT_COLOURS[:3])[None]).sum(-1).argmin(1)
        assert objects.sum() > 20 and (nearest + 1 == argmax[objects]).mean() > 0.95, image_id
        differ = np.abs(panes["argmax"] - panes["sampled"]).sum(-1)
        assert (differ[argmax == sampled] <= 3).all() and (differ[argmax != sampled] > 30).all(), image_id
    shoot(page, "operator")

    page.locator("#signout").click()
    assert page.evaluate("document.body.dataset.state") == "signed-out"
    assert page.evaluate("sessionStorage.getItem('rss.operator')") is None
