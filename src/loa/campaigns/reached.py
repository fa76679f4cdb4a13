"""Whom campaigns reached, for other campaigns' frequency caps: packed number sets per UTC day.

Workers append one entry for each chunk a provider accepted to the day's list
(`engine.keys.reached_key`, reach.lua sets its expiry in the same step): the campaign, the time,
and the people's numbers packed as the planner's seen deltas are (`campaigns.packing`: a few
bytes a person, where a hash field a person took ~80). A planner with a cap reads the entries of
other campaigns within its window into a bitmap once, a page at a time, then at each batch only
the entries appended since, so a check costs Redis no command per recipient. The lists are only
ever appended to; an erasure rewrites an entry in its place (privacy/lua/rewrite.lua), so the
positions planners have read up to stay true.

This module is imported by every worker (which only writes): what reads (the bitmap, numpy)
is imported by the reader.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from loa.campaigns.packing import pack, without
from loa.engine.connection import RedisClient, text
from loa.engine.keys import legacy_frequency_key, reached_key

if TYPE_CHECKING:
    from loa.campaigns.seen import SeenNumbers

DAY_SECONDS = 86_400
PAGE = 2_000  # entries read in one reply: a few hundred kB, however long the list
_NOT_A_PHONE = 1 << 62  # above every E.164 number: where other addresses' digests go


def person_number(person: str) -> int:
    """The integer a person is remembered by: their E.164 number's digits, or (an address
    that is not an E.164 number) 62 bits of its digest, which no phone number can equal."""
    digits = person[1:] if person.startswith("+") else ""
    if digits.isascii() and digits.isdigit() and len(digits) <= 15 and digits[0] != "0":
        return int(digits)
    digest = hashlib.blake2b(person.encode(), digest_size=8).digest()
    return _NOT_A_PHONE | (int.from_bytes(digest, "big") >> 2)


def entry(campaign: str, at: int, people: Iterable[str]) -> bytes:
    """One list entry: whom `campaign` reached at `at` (epoch seconds)."""
    numbers = sorted({person_number(person) for person in people})
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


async def pages(
    redis: RedisClient, key: str, start: int = 0
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """(index of the first, entries) of a list from `start` on, PAGE entries at a time."""
    while True:
        found: Any = await redis.lrange(key, start, start + PAGE - 1)
        if found:
            yield start, found
        if len(found) < PAGE:
            return
        start += len(found)


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
        from loa.campaigns.seen import SeenNumbers

        self.redis = redis
        self.namespace = namespace
        self.campaign = campaign
        self.window = window  # seconds
        self.clock = clock
        self.numbers: SeenNumbers = SeenNumbers(deltas=False)
        self.since: float | None = None
        self.read: dict[str, int] = {}  # day key -> entries read from it

    async def blocked(self, values: Any) -> Any:
        """A mask over `values` (numpy int64): True for people another campaign reached."""
        await self.refresh()
        return self.numbers.has(values)

    async def blocked_people(self, people: Sequence[str]) -> list[bool]:
        """`blocked` for people by address (`person_number`)."""
        import numpy as np

        values = np.fromiter((person_number(p) for p in people), np.int64, len(people))
        return [bool(flag) for flag in (await self.blocked(values)).tolist()]

    async def refresh(self) -> None:
        """Read the entries appended since the last look: one round trip when each day has
        fewer than a page new, as between two batches; a page at a time when more."""
        now = self.clock()
        if self.since is None:
            self.since = now - self.window
            await self._read_legacy(self.since, now)
        keys = [reached_key(self.namespace, day) for day in days(self.since, now)]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.lrange(key, self.read.get(key, 0), self.read.get(key, 0) + PAGE - 1)
        for key, first in zip(keys, await pipe.execute(), strict=True):
            self._take(key, first)
            if len(first) == PAGE:
                async for _, more in pages(self.redis, key, self.read[key]):
                    self._take(key, more)

    async def _read_legacy(self, since: float, now: float) -> None:
        """Whom other campaigns reached within the window as kept before the packed lists
        (`legacy_frequency_key`): read once, so a cap holds across an upgrade."""
        import numpy as np

        for day in days(since, now):
            key = legacy_frequency_key(self.namespace, day)
            found = []
            async for person, value in self.redis.hscan_iter(key, count=PAGE):
                campaign, _, at = text(value).partition("@")
                if campaign != self.campaign and float(at or 0) >= since:
                    found.append(person_number(text(person)))
            if found:
                self.numbers.claim(np.array(found, np.int64))

    def _take(self, key: str, entries: list[bytes]) -> None:
        self.read[key] = self.read.get(key, 0) + len(entries)
        for raw in entries:
            found = read_entry(raw)
            if found is None:
                continue
            campaign, at, blob = found
            if campaign != self.campaign and self.since is not None and at >= self.since:
                self.numbers.load(blob)
