"""Sets of numbers packed for Redis: sorted, delta-coded, compressed (a few bytes a number).

One format for the planner's seen deltas (`campaigns.seen`) and the frequency memory's entries
(`campaigns.reached`): the first number and the gaps' width (two little-endian int64), then
the gaps (uint32, or int64 when one is 2**32 or more), through zlib. Compressed, not hashed:
each number comes back exactly, which a restart needs, and which is why an erasure opens
every set (`without`). Workers pack a chunk's numbers without numpy (a list of ints), so a
worker process never loads it; the planner packs numpy arrays, vectorised. Unpacking is for
planners and erasures, and loads numpy then.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from typing import Any

_HEAD = struct.Struct("<qq")
_NARROW = 2**32  # gaps below this are four bytes each


def pack(numbers: Any) -> bytes:
    """Sorted distinct numbers (a numpy int64 array, or a list of ints) as one packed set
    (b"": none)."""
    if not len(numbers):
        return b""
    if isinstance(numbers, list):
        return _pack_list(numbers)
    import numpy as np  # a numpy array came in: numpy is loaded already

    gaps = np.diff(numbers)
    narrow = not len(gaps) or int(gaps.max()) < _NARROW
    head = _HEAD.pack(int(numbers[0]), 4 if narrow else 8)
    return zlib.compress(head + gaps.astype("<u4" if narrow else "<i8").tobytes(), 1)


def _pack_list(numbers: list[int]) -> bytes:
    gaps = [b - a for a, b in itertools.pairwise(numbers)]
    narrow = not gaps or max(gaps) < _NARROW
    body = struct.pack(f"<{len(gaps)}{'I' if narrow else 'q'}", *gaps)
    return zlib.compress(_HEAD.pack(numbers[0], 4 if narrow else 8) + body, 1)


def unpack(blob: bytes) -> Any:
    """The sorted numbers (numpy int64) of one packed set."""
    import numpy as np  # planners and erasures unpack; they have numpy loaded

    if not blob:
        return np.zeros(0, np.int64)
    data = zlib.decompress(blob)
    first, width = _HEAD.unpack_from(data)
    gaps = np.frombuffer(data[_HEAD.size :], "<u4" if width == 4 else "<i8")
    return np.concatenate([[first], first + np.cumsum(gaps.astype(np.int64))]).astype(np.int64)


def without(blob: bytes, number: int) -> bytes | None:
    """The packed set without `number`, packed again; None when it does not hold it."""
    numbers = unpack(blob)
    keep = numbers[numbers != number]
    return None if len(keep) == len(numbers) else pack(keep)
