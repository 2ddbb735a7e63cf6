"""The built-in `shapes` dataset: procedural images with per-pixel labels, generated in code.

Each image is a textured background with 1-3 shapes (ellipse, rectangle, triangle) in random
colours, so colour never gives the class away: only geometry does. Every image is a pure
function of (seed, split, index), so the reward service can regenerate the label of any id
without building the whole split.
"""

from __future__ import annotations

import zlib

import numpy as np

from rss_core.data.procedural import ProceduralDataset

CLASS_NAMES = ["background", "ellipse", "rectangle", "triangle"]
GENERATOR_VERSION = 1  # bump when make_shapes_image draws differently: old runs' data is not the new data


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field plus fine noise, (size, size, 3) float in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(0.0, 1.0, 3)
    field = np.zeros((size, size, 3), np.float32)
    for _ in range(2):
        fy, fx = rng.uniform(0.5, 4.0, 2)
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.03, 0.15, 3)
        field += amp * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)[..., None]
    noise = rng.normal(0.0, rng.uniform(0.01, 0.06), (size, size, 3))
    return np.clip(base + field + noise, 0.0, 1.0)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random colour far enough from the background's mean that the shape is visible."""
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(50):
        colour = rng.uniform(0.0, 1.0, 3)
        if np.abs(colour - mean).sum() >= 0.6:
            return colour
    return 1.0 - mean


def _shape_mask(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    """A boolean mask of one shape of class ``kind`` (1 ellipse, 2 rectangle, 3 triangle)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    scale = size / 64.0
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
    theta = rng.uniform(0, np.pi)
    ct, st = np.cos(theta), np.sin(theta)
    u = (xx - cx) * ct + (yy - cy) * st
    v = -(xx - cx) * st + (yy - cy) * ct
    if kind == 1:
        a, b = rng.uniform(5, 13, 2) * scale
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if kind == 2:
        a, b = rng.uniform(4, 12, 2) * scale
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    # Triangle: three vertices at spread-out angles around the centre, so it is never a sliver.
    angles = theta + np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.35, 0.35, 3)
    radius = rng.uniform(8, 15) * scale
    px, py = cx + radius * np.cos(angles), cy + radius * np.sin(angles)
    inside = np.ones((size, size), bool)
    sign = np.sign((px[1] - px[0]) * (py[2] - py[0]) - (py[1] - py[0]) * (px[2] - px[0]))
    for i in range(3):
        j = (i + 1) % 3
        edge = (px[j] - px[i]) * (yy - py[i]) - (py[j] - py[i]) * (xx - px[i])
        inside &= edge * sign >= 0
    return inside


def make_shapes_image(seed: int, split: str, index: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Image (size, size, 3) uint8 and label (size, size) uint8 for one id; deterministic."""
    split_code = zlib.crc32(split.encode())
    rng = np.random.default_rng([seed, split_code, index])
    image = _texture(rng, size)
    label = np.zeros((size, size), np.uint8)
    taken = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(1, 4))
        # Shapes do not overlap: an occluded shape would be a fragment no class describes.
        for _attempt in range(20):
            mask = _shape_mask(rng, kind, size)
            if not (mask & taken).any():
                break
        else:
            continue
        taken |= mask
        fill = _texture(rng, size) * 0.2 + _contrasting_colour(rng, image) * 0.8
        image[mask] = fill[mask]
        label[mask] = kind
    return (image * 255).round().astype(np.uint8), label


class ShapesDataset(ProceduralDataset):
    """A split of procedural shapes; ids are ``{split}/{index:06d}``."""

    name = "shapes"
    default_class_names = tuple(CLASS_NAMES)
    generator_version = GENERATOR_VERSION
    make = staticmethod(make_shapes_image)
