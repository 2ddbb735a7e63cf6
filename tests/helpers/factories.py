"""Test data: shapes labels and noisy masks, episode bodies, a PNG decompression bomb, PNG chunks, a tiny VOC
folder."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from rss_core.data import build_dataset
from rss_core.data.base import to_tensors, voc_palette

SHAPES = build_dataset("shapes", "train")
IMAGE = "train/000003"


def label_of(image_id: str = IMAGE, size: int | None = None) -> np.ndarray:
    image, label = SHAPES.load(image_id)
    return to_tensors(image, label, size)[1].numpy().astype(np.uint8)


def noisy(label: np.ndarray, seed: int, fraction: float = 0.3, classes: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flip = rng.random(label.shape) < fraction
    return np.where(flip, rng.integers(0, classes, label.shape), label).astype(np.uint8)


def episode(run_id: str, masks: list, image_id: str = IMAGE, level: str = "image", **extra) -> dict:
    return {"run_id": run_id, "image_id": image_id, "level": level, "policy_version": 7,
            "samples": [m.model_dump() for m in masks], **extra}


def bomb_png(height: int, width: int) -> str:
    """A PNG whose header claims height x width but holds a few bytes: decoding it would explode."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return base64.b64encode(bytes(data)).decode()


def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk: length, type, data and its CRC (``crc`` to break it)."""
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_with_chunks(png: bytes, before_idat: list[bytes] = (), after_idat: list[bytes] = ()) -> bytes:
    """``png`` (as `codec.png_mask` writes it) with ``before_idat`` chunks after IHDR, ``after_idat`` before
    IEND."""
    ihdr_end = 8 + 12 + 13
    iend = png.rindex(b"IEND") - 4
    return png[:ihdr_end] + b"".join(before_idat) + png[ihdr_end:iend] + b"".join(after_idat) + png[iend:]


def ztxt_chunks(mib: int) -> list[bytes]:
    """About ``mib`` MiB of zTXt chunks, each of text that inflates to just under Pillow's 1 MiB limit per chunk
    (`PngImagePlugin.MAX_TEXT_CHUNK`), so Pillow inflates every one of them: ~0.08 s of CPU for 24 MiB."""
    text = zlib.compress(np.random.default_rng(0).bytes(1_000_000), 1)
    return [png_chunk(b"zTXt", b"Comment\0\0" + text)] * mib


def write_voc(tmp_path: Path) -> Path:
    """A VOC-2012-layout folder under ``tmp_path`` (the `voc_root` fixture's): 6 train / 2 val images of 40x48,
    palette labels with a 255 border; returns its root."""
    root = tmp_path / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClass").mkdir()
    rng = np.random.default_rng(0)
    ids = [f"2007_{i:06d}" for i in range(8)]
    for n, image_id in enumerate(ids):
        label = np.zeros((40, 48), np.uint8)
        label[10:30, 8 + n : 30 + n] = 1 + n % 3  # a box of class 1..3
        label[0, :] = 255  # VOC's "void" border
        image = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
        image[label == 1 + n % 3] += 150
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        im = Image.fromarray(label, mode="P")
        im.putpalette(voc_palette().flatten().tolist())
        im.save(root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids[:6]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids[6:]) + "\n")
    return root
