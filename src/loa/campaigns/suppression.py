"""The opt-out list: normalised addresses nobody may message, checked at planning and sending."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from loa.engine.connection import RedisClient
from loa.engine.control import opted_out, optout_digest
from loa.engine.keys import optout_salt_key, suppression_key
from loa.errors import InvalidPhone
from loa.phone import canonical

CHUNK = 1000


class Suppression:
    """Add, remove and check opted-out addresses."""

    def __init__(self, redis: RedisClient, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self.key = suppression_key(namespace)

    async def add(self, addresses: Iterable[str]) -> int:
        """Opt addresses out; returns how many were new. A bad one stops it, saying which."""
        added = 0
        for chunk in _chunks(_canonical_all(addresses)):
            added += int(await self.redis.sadd(self.key, *chunk))
        return added

    async def remove(self, addresses: Iterable[str]) -> int:
        """Opt addresses back in; returns how many were on the list (as they are or erased)."""
        salt = await self.redis.get(optout_salt_key(self.namespace))
        removed = 0
        for chunk in _chunks(_canonical_all(addresses)):
            if salt:
                raw = salt if isinstance(salt, bytes) else str(salt).encode()
                chunk = chunk + [optout_digest(raw, address) for address in chunk]
            removed += int(await self.redis.srem(self.key, *chunk))
        return removed

    async def check(self, addresses: list[str]) -> list[bool]:
        """Which addresses are opted out (as they are, or as the digest of an erased one)."""
        return await opted_out(self.redis, self.namespace, [canonical(a) for a in addresses])

    async def erase(self, address: str) -> bool:
        """An opted-out `address` stays opted out as a salted digest only, with no number kept;
        True if it is opted out (as it was, or already as a digest)."""
        address = canonical(address)
        if not await self.redis.sismember(self.key, address):
            return (await self.check([address]))[0]
        salt_key = optout_salt_key(self.namespace)
        await self.redis.set(salt_key, secrets.token_bytes(32), nx=True)
        salt = await self.redis.get(salt_key)
        raw = salt if isinstance(salt, bytes) else str(salt).encode()
        # the digest goes in before the number leaves: never a moment with neither
        await self.redis.sadd(self.key, optout_digest(raw, address))
        await self.redis.srem(self.key, address)
        return True


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
