"""Partitions of an audience: a number always falls in the same one, so planners run apart.

Partition k of P plans exactly the rows whose number falls in k, under its own checkpoint and
batch-id prefix; deduplication stays exact because equal numbers meet in one partition, and the
counters add up. A number's partition is decided by its last three digits alone, which every
spelling of it ends with when it ends with three digits at all (`normalize` drops separators
and changes only a number's head: trunk zeros, country codes, the 2018 prefixes), so a
partition sets aside the other partitions' rows from the raw cells before it normalises
anything: each process normalises about 1/P of the file, not all of it. Rows without a valid
number are counted by the partition their cell's last three digits name, or by partition 0
when the cell does not end with three digits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from loa.errors import PlanError
from loa.settings import PlanningSettings

ENDINGS = 1000  # a number's partition is decided by its last three digits
_SPREAD = 7919  # coprime with ENDINGS: neighbouring endings go to different partitions
MAX_PARTITIONS = 256
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Partition:
    """Partition `index` of `count` (0-based)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Partition:
        """`k/P` as an operator writes it, k from 0 to P-1."""
        index, slash, count = text.partition("/")
        if not slash or not index.isdigit() or not count.isdigit():
            raise PlanError(f"partition {text!r}: expected k/P, such as 0/4")
        part = cls(int(index), int(count))
        if not 1 <= part.count <= MAX_PARTITIONS or part.index >= part.count:
            raise PlanError(f"partition {text!r}: k must be below P, P from 1 to {MAX_PARTITIONS}")
        return part

    @property
    def label(self) -> str:
        """`k/P`."""
        return f"{self.index}/{self.count}"

    @property
    def whole(self) -> bool:
        """Whether this is the only partition."""
        return self.count == 1

    def prefix(self, campaign: str) -> str:
        """The batch-id prefix of this partition's batches."""
        return campaign if self.whole else f"{campaign}.p{self.index}of{self.count}"

    def sift(self, cells: Any) -> tuple[Any, Any] | None:
        """The rows of a column of raw phone cells that may be this partition's (numpy
        indices), and which of them end with three digits (those are; the others are once
        their number is known). None for the whole audience: every row is."""
        if self.whole:
            return None
        import numpy as np  # here, not above: every `loa` command imports this module
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.compute as pc  # type: ignore[import-untyped]

        tail = pc.utf8_slice_codeunits(pc.fill_null(cells, ""), -3)
        digits = pc.and_(pc.equal(pc.binary_length(tail), 3), pc.ascii_is_decimal(tail))
        ends = pc.fill_null(digits, False).to_numpy(zero_copy_only=False)
        ending = np.zeros(len(ends), np.int64)
        if ends.any():
            ending[ends] = pc.cast(tail.filter(pa.array(ends)), pa.int64()).to_numpy()
        rows = np.flatnonzero(~ends | (_of_ending(ending, self.count) == self.index))
        return rows, ends[rows]

    def mine(self, values: Any) -> Any:
        """A mask over numbers (numpy int64): those of this partition."""
        if self.whole:
            import numpy as np  # (see sift)

            return np.ones(len(values), bool)
        return partition_of(values, self.count) == self.index


def default_count(audience_bytes: int, planning: PlanningSettings) -> int:
    """The partitions a partitionable plan is planned in when nobody names a count:
    planning.partitions (0: one per core) for an audience of planning.partition_min_mb or
    more; one below it, where starting processes costs about what they would save."""
    if audience_bytes < planning.partition_min_mb * MIB:
        return 1
    return min(planning.partitions or os.cpu_count() or 1, MAX_PARTITIONS)


def partition_of(values: Any, count: int) -> Any:
    """The partition of each number (numpy int64 in, numpy int64 out)."""
    return _of_ending(values % ENDINGS, count)


def _of_ending(endings: Any, count: int) -> Any:
    """The partition of each ending (0-999): every partition has ENDINGS/count of them, +-1."""
    return (endings * _SPREAD) % ENDINGS * count // ENDINGS
