"""Issue 15, item 1 in a real browser against a real `rss serve` and Redis: masks a rater can read. A
lattice mask is drawn at the pixels the learner acted on (read back from the canvas at every image pixel);
the overlay palette keeps clear of the brush's paint; outline and fill+outline modes; per-class
visibility in the legend; the image's brightness and contrast."""

from __future__ import annotations

import colorsys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from rss_core import codec
from tests.helpers.client import client, register, wait_status
from tests.helpers.factories import episode, label_of, noisy
from tests.helpers.ui import canvas_at, sign_in, wait_task

PAINT = ((40, 220, 90), (255, 40, 40))  # annotator_ui/src/tasks/pixel.js: correct (1), wrong (2)
SIZE = 64  # the shapes images the UI tests' service serves

SWATCHES_JS = """() => [...document.querySelectorAll('#legend .swatch')].map(
    (s) => getComputedStyle(s).backgroundColor.match(/[0-9]+/g).slice(0, 3).map(Number))"""


@pytest.fixture
def learner(service_url: str, db) -> Iterator[httpx.Client]:
    with client(service_url) as c:
        yield c


def post(learner: httpx.Client, run_id: str, mask: np.ndarray, **extra) -> str:
    response = learner.post("/v1/episodes", json=episode(run_id, [codec.raw_mask(mask)], **extra))
    assert response.status_code == 202, response.text
    episode_id = response.json()["episode_id"]
    wait_status(learner, episode_id, ("waiting_for_rater",))
    return episode_id


def image_pixels(page) -> np.ndarray:
    """The canvas's RGBA (SIZE, SIZE, 4) at the centre of each image pixel in the fitted view (computed
    from the canvas box, not the UI's code)."""
    box = page.locator("#canvas").bounding_box()
    scale = min(box["width"], box["height"]) / SIZE
    left, top = box["x"] + (box["width"] - SIZE * scale) / 2, box["y"] + (box["height"] - SIZE * scale) / 2
    points = [(left + (x + 0.5) * scale, top + (y + 0.5) * scale) for y in range(SIZE) for x in range(SIZE)]
    return canvas_at(page, points).reshape(SIZE, SIZE, 4)


def without_overlay(page) -> np.ndarray:
    """The image alone as drawn (Space tapped: the overlay hidden, then shown again)."""
    page.keyboard.press(" ")
    image = image_pixels(page)[..., :3]
    page.keyboard.press(" ")
    return image


def drawn_classes(page, image: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Per image pixel, the class whose colour blended over ``image`` at ``alpha`` is nearest to what the
    canvas shows; -1 where the image alone is nearest (no overlay)."""
    shown = image_pixels(page)[..., :3]
    candidates = np.stack([image] + [(1 - alpha) * image + alpha * c for c in palette])
    return np.abs(candidates - shown).sum(-1).argmin(0) - 1


def boundary(mask: np.ndarray) -> np.ndarray:
    edge = np.zeros(mask.shape, bool)
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, 1:] != mask[:, :-1]
    edge[1:] |= mask[1:] != mask[:-1]
    edge[:-1] |= mask[1:] != mask[:-1]
    return edge


def test_a_lattice_mask_is_drawn_at_the_pixels_the_learner_acted_on(page, service_url, learner, db) -> None:
    """A PSR lattice of 12 x 12 pixels, one every 5 from offset (3, 2) (y, x): the learner acted on image
    pixels (3 + 5 i, 2 + 5 j). Each image pixel must show the class of its nearest lattice pixel: the
    lattice pixels their own, the cells centred on them, the strips between the lattice and the image's
    edges their outer cells', and nothing past the image. Before, each cell started at its lattice pixel:
    the top and left strips were bare and every cell sat half a stride right of and below its pixel."""
    register(learner, "ui-lattice", scorer="human")
    n, stride, (oy, ox) = 12, 5, (3, 2)
    i, j = np.mgrid[:n, :n]
    lattice = (1 + (i + 2 * j) % 3).astype(np.uint8)  # neighbours differ, no background
    post(learner, "ui-lattice", lattice, scale=n, grid_mode="grid", offset=[oy, ox])
    sign_in(page, service_url)
    wait_task(page, "score")
    palette = np.array(page.evaluate(SWATCHES_JS), np.float64)
    classes = drawn_classes(page, without_overlay(page), palette)
    # the nearest lattice pixel of each image pixel (an odd stride: never a tie)
    nearest = lambda o: np.clip(np.round((np.arange(SIZE) - o) / stride), 0, n - 1).astype(int)  # noqa: E731
    expected = lattice[np.ix_(nearest(oy), nearest(ox))]
    wrong = np.argwhere(classes != expected)
    assert len(wrong) == 0, f"{len(wrong)} image pixels show another class than their lattice pixel's: {wrong[:8]}"
    assert (classes[oy::stride, ox::stride][:n, :n] == lattice).all()  # the acted-on pixels, read directly
    # nothing past the image's right edge (the canvas is wider than the fitted image)
    box = page.locator("#canvas").bounding_box()
    scale = box["height"] / SIZE
    right = box["x"] + (box["width"] + SIZE * scale) / 2
    past = canvas_at(page, [(right + dx, box["y"] + box["height"] * f) for dx in (1, scale, 3 * scale)
                            for f in (0.1, 0.5, 0.9)])
    assert (past[:, 3] == 0).all(), "the overlay hangs past the image"


def test_the_overlay_palette_is_distinct_and_keeps_clear_of_the_paint_colours(
        page, service_url, learner, db) -> None:
    """The dataset's palette (black, dark red, dark green, olive) drew the rectangle class in the green of
    the brush's "correct" paint. The legend's colours, which the overlay draws, are far apart in colour and
    every saturated one is at least 30 degrees of hue from the paint's green and red."""
    register(learner, "ui-palette", scorer="human")
    post(learner, "ui-palette", label_of())
    sign_in(page, service_url)
    wait_task(page, "score")
    swatches = page.evaluate(SWATCHES_JS)
    assert len(swatches) == 4
    colours = np.array(swatches, np.float64)
    gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1)[np.triu_indices(len(colours), 1)]
    assert gaps.min() > 100, swatches
    hue = lambda c: colorsys.rgb_to_hsv(*(np.asarray(c) / 255))  # noqa: E731
    for colour in swatches:
        h, s, _ = hue(colour)
        for paint in PAINT:
            ph = hue(paint)[0]
            assert s < 0.25 or min(abs(h - ph), 1 - abs(h - ph)) * 360 >= 30, (colour, paint)
        assert min(np.abs(np.array(colour) - p).sum() for p in PAINT) > 150


