"""The built-in `scenes` dataset: a harder procedural benchmark of cluttered, occluded objects at many scales.

Each image is a textured background with thin distractor marks (lines and arcs, background in the label)
and 2-6 objects of 7 classes, 4 px to half the image across (log-uniform), that overlap: later objects
occlude earlier ones and the label shows the visible one. Six classes differ by outline (ellipse,
rectangle, triangle, ring, cross, star), one by texture (a striped ellipse); every object's colours come
from the same distribution, so colour never gives the class away. Every image is a pure function of
(seed, split, index), like `shapes`, so the reward service regenerates the label of any id.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from rss_core.data.procedural import ProceduralDataset

CLASS_NAMES = ["background", "ellipse", "rectangle", "triangle", "ring", "cross", "star", "stripes"]
GENERATOR_VERSION = 1  # bump when make_scenes_image draws differently: old runs' data is not the new data
_STREAM = zlib.crc32(b"scenes")  # so scenes and shapes of the same (seed, split, index) draw apart
_MIN_OBJECT_PX = 4.0

# A drawn object: its class, the top-left corner of its box and its mask inside the box.
Drawn = tuple[int, int, int, np.ndarray]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field, a finer pattern and pixel noise, (size, size, 3) float in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.broadcast_to(rng.uniform(0.15, 0.85, 3).astype(np.float32), (size, size, 3)).copy()
    for low, high, amp in ((0.5, 3.0, 0.18), (0.5, 3.0, 0.12), (6.0, 16.0, 0.06)):
        fy, fx = rng.uniform(low, high, 2) * rng.choice([-1, 1], 2)
        wave = np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi))
        image += (rng.uniform(0.3, 1.0, 3).astype(np.float32) * amp) * wave[..., None]
    image += rng.normal(0.0, rng.uniform(0.01, 0.05), (size, size, 3)).astype(np.float32)
    return image


def _colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour far enough from the mean of the pixels ``under`` it that the mark is visible."""
    mean = under.reshape(-1, 3).mean(0) if under.size else np.full(3, 0.5, np.float32)
    for _ in range(50):
        colour = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        if np.abs(colour - mean).sum() >= 0.6:
            return colour
    return (1.0 - mean).astype(np.float32)


