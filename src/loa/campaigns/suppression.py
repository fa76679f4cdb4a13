"""The opt-out list: normalised addresses nobody may message, checked at planning and sending."""

from __future__ import annotations

from collections.abc import Iterable

from loa.engine.connection import RedisClient
from loa.engine.control import suppression_key
from loa.errors import InvalidPhone
from loa.phone import canonical

CHUNK = 1000


class Suppression:
    """Add, remove and check opted-out addresses."""

    def __init__(self, redis: RedisClient, namespace: str) -> None:
        self.redis = redis
        self.key = suppression_key(namespace)

    async def add(self, addresses: Iterable[str]) -> int:
        """Opt addresses out; returns how many were new. A bad one stops it, saying which."""
        added = 0
        for chunk in _chunks(_canonical_all(addresses)):
            added += int(await self.redis.sadd(self.key, *chunk))
        return added

    async def remove(self, addresses: Iterable[str]) -> int:
        """Opt addresses back in; returns how many were on the list."""
        removed = 0
        for chunk in _chunks(_canonical_all(addresses)):
            removed += int(await self.redis.srem(self.key, *chunk))
        return removed

    async def check(self, addresses: list[str]) -> list[bool]:
        """Which addresses are opted out."""
        found = await self.redis.smismember(self.key, [canonical(a) for a in addresses])
        return [bool(flag) for flag in found]


def _canonical_all(addresses: Iterable[str]) -> Iterable[str]:
    for position, address in enumerate(addresses, start=1):
        if address.strip():
            try:
                yield canonical(address)
            except InvalidPhone as exc:
                raise InvalidPhone(f"address {position}: {exc}") from None


def _chunks(items: Iterable[str]) -> Iterable[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch
