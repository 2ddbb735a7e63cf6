"""Masks and arrays on the wire <-> numpy, with every check that keeps bad bodies out of Redis.

Decoding never trusts a declared size: a PNG's header is read and its size compared with the
expected shape before a single pixel is decompressed, so a decompression bomb costs nothing, and a
PNG's ancillary chunks (compressed text, say) are dropped unread, or refused beyond a small budget.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings

import numpy as np
from PIL import Image

from rss_core.schemas import ArrayB64, PngMask, RawMask, RleMask


class MaskError(ValueError):
    """A mask that cannot be accepted; the message says what is wrong (it becomes a 422)."""


def _b64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MaskError(f"{what}: data is not valid base64") from exc


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")
MAX_PNG_ANCILLARY_BYTES = 16 * 1024  # text, metadata, colour profiles: nothing a mask needs
MAX_PNG_CHUNKS = 4096  # 64 KiB IDAT chunks (Pillow's) of a 16 MiB body: 256


def critical_png(raw: bytes, what: str = "mask") -> bytes:
    """``raw`` with only its critical chunks (IHDR, PLTE, IDAT, IEND), so Pillow never decompresses text
    (zTXt, iTXt) or reads any other ancillary chunk; refused when those exceed MAX_PNG_ANCILLARY_BYTES or the
    chunks MAX_PNG_CHUNKS. Walks the chunks' lengths only: nothing is decompressed or checksummed here."""
    if not raw.startswith(PNG_SIGNATURE):
        return raw  # not a PNG: Pillow says what it is
    kept, ancillary, offset, count = [PNG_SIGNATURE], 0, len(PNG_SIGNATURE), 0
    while offset < len(raw):
        count += 1
        if count > MAX_PNG_CHUNKS:
            raise MaskError(f"{what}: PNG has more than {MAX_PNG_CHUNKS} chunks")
        if offset + 8 > len(raw):
            raise MaskError(f"{what}: not a readable PNG (truncated chunk header)")
        length, kind = int.from_bytes(raw[offset:offset + 4], "big"), raw[offset + 4:offset + 8]
        end = offset + 12 + length  # length, type, data, CRC
        if end > len(raw):
            raise MaskError(f"{what}: not a readable PNG (chunk {kind!r} runs past the end of the data)")
        if kind[:1].isupper():  # the critical bit: an unknown critical chunk is Pillow's to refuse
            kept.append(raw[offset:end])
        else:
            ancillary += end - offset
            if ancillary > MAX_PNG_ANCILLARY_BYTES:
                raise MaskError(f"{what}: PNG carries more than {MAX_PNG_ANCILLARY_BYTES} bytes of ancillary "
                                "chunks (text such as zTXt/iTXt/tEXt, or other metadata); send the mask without "
                                "them")
        offset = end
        if kind == b"IEND":
            break
    return b"".join(kept) if ancillary else raw


def decode_mask(mask: PngMask | RawMask | RleMask, shape: tuple[int, int], what: str = "mask") -> np.ndarray:
    """The (h, w) uint8 mask, checked to have ``shape``."""
    h, w = shape
    if isinstance(mask, PngMask):
        raw = critical_png(_b64(mask.data, what), what)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(raw))
                if image.size != (w, h):
                    raise MaskError(f"{what}: PNG is {image.size[1]}x{image.size[0]}, expected {h}x{w}")
                if image.format != "PNG":
                    raise MaskError(f"{what}: expected a PNG, got {image.format}")
                if image.mode not in ("L", "P"):
                    raise MaskError(f"{what}: PNG mode {image.mode} is not class indices (use mode L or P)")
                array = np.asarray(image, dtype=np.uint8)
        except MaskError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise MaskError(f"{what}: not a readable PNG ({exc})") from exc
        return array
    if tuple(mask.shape) != (h, w):
        raise MaskError(f"{what}: shape {tuple(mask.shape)} does not match the expected {(h, w)}")
    if isinstance(mask, RawMask):
        raw = _b64(mask.data, what)
        if len(raw) != h * w:
            raise MaskError(f"{what}: {len(raw)} bytes of data for a {h}x{w} mask (expected {h * w})")
        return np.frombuffer(raw, np.uint8).reshape(h, w)
    try:
        values, counts = np.asarray(mask.values, np.int64), np.asarray(mask.counts, np.int64)
    except OverflowError as exc:
        raise MaskError(f"{what}: RLE values and counts must be small integers") from exc
    if values.shape != counts.shape:
        raise MaskError(f"{what}: RLE has {values.size} values but {counts.size} counts")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise MaskError(f"{what}: RLE values must be in 0..255")
    if counts.size and counts.min() < 1:
        raise MaskError(f"{what}: RLE counts must be positive")
    # Each count at most h*w before summing: counts near 2**63 wrap the int64 sum around to h*w, and
    # np.repeat then crashed the process (a segfault, found by review).
    if counts.size and counts.max() > h * w:
        raise MaskError(f"{what}: RLE count {int(counts.max())} exceeds the mask's {h * w} pixels")
    if int(counts.sum()) != h * w:
        raise MaskError(f"{what}: RLE covers {int(counts.sum())} pixels, expected {h * w}")
    return np.repeat(values.astype(np.uint8), counts).reshape(h, w)


def png_mask(mask: np.ndarray) -> PngMask:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L").save(buffer, format="PNG", compress_level=1)
    return PngMask(data=base64.b64encode(buffer.getvalue()).decode())


def raw_mask(mask: np.ndarray) -> RawMask:
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    return RawMask(shape=mask.shape, data=base64.b64encode(mask.tobytes()).decode())


def rle_mask(mask: np.ndarray) -> RleMask:
    flat = np.ascontiguousarray(mask, dtype=np.uint8).ravel()
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    counts = np.diff(np.r_[starts, flat.size])
    return RleMask(shape=mask.shape, values=flat[starts].tolist(), counts=counts.tolist())


def encode_array(array: np.ndarray) -> ArrayB64:
    array = np.ascontiguousarray(array)
    if array.dtype not in (np.float32, np.uint8):
        raise TypeError(f"only float32 and uint8 arrays travel on the wire, got {array.dtype}")
    return ArrayB64(dtype=str(array.dtype), shape=list(array.shape), data=base64.b64encode(array.tobytes()).decode())


def decode_array(array: ArrayB64, what: str = "array") -> np.ndarray:
    raw = _b64(array.data, what)
    dtype = np.dtype(array.dtype).newbyteorder("<")
    if any(n < 0 for n in array.shape) or len(raw) != math.prod(array.shape) * dtype.itemsize:
        raise MaskError(f"{what}: {len(raw)} bytes do not fill a {array.dtype} array of shape {array.shape}")
    return np.frombuffer(raw, dtype).reshape(array.shape).astype(array.dtype)
