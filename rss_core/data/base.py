"""The dataset interface every loader implements, plus the shared decode/resize helpers."""

from __future__ import annotations

import abc
import hashlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IGNORE_INDEX = 255


class DatasetError(ValueError):
    """Bad or missing data. The message names the file and what is wrong with it."""


class UnevenBatch(DatasetError):
    """Images of different sizes asked for as one batch (a folder kept at its own sizes, --image-size 0)."""


class SegDataset(abc.ABC):
    """A split of a segmentation dataset addressed by dataset-relative image ids.

    ``load`` returns the raw uint8 image (H, W, 3) and label (H, W) for one id: this is
    what the reward service scores against. ``__getitem__`` returns training tensors,
    resized to ``image_size`` x ``image_size`` when that is set (bilinear for the image,
    nearest for the label, so label values stay class indices).
    """

    name: str = "base"

    def __init__(
        self,
        *,
        num_classes: int,
        class_names: list[str] | None = None,
        image_size: int | None = None,
    ) -> None:
        if num_classes < 2:
            raise DatasetError(f"num_classes must be at least 2, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise DatasetError(
                f"{len(class_names)} class names given for {num_classes} classes"
            )
        if image_size is not None and image_size < 1:
            raise DatasetError(f"image_size must be positive, got {image_size}")
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
        self.image_size = image_size
        self.ids: list[str] = []

    @abc.abstractmethod
    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Raw image (H, W, 3) uint8 and label (H, W) uint8 with 255 = ignore."""

    def __len__(self) -> int:
        return len(self.ids)

    def identity(self) -> dict:
        """What the data is, for `fingerprint`: the kind, split and classes; subclasses add their content."""
        return {"dataset": self.name, "split": getattr(self, "split", None), "classes": self.class_names}

    def _identified(self) -> dict:
        """`identity()`, computed once (a folder's hashes every label file)."""
        if getattr(self, "_identity", None) is None:
            self._identity = self.identity()
        return self._identity

    def fingerprint(self) -> str:
        """16 hex digits that differ when two processes would score against different labels (the learner
        sends it with its run; the service refuses a run whose data is not its own)."""
        return hashlib.sha256(json.dumps(self._identified(), sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        """The fingerprint's inputs in words, for error messages."""
        shown = {k: v for k, v in self._identified().items() if k != "labels_sha256"}
        return f"{json.dumps(shown, sort_keys=True)} (fingerprint {self.fingerprint()})"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(self.ids[index])
        return to_tensors(image, label, self.image_size)

    def label(self, index: int) -> torch.Tensor:
        """The (S, S) int64 training label of ``index`` alone (a folder reads only its label file)."""
        return self[index][1]

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, 3, S, S) and labels (N, S, S) of ``indices``; in-memory datasets slice."""
        runs = list(self.batches(indices))
        if len(runs) > 1:
            shown = ", ".join(f"{w}x{h}" for h, w in sorted({tuple(r[1].shape[-2:]) for r in runs})[:3])
            raise UnevenBatch(f"images of different sizes ({shown}) in one batch: give --image-size N to resize "
                              "them to a square, or --crop-size N to train on views of one size")
        return runs[0]

    def batches(self, indices: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`batch` of each run of consecutive ``indices`` whose images share a size (one run when all do), each
        image read once: a folder kept at its own sizes (--image-size 0) is evaluated so, never squashed."""
        pairs = [self[int(i)] for i in indices]
        for _, run in itertools.groupby(pairs, key=lambda p: tuple(p[1].shape)):
            run = list(run)
            yield torch.stack([p[0] for p in run]), torch.stack([p[1] for p in run])

    @property
    def palette(self) -> np.ndarray:
        """(num_classes, 3) uint8 colours for drawing masks (the VOC colour map)."""
        return voc_palette(self.num_classes)

    def check_label(self, label: np.ndarray, path: Path | str) -> np.ndarray:
        """Reject class values outside [0, num_classes) other than the ignore value."""
        bad = (label >= self.num_classes) & (label != IGNORE_INDEX)
        if bad.any():
            values = sorted({int(v) for v in np.unique(label[bad])})[:5]
            raise DatasetError(
                f"{path}: label values {values} are out of range for {self.num_classes} classes "
                f"(allowed 0..{self.num_classes - 1} and {IGNORE_INDEX} = ignore)"
            )
        return label


class FolderDataset(SegDataset):
    """A split whose ids map to (image file, label file) pairs on disk.

    Subclasses find the pairs in their layout (``find_pairs``); they may override
    ``convert_label`` (stored values -> class indices) and ``default_class_names``.
    """

    default_class_names: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        image_size: int | None = None,
    ) -> None:
        default_n = len(self.default_class_names)
        n = default_n if num_classes is None else num_classes
        if class_names is None and n == default_n:
            class_names = list(self.default_class_names)
        super().__init__(num_classes=n, class_names=class_names, image_size=image_size)
        self.root, self.split = Path(root), split
        self._pairs: dict[str, tuple[Path, Path]] = {}
        self._source = ""
        self.set_pairs(*self.find_pairs())

    def find_pairs(self) -> tuple[dict[str, tuple[Path, Path]], Path]:
        """The split's ``{id: (image file, label file)}`` in this layout, and the file or folder it came from."""
        raise NotImplementedError

    def set_pairs(self, pairs: dict[str, tuple[Path, Path]], source: Path) -> None:
        """Adopt the split's pairs after checking every file exists; ``source`` names the split in errors."""
        require_files(pairs)
        self._pairs, self._source, self.ids = pairs, str(source), list(pairs)

    def files(self, image_id: str) -> tuple[Path, Path] | None:
        """The (image, label) files of ``image_id``, or None when the split has no such id."""
        return self._pairs.get(image_id) if isinstance(image_id, str) else None

    def convert_label(self, label: np.ndarray) -> np.ndarray:
        """Map stored label values to class indices (identity by default)."""
        return label

    def identity(self) -> dict:
        """Adds a hash of every label file's bytes with its id: the label set itself, wherever it lies."""
        digest = hashlib.sha256()
        for image_id in sorted(self._pairs):
            digest.update(image_id.encode() + b"\0" + self._pairs[image_id][1].read_bytes())
        return {**super().identity(), "images": len(self._pairs), "labels_sha256": digest.hexdigest()}

    def label(self, index: int) -> torch.Tensor:
        _, label_path = self._pairs[self.ids[index]]
        return resize_label(self._label_file(label_path), self.image_size)

    def load(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        paths = self.files(image_id)
        if paths is None:
            raise DatasetError(f"{self._source}: image id {image_id!r} is not in split {self.split!r}")
        image_path, label_path = paths
        image, label = read_image(image_path), self._label_file(label_path)
        check_same_size(image, label, image_path, label_path)
        return image, label

    def _label_file(self, path: Path) -> np.ndarray:
        """A label file as checked class indices (stored values converted, values out of range refused)."""
        return self.check_label(self.convert_label(read_label(path)), path)


def read_image(path: Path) -> np.ndarray:
    """An RGB image as (H, W, 3) uint8, with the file named in any error."""
    if not path.is_file():
        raise DatasetError(f"{path}: image file is missing")
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"), dtype=np.uint8)
    except (OSError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc})") from exc


def read_label(path: Path) -> np.ndarray:
    """A label PNG (palette 'P' or greyscale 'L') as (H, W) uint8 class indices.

    Palette PNGs store indices, so they are read without converting to RGB.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: label file is missing")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DatasetError(
                    f"{path}: label must be a palette or greyscale PNG of class indices, got mode {im.mode}"
                )
            arr = np.asarray(im)
    except (OSError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot decode label ({exc})") from exc
    if arr.max(initial=0) > 255:
        raise DatasetError(f"{path}: label values above 255")
    return arr.astype(np.uint8)


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise DatasetError(
            f"{label_path}: label size {label.shape[1]}x{label.shape[0]} does not match "
            f"image {image_path.name} size {image.shape[1]}x{image.shape[0]}"
        )


def read_split(path: Path) -> list[str]:
    """Non-empty lines of a split file, or a DatasetError naming the file."""
    if not path.is_file():
        raise DatasetError(f"{path}: split file is missing")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{path}: split is empty")
    return ids


def require_files(pairs: dict[str, tuple[Path, Path]]) -> None:
    """Raise a DatasetError naming the first missing file of an id -> (image, label) map."""
    for image_path, label_path in pairs.values():
        for path, kind in ((image_path, "image"), (label_path, "label")):
            if not path.is_file():
                raise DatasetError(f"{path}: {kind} file is missing")


def to_tensors(image: np.ndarray, label: np.ndarray, size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 arrays -> (3, S, S) float in [0, 1] and (S, S) int64 labels."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    if size is not None and (x.shape[1] != size or x.shape[2] != size):
        x = torch.nn.functional.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return x, resize_label(label, size)


def resize_label(label: np.ndarray, size: int | None) -> torch.Tensor:
    """(H, W) uint8 label -> (S, S) int64, nearest (a label value is a class, never a blend)."""
    y = torch.from_numpy(np.ascontiguousarray(label)).long()
    return y if size is None else nearest(y, (size, size))


def nearest(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) label -> ``size`` (h, w) int64, nearest; the label itself when it has that size already."""
    y = label.long()
    if tuple(y.shape) == tuple(size):
        return y
    return torch.nn.functional.interpolate(y[None, None].float(), size=tuple(size), mode="nearest")[0, 0].long()


def voc_palette(n: int = 256) -> np.ndarray:
    """The Pascal VOC colour map (bit-interleaved), (n, 3) uint8."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal
