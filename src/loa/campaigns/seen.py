"""Whom one planning run has reached, by number: a bitmap, checkpointed as compressed deltas.

Deduplication keys a recipient by the integer of their number. Vietnamese mobiles (+84 and
nine digits, nearly everyone) are one bit each in a bitmap per two-digit prefix (1.25 MB each,
made when the prefix is first met: some 40 mobile prefixes are in use), so the planner's memory
is bounded whatever the audience's size. Other numbers go in a set.

The bitmap lives in the planner and costs Redis no command per recipient. What Redis keeps is
what the planner added since its last checkpoint, sorted, delta-coded and compressed (a few
bytes a recipient), written just before the checkpoint that counts it: a planner started
again reloads the deltas its checkpoint counts and ignores any written after it, so the rows
it reads again are decided exactly as the first time, and nobody is queued twice or lost.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loa.campaigns.numbers import VN
from loa.campaigns.packing import pack, unpack

SPACE = 1_000_000_000  # the nine digits after +84
BLOCK = 10_000_000  # numbers of one two-digit prefix: a bitmap of 1.25 MB, made when first used


class SeenNumbers:
    """The numbers one planning run has queued or counted, and those added since a checkpoint."""

    def __init__(self, deltas: bool = True) -> None:
        self.blocks: dict[int, Any] = {}  # first two digits after +84 -> numpy uint8 bitmap
        self.others: set[int] = set()
        self._added: list[Any] = []
        self._deltas = deltas  # False: nothing is stored (a dry run), so nothing is kept for it

    def claim(self, values: Any) -> Any:
        """A mask over `values` (numpy int64, in line order): True for the first row of each
        number not seen before; every number is seen from now on."""
        unique, first = np.unique(values, return_index=True)
        fresh = self._fresh(unique)
        keep = np.zeros(len(values), bool)
        keep[first[fresh]] = True
        if self._deltas:
            self._added.append(unique[fresh])
        return keep

    def _fresh(self, unique: Any) -> Any:
        """Which of these sorted, distinct numbers are new; all are marked seen."""
        index = unique - VN
        inside = (index >= 0) & (index < SPACE)
        fresh = np.zeros(len(unique), bool)
        spots = index[inside]
        block_of = spots // BLOCK
        edges = np.flatnonzero(np.concatenate([[True], block_of[1:] != block_of[:-1], [True]]))
        found = (
            []
            if not len(spots)
            else [
                self._fresh_in(int(block_of[a]), spots[a:b] % BLOCK)
                for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)
            ]
        )
        fresh[np.flatnonzero(inside)] = np.concatenate(found) if found else []
        for position in np.flatnonzero(~inside).tolist():
            value = int(unique[position])
            if value not in self.others:
                self.others.add(value)
                fresh[position] = True
        return fresh

    def _fresh_in(self, block: int, spots: Any) -> Any:
        bits = self.blocks.get(block)
        if bits is None:
            bits = self.blocks[block] = np.zeros(BLOCK // 8, np.uint8)
        byte, bit = spots >> 3, np.left_shift(1, spots & 7).astype(np.uint8)
        new = (bits[byte] & bit) == 0
        byte, bit = byte[new], bit[new]
        if len(byte):  # sorted: numbers of one byte are neighbours, their bits or-ed together
            starts = np.flatnonzero(np.concatenate([[True], byte[1:] != byte[:-1]]))
            bits[byte[starts]] |= np.bitwise_or.reduceat(bit, starts)
        return new

    def has(self, values: Any) -> Any:
        """A mask over `values` (numpy int64): True for each number seen; nothing is marked."""
        index = values - VN
        inside = (index >= 0) & (index < SPACE)
        found = np.zeros(len(values), bool)
        for position in np.flatnonzero(~inside).tolist():
            found[position] = int(values[position]) in self.others
        spots = index[inside]
        block_of = spots // BLOCK
        hits = np.zeros(len(spots), bool)
        for block in np.unique(block_of).tolist():
            bits = self.blocks.get(block)
            if bits is None:
                continue
            here = block_of == block
            spot = spots[here] % BLOCK
            hits[here] = (bits[spot >> 3] & np.left_shift(1, spot & 7).astype(np.uint8)) != 0
        found[np.flatnonzero(inside)] = hits
        return found

    def delta(self) -> bytes:
        """The numbers added since the last call, packed: sorted, delta-coded, compressed."""
        added = np.sort(np.concatenate(self._added)) if self._added else np.zeros(0, np.int64)
        self._added = []
        return pack(added)

    def load(self, blob: bytes) -> None:
        """Mark the numbers of one `delta` as seen (a restart reading its checkpoints)."""
        values = unpack(blob)
        if len(values):
            self._fresh(np.unique(values))