def test_outline_and_fill_outline_modes_switch_with_m_and_the_button(page, service_url, learner, db) -> None:
    """Fill: every pixel of a shown class blended. Outline: only the pixels at a class boundary, in their
    class's colour (drawn at twice the fill's opacity); inside a region the image shows bare. Both: the
    fill, and the boundaries over it."""
    register(learner, "ui-outline", scorer="human")
    label = label_of().astype(int)
    post(learner, "ui-outline", label.astype(np.uint8))
    sign_in(page, service_url)
    wait_task(page, "score")
    palette = np.array(page.evaluate(SWATCHES_JS), np.float64)
    image = without_overlay(page)
    edge, shown = boundary(label), label > 0  # the background is hidden until the legend shows it
    fill = drawn_classes(page, image, palette)
    np.testing.assert_array_equal(fill, np.where(shown, label, -1))
    assert page.locator("#style-button").inner_text().startswith("Masks: fill")

    page.keyboard.press("m")
    assert "outline" in page.locator("#style-button").inner_text()
    outline = drawn_classes(page, image, palette, alpha=1.0)
    np.testing.assert_array_equal(outline[edge & shown], label[edge & shown])
    inside = ~edge | ~shown
    np.testing.assert_allclose(image_pixels(page)[..., :3][inside], image[inside], atol=2)

    page.click("#style-button")  # fill + outline
    assert page.locator("#style-button").inner_text().startswith("Masks: fill + outline")
    both = image_pixels(page)[..., :3]
    np.testing.assert_allclose(both[edge & shown], palette[label[edge & shown]], atol=2)
    np.testing.assert_array_equal(drawn_classes(page, image, palette)[~edge], np.where(shown, label, -1)[~edge])
    page.keyboard.press("m")
    assert page.locator("#style-button").inner_text().startswith("Masks: fill")


def test_the_legend_shows_and_hides_each_class(page, service_url, learner, db) -> None:
    """Each class in the legend is a toggle: hiding the ellipse leaves its pixels bare (the other classes as
    they were), showing the background draws it too; the choice holds for the next task."""
    register(learner, "ui-legend", scorer="human")
    label = label_of().astype(int)
    post(learner, "ui-legend", label.astype(np.uint8))
    post(learner, "ui-legend", noisy(label_of(), 4))
    sign_in(page, service_url)
    first = wait_task(page, "score")
    palette = np.array(page.evaluate(SWATCHES_JS), np.float64)
    image = without_overlay(page)
    toggles = page.locator("#legend input[type=checkbox]")
    assert [toggles.nth(k).is_checked() for k in range(4)] == [False, True, True, True]
    page.locator("#legend li", has_text="ellipse").click()
    assert not toggles.nth(1).is_checked()
    drawn = drawn_classes(page, image, palette)
    np.testing.assert_array_equal(drawn, np.where(np.isin(label, [2, 3]), label, -1))
    page.locator("#legend li", has_text="background").click()
    drawn = drawn_classes(page, image, palette)
    np.testing.assert_array_equal(drawn, np.where(label == 1, -1, label))
    assert page.evaluate("document.activeElement === document.body")  # Space and Enter stay hotkeys
    page.keyboard.press("5")
    page.keyboard.press("Enter")
    wait_task(page, "score", other_than=first)
    assert [toggles.nth(k).is_checked() for k in range(4)] == [True, False, True, True]
    assert page.locator("#legend li.off").all_inner_texts() == ["ellipse"]


def test_the_image_can_be_dimmed_and_its_contrast_changed(page, service_url, learner, db) -> None:
    """The image sliders (and D / Shift+D) change how the image is drawn: dimmer is darker everywhere, less
    contrast pulls its pixels toward their mean; the overlay's colours are not dimmed with it."""
    register(learner, "ui-dim", scorer="human")
    label = label_of()
    post(learner, "ui-dim", label)
    sign_in(page, service_url)
    wait_task(page, "score")
    bare = label == 0  # background: hidden, the image alone
    start = image_pixels(page)[..., :3]
    page.keyboard.press("d")
    dimmer = image_pixels(page)[..., :3]
    assert dimmer[bare].mean() < start[bare].mean() - 3
    page.keyboard.press("Shift+D")
    page.keyboard.press("Shift+D")
    assert image_pixels(page)[..., :3][bare].mean() > start[bare].mean() + 3
    page.locator("#contrast").fill("30")
    flat = image_pixels(page)[..., :3][bare]
    page.locator("#contrast").fill("200")
    steep = image_pixels(page)[..., :3][bare]
    assert flat.std() < steep.std() / 2
    # the overlay's fill is over the filtered image, not filtered with it: full opacity shows its colours
    page.locator("#opacity").fill("100")
    palette = np.array(page.evaluate(SWATCHES_JS), np.float64)
    np.testing.assert_allclose(image_pixels(page)[..., :3][~bare], palette[label[~bare]], atol=2)
