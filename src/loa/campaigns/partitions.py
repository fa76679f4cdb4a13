"""Partitions of an audience: a number always falls in the same one, so planners run apart.

Partition k of P plans exactly the rows whose number hashes to k (rows without a valid number
are counted by partition 0 alone), under its own checkpoint and batch-id prefix; deduplication
stays exact because equal numbers meet in one partition, and the counters add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from loa.errors import PlanError

_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: nearby numbers spread out
MAX_PARTITIONS = 256


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

    def mine(self, values: Any) -> Any:
        """A mask over numbers (numpy int64): those of this partition."""
        if self.whole:
            return np.ones(len(values), bool)
        return partition_of(values, self.count) == self.index


def partition_of(values: Any, count: int) -> Any:
    """The partition of each number (numpy int64 in, numpy int64 out)."""
    mixed = values.astype(np.uint64) * _MIX
    return ((mixed >> np.uint64(32)) % np.uint64(count)).astype(np.int64)
