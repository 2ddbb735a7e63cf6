"""The dataset the service scores against and serves images from, addressed by safe image ids.

Labels go through the learner's own resize and PSR lattice (`rss_core.labels`), so a mask is
scored against exactly the pixels the learner's in-process reward would use.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from threading import Lock

import numpy as np
import torch
from PIL import Image

from reward_service.core.config import Settings
from rss_core.data import DatasetError, SegDataset, build_dataset
from rss_core.data.base import FolderDataset
from rss_core.data.procedural import ProceduralDataset
from rss_core.grid import as_action_grid, lattice_shape
from rss_core.labels import label_at_grid, learner_label
from rss_core.schemas import Grid, View
from rss_core.views import view_label

log = logging.getLogger(__name__)

# Dataset-relative names: path segments of safe characters, no "..", no absolute paths.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")


class ImageIdError(ValueError):
    """An image id that is malformed or would leave the dataset root (a 400)."""


class UnknownImage(LookupError):
    """A well-formed image id the served split does not have (a 404)."""


class UnreadableImage(DatasetError):
    """An image of the split whose image or label file cannot be read (missing, corrupt): a 422 naming the id.

    The message never holds the file's path (clients must not learn the server's folders); the service log
    does."""

    def __init__(self, image_id: str) -> None:
        super().__init__(f"image {image_id!r} cannot be read from the dataset (its image or label file is missing "
                         "or corrupt; the service log names the file)")


def check_image_id(image_id: str) -> str:
    if len(image_id) > 256 or not _SAFE_ID.fullmatch(image_id) or ".." in image_id.split("/"):
        raise ImageIdError(
            f"image id {image_id[:80]!r} is not a dataset-relative name (letters, digits, '_.-' and '/', no '..')"
        )
    return image_id


MAX_VIEW_ZOOM = 4  # a view may resize its image to at most this many times its height and width


class ServedDataset:
    """One split of one dataset, with a cache of labels (bounded in bytes) at the sizes runs ask for.

    Every episode POST checks its masks' shape and every scored episode reads its label, so a
    label made again per request is the service's main cost: a procedural label is drawn with its
    image (~5 ms for `shapes` at 64 px, ~8 ms for `scenes` at 128 px). The cache keeps
    ``RSS_LABEL_CACHE_MB`` of labels (all 2000 shapes labels of 64 px take 8 MiB, scenes labels of
    128 px 32 MiB), least recently used out first; label shapes
    are kept apart, for good, so a shape check never makes a label again."""

    def __init__(self, settings: Settings) -> None:
        self.name = settings.dataset
        self.dataset: SegDataset = build_dataset(
            settings.dataset, settings.split, root=settings.data_root, num_classes=settings.num_classes,
            shapes_size=settings.shapes_size, shapes_length=settings.shapes_length, seed=settings.seed,
            scenes_size=settings.scenes_size,
        )
        self.root = Path(settings.data_root).resolve() if settings.data_root else None
        self.ids = set(self.dataset.ids)
        self._cache: OrderedDict[tuple[str, int | None], np.ndarray] = OrderedDict()
        self._shapes: dict[tuple[str, int | None], tuple[int, int]] = {}
        self._cache_bytes, self._budget = 0, int(settings.label_cache_mb * 2**20)
        self._lock = Lock()

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.dataset.class_names)

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return [tuple(int(v) for v in row) for row in self.dataset.palette]

    def require(self, image_id: str) -> str:
        """``image_id`` if the split has it; ImageIdError / UnknownImage otherwise."""
        check_image_id(image_id)
        if image_id not in self.ids:
            raise UnknownImage(f"image {image_id!r} is not in the served dataset ({self.name}, split "
                               f"{getattr(self.dataset, 'split', '?')!r})")
        if isinstance(self.dataset, FolderDataset) and self.root is not None:
            for path in self.dataset.files(image_id) or ():
                if not path.resolve().is_relative_to(self.root):
                    raise ImageIdError(f"image id {image_id!r} resolves outside the dataset root")
        return image_id

    def label(self, image_id: str, image_size: int | None) -> np.ndarray:
        """The (H, W) uint8 label the learner trains against (resized to ``image_size``)."""
        key = (self.require(image_id), image_size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        with self._readable(image_id):
            label = learner_label(self.dataset, image_id, image_size).to(torch.uint8).numpy()
        with self._lock:
            self._shapes[key] = label.shape
            if key not in self._cache and label.nbytes <= self._budget:
                self._cache[key] = label
                self._cache_bytes += label.nbytes
                while self._cache_bytes > self._budget:
                    self._cache_bytes -= self._cache.popitem(last=False)[1].nbytes
        return label

    def warm(self) -> int:
        """Make every label of a procedural split (`shapes`, `scenes`) ahead, when all fit the cache; how many.

        Folder datasets are read as asked (a PNG read is cheap, and runs pick their own size)."""
        if not isinstance(self.dataset, ProceduralDataset):
            return 0
        ids = sorted(self.ids)
        if len(ids) * self.dataset.size**2 > self._budget:
            log.info("label cache (%.0f MiB) too small for the %d labels of the split: not warmed",
                     self._budget / 2**20, len(ids))
            return 0
        started = time.perf_counter()
        for image_id in ids:
            self.label(image_id, None)
        log.info("made the %d labels of the served split in %.1f s", len(ids), time.perf_counter() - started)
        return len(ids)

    def label_shape(self, image_id: str, image_size: int | None) -> tuple[int, int]:
        """The label's (H, W): known without the label when resized or procedural, else read once."""
        if image_size is not None:
            return image_size, image_size  # rss_core.data.base.to_tensors resizes to a square
        if isinstance(self.dataset, ProceduralDataset):
            return self.dataset.size, self.dataset.size
        shape = self._shapes.get((image_id, image_size))
        return shape if shape is not None else self.label(image_id, image_size).shape

    def target(self, image_id: str, image_size: int | None, grid: Grid, view: View | None = None) -> np.ndarray:
        """The label a sample on ``grid`` is scored against: the lattice pixels, or full size; of ``view`` of the
        label (`rss_core.views`, as the learner made it) when the episode was sampled on one."""
        label = torch.from_numpy(self.label(image_id, image_size))
        if view is not None:
            label = view_label(label, view)
        return label_at_grid(label, grid).numpy()

    def mask_shape(self, image_id: str, image_size: int | None, grid: Grid,
                   view: View | None = None) -> tuple[int, int]:
        """The shape a sampled mask must have on ``grid`` (over ``view``'s window, when given); a grid finer than
        the image is refused (a 4096 pooled grid on a 64 px image would be 4096x more mask than image)."""
        self.require(image_id)
        height, width = self.label_shape(image_id, image_size)
        if view is not None:  # the window's masks; the resize is bounded by the label's size (a zoom of 4 at most)
            if view.resize[0] > MAX_VIEW_ZOOM * height or view.resize[1] > MAX_VIEW_ZOOM * width:
                raise ValueError(f"view: resize {view.resize[0]}x{view.resize[1]} is more than {MAX_VIEW_ZOOM} times "
                                 f"the {height}x{width} image")
            height, width = view.crop[2:]
        if grid.scale > min(height, width):
            raise ValueError(f"grid scale {grid.scale} is finer than the {height}x{width} image it acts on (at most "
                             f"{min(height, width)}: one action per pixel)")
        if grid.scale and grid.mode == "pool":
            return grid.scale, grid.scale
        if not grid.scale:
            return height, width
        action_grid = as_action_grid(grid)
        sy, sx = action_grid.stride(height, width)
        if not (0 <= grid.offset[0] < sy and 0 <= grid.offset[1] < sx):
            raise ValueError(f"grid offset {tuple(grid.offset)} must lie within the stride {(sy, sx)}")
        return lattice_shape(height, width, action_grid)

    @contextmanager
    def _readable(self, image_id: str) -> Iterator[None]:
        """Turn the loader's DatasetError (which names the file) into UnreadableImage (which names the id)."""
        try:
            yield
        except UnreadableImage:
            raise
        except Exception as exc:  # DatasetError, or whatever else a corrupt file makes PIL raise (SyntaxError...)
            log.warning("image %r cannot be read: %s", image_id, exc if isinstance(exc, DatasetError) else repr(exc))
            raise UnreadableImage(image_id) from exc

    def image_png(self, image_id: str) -> bytes:
        with self._readable(self.require(image_id)):
            image, _ = self.dataset.load(image_id)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


__all__ = ["DatasetError", "ImageIdError", "ServedDataset", "UnknownImage", "UnreadableImage", "check_image_id"]