def _frame(size: int, cy: float, cx: float, reach: float) -> tuple[int, int, np.ndarray, np.ndarray]:
    """The box around (cy, cx) out to ``reach``, clipped to the image: its corner and pixel coordinates."""
    y0, y1 = max(0, int(cy - reach)), min(size, int(np.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(cx - reach)), min(size, int(np.ceil(cx + reach)) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return y0, x0, yy - cy, xx - cx


def _ellipse(u: np.ndarray, v: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    return (u / r) ** 2 + (v / (r * rng.uniform(0.45, 1.0))) ** 2 <= 1.0


def _rectangle(u: np.ndarray, v: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r * rng.uniform(0.35, 1.0))


def _triangle(u: np.ndarray, v: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    # Vertices at spread-out angles (never a sliver); u, v are already rotated, so the first sits on +u.
    angles = np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
    px, py = r * np.cos(angles), r * np.sin(angles)
    inside = np.ones(u.shape, bool)
    for i in range(3):
        j = (i + 1) % 3
        inside &= (px[j] - px[i]) * (v - py[i]) - (py[j] - py[i]) * (u - px[i]) >= 0
    return inside


def _ring(u: np.ndarray, v: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    rho = np.hypot(u, v)
    return (rho <= r) & (rho >= r * rng.uniform(0.45, 0.65))


def _cross(u: np.ndarray, v: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    arm = r * rng.uniform(0.22, 0.35)
    return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))


def _star(u: np.ndarray, v: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    points = int(rng.integers(5, 7))
    # The outline's radius falls linearly from r at each point to `inner` r between points.
    turn = (np.arctan2(v, u) * points / (2 * np.pi)) % 1.0
    inner = rng.uniform(0.4, 0.55)
    return np.hypot(u, v) <= r * (inner + (1 - inner) * np.abs(2 * turn - 1))


# Class index -> outline; `stripes` (7) is an ellipse told apart by its fill alone.
_OUTLINES: dict[int, Callable[[np.ndarray, np.ndarray, float, np.random.Generator], np.ndarray]] = {
    1: _ellipse, 2: _rectangle, 3: _triangle, 4: _ring, 5: _cross, 6: _star, 7: _ellipse,
}


def _distractor(rng: np.random.Generator, image: np.ndarray) -> None:
    """A thin line segment or arc, 1-2 px wide, drawn into ``image`` (it stays background in the label)."""
    size = image.shape[0]
    cy, cx = rng.uniform(0, size, 2)
    length = rng.uniform(0.15, 0.5) * size
    half_width = rng.uniform(0.5, 1.0)
    y0, x0, dy, dx = _frame(size, cy, cx, length / 2 + 1)
    if rng.random() < 0.5:
        theta = rng.uniform(0, np.pi)
        along = dx * np.cos(theta) + dy * np.sin(theta)
        across = -dx * np.sin(theta) + dy * np.cos(theta)
        mask = (np.abs(across) <= half_width) & (np.abs(along) <= length / 2)
    else:
        radius = length / 2
        start, span = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.6) * np.pi
        mask = (np.abs(np.hypot(dx, dy) - radius) <= half_width) & ((np.arctan2(dy, dx) - start) % (2 * np.pi) <= span)
    box = image[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
    box[mask] = _colour(rng, box)


def _draw_object(rng: np.random.Generator, kind: int, image: np.ndarray) -> Drawn:
    """Draw one object of class ``kind`` into ``image``; its box corner and mask."""
    size = image.shape[0]
    r = float(np.exp(rng.uniform(np.log(_MIN_OBJECT_PX), np.log(size / 2)))) / 2
    cy, cx = rng.uniform(0.05 * size, 0.95 * size, 2)
    y0, x0, dy, dx = _frame(size, cy, cx, r + 1)
    theta = rng.uniform(0, 2 * np.pi)
    ct, st = np.cos(theta), np.sin(theta)
    u, v = dx * ct + dy * st, -dx * st + dy * ct
    mask = _OUTLINES[kind](u, v, r, rng)
    box = image[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
    under = box[mask]
    colour = _colour(rng, under)
    fill = colour + rng.normal(0.0, 0.04, (*mask.shape, 3)).astype(np.float32)
    if kind == 7:
        # Stripes of two colours across the object, 3-6 px a period (at 128 px; finer on smaller images).
        period = rng.uniform(3.0, 6.0) * max(size / 128, 0.5)
        phi = rng.uniform(0, np.pi)
        band = ((dx * np.cos(phi) + dy * np.sin(phi)) / period) % 1.0 < 0.5
        second = _colour(rng, colour[None])
        fill = np.where(band[..., None], fill, second + (fill - colour))
    box[mask] = fill[mask]
    return kind, y0, x0, mask


def make_scenes_image(
    seed: int, split: str, index: int, size: int = 128, drawn: list[Drawn] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image (size, size, 3) uint8 and label (size, size) uint8 for one id; deterministic.

    ``drawn``, when given, receives each object as drawn (class, box corner, whole mask) before later
    objects hide parts of it: what a test of occlusion compares the label with."""
    rng = np.random.default_rng([seed, _STREAM, zlib.crc32(split.encode()), index])
    image = _background(rng, size)
    for _ in range(int(rng.integers(3, 9))):
        _distractor(rng, image)
    label = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(2, 7))):
        kind, y0, x0, mask = _draw_object(rng, int(rng.integers(1, len(CLASS_NAMES))), image)
        label[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]][mask] = kind
        if drawn is not None:
            drawn.append((kind, y0, x0, mask))
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8), label


class ScenesDataset(ProceduralDataset):
    """A split of procedural scenes; ids are ``{split}/{index:06d}``."""

    name = "scenes"
    default_class_names = tuple(CLASS_NAMES)
    generator_version = GENERATOR_VERSION
    default_size = 128
    min_size = 32
    make = staticmethod(make_scenes_image)
