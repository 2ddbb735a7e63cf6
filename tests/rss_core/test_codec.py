"""PNG masks with ancillary chunks (pure logic: `rss_core.codec.decode_mask`); the same PNGs sent to a real
service are in tests/reward_service/test_security.py."""

from __future__ import annotations

import base64
import struct
import time

import numpy as np
import pytest

from rss_core import codec
from tests.helpers.factories import png_chunk, png_with_chunks, ztxt_chunks


def as_mask(png: bytes) -> codec.PngMask:
    return codec.PngMask(data=base64.b64encode(png).decode())


MASK = np.random.default_rng(0).integers(0, 4, (64, 48), dtype=np.uint8)
PLAIN = base64.b64decode(codec.png_mask(MASK).data)


def test_small_ancillary_chunks_are_skipped_unread() -> None:
    """Text and metadata within the budget are dropped before Pillow reads them: a PNG with a tEXt chunk whose
    checksum is broken, which Pillow cannot open, decodes here (so does one with a zTXt chunk that does not
    inflate)."""
    broken_text = png_chunk(b"tEXt", b"Software\0painter", crc=0)
    bad_ztxt = png_chunk(b"zTXt", b"Comment\0\0" + b"not deflate")
    png = png_with_chunks(PLAIN, [broken_text, png_chunk(b"gAMA", struct.pack(">I", 45455))], [bad_ztxt])
    np.testing.assert_array_equal(codec.decode_mask(as_mask(png), MASK.shape), MASK)
    np.testing.assert_array_equal(codec.decode_mask(as_mask(PLAIN), MASK.shape), MASK)  # none: unchanged
    assert codec.critical_png(PLAIN) is PLAIN


@pytest.mark.parametrize("where", ["before", "after"])
def test_ancillary_chunks_beyond_the_budget_are_refused_before_decompressing(where: str) -> None:
    chunks = ztxt_chunks(24)  # 24 MiB of compressed text, before or after the pixels
    png = png_with_chunks(PLAIN, chunks if where == "before" else [], chunks if where == "after" else [])
    started = time.perf_counter()
    with pytest.raises(codec.MaskError, match=r"more than 16384 bytes of ancillary chunks \(text such as zTXt"):
        codec.decode_mask(as_mask(png), MASK.shape, "samples[0]")
    assert time.perf_counter() - started < 5  # generous: the walk stops at the first chunk over the budget
    # just over the budget, in many small chunks, is refused too
    small = [png_chunk(b"tEXt", b"k\0" + b"v" * 1000) for _ in range(17)]
    with pytest.raises(codec.MaskError, match="ancillary chunks"):
        codec.decode_mask(as_mask(png_with_chunks(PLAIN, small)), MASK.shape)


def test_too_many_chunks_and_truncated_chunks_are_refused() -> None:
    many = png_with_chunks(PLAIN, [png_chunk(b"IDAT", b"")] * (codec.MAX_PNG_CHUNKS + 1))
    with pytest.raises(codec.MaskError, match="more than 4096 chunks"):
        codec.decode_mask(as_mask(many), MASK.shape)
    cut = PLAIN[:40] + struct.pack(">I", 10**6) + b"tEXtabc"
    with pytest.raises(codec.MaskError, match="runs past the end of the data"):
        codec.decode_mask(as_mask(cut), MASK.shape)
