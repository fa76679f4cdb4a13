"""Whom campaigns reached, for other campaigns' frequency caps: packed number sets per UTC day.

Workers append one entry for each chunk a provider accepted to the day's list
(`engine.keys.reached_key`): the campaign, the time, and the people's numbers packed as the
planner's seen deltas are (sorted, delta-coded, compressed: some 5 bytes a person, where a hash
field a person took ~80). A planner with a cap reads the entries of other campaigns within its
window into a bitmap once, then at each batch only the entries appended since, so a check costs
Redis no command per recipient. The lists are only ever appended to; an erased campaign's
entries are emptied in place, so the positions planners have read up to stay true.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgpack
import numpy as np

from loa.campaigns.seen import SeenNumbers, pack, without
from loa.engine.connection import RedisClient
from loa.engine.keys import reached_key

DAY_SECONDS = 86_400
_NOT_A_PHONE = 1 << 62  # above every E.164 number: where other addresses' digests go


def person_number(person: str) -> int:
    """The integer a person is remembered by: their E.164 number's digits, or (an address
    that is not a phone number) 62 bits of its digest, which no phone number can equal."""
    digits = person[1:] if person.startswith("+") else ""
    if digits.isascii() and digits.isdigit() and len(digits) <= 15:
        return int(digits)
    digest = hashlib.blake2b(person.encode(), digest_size=8).digest()
    return _NOT_A_PHONE | (int.from_bytes(digest, "big") >> 2)


def entry(campaign: str, at: int, people: Iterable[str]) -> bytes:
    """One list entry: whom `campaign` reached at `at` (epoch seconds)."""
    numbers = np.unique(np.fromiter((person_number(p) for p in people), np.int64))
    return bytes(msgpack.packb([campaign, at, pack(numbers)]))


def read_entry(raw: bytes) -> tuple[str, int, bytes] | None:
    """An entry's campaign, time and packed numbers; None for an erased one."""
    if not raw:
        return None
    campaign, at, blob = msgpack.unpackb(raw, raw=False)
    return str(campaign), int(at), bytes(blob)


def entry_without(raw: bytes, number: int) -> bytes | None:
    """The entry with `number` taken out; None when it does not hold it."""
    found = read_entry(raw)
    if found is None:
        return None
    campaign, at, blob = found
    left = without(blob, number)
    return None if left is None else bytes(msgpack.packb([campaign, at, left]))


def days(since: float, now: float) -> list[float]:
    """One instant in each UTC day from `since` to `now`, oldest first."""
    first = int(since) - int(since) % DAY_SECONDS
    return [float(day) for day in range(first, int(now) + 1, DAY_SECONDS)]


class ReachedByOthers:
    """The people other campaigns reached within a campaign's cap window, as a planner sees them.

    The window is taken when the first batch is checked: an entry that ages out of it while
    the campaign plans still counts (a plan of 100 million takes minutes, a cap days).
    """

    def __init__(
        self,
        redis: RedisClient,
        namespace: str,
        campaign: str,
        window: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.campaign = campaign
        self.window = window  # seconds
        self.clock = clock
        self.numbers = SeenNumbers(deltas=False)
        self.since: float | None = None
        self.read: dict[str, int] = {}  # day key -> entries read from it

    async def blocked(self, values: Any) -> Any:
        """A mask over `values` (numpy int64): True for people another campaign reached."""
        await self.refresh()
        return self.numbers.has(values)

    async def blocked_people(self, people: Sequence[str]) -> list[bool]:
        """`blocked` for people by address (`person_number`)."""
        values = np.fromiter((person_number(p) for p in people), np.int64, len(people))
        return [bool(flag) for flag in (await self.blocked(values)).tolist()]

    async def refresh(self) -> None:
        """Read the entries appended since the last look (one round trip)."""
        now = self.clock()
        if self.since is None:
            self.since = now - self.window
        keys = [reached_key(self.namespace, day) for day in days(self.since, now)]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.lrange(key, self.read.get(key, 0), -1)
        for key, entries in zip(keys, await pipe.execute(), strict=True):
            self.read[key] = self.read.get(key, 0) + len(entries)
            for raw in entries:
                self._take(raw)

    def _take(self, raw: bytes) -> None:
        found = read_entry(raw)
        if found is None:
            return
        campaign, at, blob = found
        if campaign != self.campaign and self.since is not None and at >= self.since:
            self.numbers.load(blob)

