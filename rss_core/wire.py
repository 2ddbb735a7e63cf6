"""Wire contract v2: a learner's batch as one binary body, and one results entry per episode.

v1 sends each mask as base64 inside JSON and gets one results entry per sample: per step of
16 episodes x 32 masks of 32 x 32 that is 512 masks encoded, parsed and validated one by one
on each side, and 512 entries written, read and parsed. v2 keeps every per-pixel byte out of
JSON:

**A batch** (``POST /v2/episodes/batch``, ``Content-Type: application/octet-stream``)::

    b"RSS2"                 4 bytes, the format's magic
    n                       uint32, little-endian: the header's length in bytes
    header                  n bytes of UTF-8 JSON, an `EpisodeBatchHeader`
    masks                   for each episode in header order, its K masks of (h, w) uint8 class indices,
                            row-major: K * h * w bytes (``mask_shape`` says h, w; ``samples`` says K)

The body is exactly that long: a byte more or less is refused (422), as v1 refuses a mask whose
data does not fill its shape. A learner's (B, K, h, w) uint8 actions are the masks part as they
lie in memory (``actions.tobytes()``).

**A result** is one stream entry per episode: field ``episode`` holds an `EpisodeResult` (JSON:
the K rewards, or the layout of the K reward maps, or the failure), field ``maps`` the (K, h, w)
reward maps' bytes at pixel level (float16 when lossless, as ground truth's 0, 1 and NaN are).
v1 entries (field ``payload``, one `Result` per sample) stay what v1 episodes and human scorers
write; `samples_of` reads either form.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from rss_core.schemas import EpisodeBatchHeader, EpisodeResult, MapsLayout, Result

MAGIC = b"RSS2"
MEDIA_TYPE = "application/octet-stream"
MAX_HEADER_BYTES = 8 * 1024 * 1024  # 256 episodes with 256 points each take ~1 MiB of JSON
_PREFIX = struct.Struct("<4sI")


class WireError(ValueError):
    """A body that is not a v2 batch; the message says what is wrong (a 422)."""


def encode_batch(header: EpisodeBatchHeader, masks: bytes | memoryview | np.ndarray) -> bytes:
    """The v2 body of ``header`` and its masks (all episodes' bytes, in order)."""
    head = header.model_dump_json(exclude_none=True).encode()
    data = masks.tobytes() if isinstance(masks, np.ndarray) else bytes(masks)
    expected = sum(e.samples * e.mask_shape[0] * e.mask_shape[1] for e in header.episodes)
    if len(data) != expected:
        raise ValueError(f"{len(data)} bytes of masks for a header that declares {expected}")
    return b"".join((_PREFIX.pack(MAGIC, len(head)), head, data))


def split_batch(body: bytes) -> tuple[bytes, memoryview]:
    """The header's JSON bytes and the masks' bytes of a v2 body (not yet checked against each other)."""
    if len(body) < _PREFIX.size:
        raise WireError(f"a v2 batch starts with {_PREFIX.size} bytes (b'RSS2' and the header's length); "
                        f"the body has {len(body)}")
    magic, n = _PREFIX.unpack_from(body)
    if magic != MAGIC:
        raise WireError(f"a v2 batch starts with b'RSS2', not {magic!r} (a v1 JSON batch goes to "
                        "POST /v1/episodes/batch)")
    if n > MAX_HEADER_BYTES:
        raise WireError(f"the header declares {n} bytes, over the limit of {MAX_HEADER_BYTES}")
    if _PREFIX.size + n > len(body):
        raise WireError(f"the header declares {n} bytes but the body has {len(body) - _PREFIX.size} after "
                        "the prefix")
    view = memoryview(body)
    return bytes(view[_PREFIX.size:_PREFIX.size + n]), view[_PREFIX.size + n:]


def masks_of(header: EpisodeBatchHeader, data: memoryview) -> list[np.ndarray]:
    """Each episode's (K, h, w) uint8 masks, views of ``data``; a WireError when the sizes disagree."""
    sizes = [e.samples * e.mask_shape[0] * e.mask_shape[1] for e in header.episodes]
    if sum(sizes) != len(data):
        raise WireError(f"the header's episodes declare {sum(sizes)} bytes of masks (samples x h x w each), "
                        f"the body carries {len(data)}")
    out, offset = [], 0
    flat = np.frombuffer(data, np.uint8)
    for e, size in zip(header.episodes, sizes, strict=True):
        out.append(flat[offset:offset + size].reshape(e.samples, *e.mask_shape))
        offset += size
    return out


def maps_field(maps: np.ndarray) -> tuple[MapsLayout, bytes]:
    """The layout and bytes of (K, h, w) float reward maps: float16 when that loses nothing, else float32."""
    maps = np.ascontiguousarray(maps, np.float32)
    half = maps.astype("<f2")
    if np.array_equal(half.astype(np.float32), maps, equal_nan=True):
        return MapsLayout(dtype="float16", shape=maps.shape), half.tobytes()
    return MapsLayout(dtype="float32", shape=maps.shape), maps.astype("<f4").tobytes()


def read_maps(layout: MapsLayout, data: bytes) -> np.ndarray:
    """(K, h, w) float32 reward maps from an entry's ``maps`` field."""
    dtype = np.dtype("<f2" if layout.dtype == "float16" else "<f4")
    if len(data) != math.prod(layout.shape) * dtype.itemsize:
        raise WireError(f"maps: {len(data)} bytes do not fill a {layout.dtype} array of shape {layout.shape}")
    return np.frombuffer(data, dtype).reshape(layout.shape).astype(np.float32)


@dataclass(slots=True)
class Sample:
    """One sample's outcome, whichever form of entry carried it."""

    episode_id: str
    sample_index: int
    reward: float | None = None
    reward_map: np.ndarray | None = None  # (h, w) float32, NaN where no reward
    error: str | None = None
    policy_version: int = 0
    source: str = "gt"


def samples_of(fields: dict[bytes, bytes]) -> list[Sample]:
    """The samples of one results-stream entry: K of a v2 entry, one of a v1 entry."""
    if b"episode" in fields:
        entry = EpisodeResult.model_validate_json(fields[b"episode"])
        common = {"episode_id": entry.episode_id, "policy_version": entry.policy_version, "source": entry.source}
        if entry.error is not None:
            return [Sample(sample_index=j, error=entry.error, **common) for j in range(entry.samples)]
        if entry.maps is not None:
            maps = read_maps(entry.maps, fields[b"maps"])
            return [Sample(sample_index=j, reward_map=maps[j], **common) for j in range(entry.samples)]
        return [Sample(sample_index=j, reward=r, **common) for j, r in enumerate(entry.rewards or [])]
    try:
        result = Result.model_validate_json(fields[b"payload"])
    except (KeyError, ValidationError) as exc:
        raise WireError(f"not a results entry: fields {sorted(fields)}") from exc
    from rss_core.codec import decode_array

    reward_map = decode_array(result.reward_map) if result.reward_map is not None else None
    return [Sample(result.episode_id, result.sample_index, result.reward, reward_map, result.error,
                   result.policy_version, result.source)]
