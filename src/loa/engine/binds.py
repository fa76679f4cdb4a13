"""Bind state: each worker process says how its routes' receiving binds are, for everyone to read.

A worker holds open the connections its providers deliver on (SMPP transceiver and receiver
binds: see `Listens` in loa.adapters.base). Every REPORT_PERIOD it writes their state to the
hash `{ns}:binds:ROUTE`, one field per worker process, and sets the gauge
`loa_route_binds{route,state}`. `loa status` and `/readyz` read the hash; a field older than
STALE_AFTER belongs to a worker that is gone and is ignored (and removed by its readers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from redis.exceptions import RedisError

from loa.adapters.base import BindState, Listens
from loa.engine.connection import RedisClient, text
from loa.engine.envelope import now_ms
from loa.engine.keys import binds_key
from loa.engine.metrics import Metrics

log = logging.getLogger(__name__)

REPORT_PERIOD = 1.0  # seconds between a worker's reports
STALE_AFTER = 5.0  # seconds after which a worker's report no longer counts
KEY_TTL = 60  # seconds the hash outlives its last report (a route nobody serves any more)


@dataclass(slots=True)
class RouteBinds:
    """A route's receiving binds over every live worker process: how many up, how many down."""

    up: int = 0
    down: int = 0
    workers: int = 0
    errors: list[str] = field(default_factory=list)  # the kinds of error of the binds down

    @property
    def total(self) -> int:
        """Binds held or tried."""
        return self.up + self.down


class BindReporter:
    """Writes one worker process's bind states to Redis and to its gauge, every REPORT_PERIOD."""

    def __init__(
        self,
        redis: RedisClient,
        namespace: str,
        consumer: str,
        adapters: Mapping[str, Listens],
        metrics: Metrics,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.consumer = consumer
        self.adapters = dict(adapters)
        self.metrics = metrics

    async def run(self, stopping: asyncio.Event) -> None:
        """Report until `stopping`; then take this worker's reports back."""
        if not self.adapters:
            return
        while not stopping.is_set():
            await self.report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), REPORT_PERIOD)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            pipe = self.redis.pipeline(transaction=False)
            for route in self.adapters:
                pipe.hdel(binds_key(self.namespace, route), self.consumer)
            await pipe.execute()

    async def report(self) -> None:
        """Set the gauges and write the states; Redis away only delays the written part."""
        now = now_ms()
        pipe = self.redis.pipeline(transaction=False)
        for route, adapter in self.adapters.items():
            states = list(adapter.binds())
            up = sum(1 for state in states if state.up)
            self.metrics.route_binds.labels(route, "up").set(up)
            self.metrics.route_binds.labels(route, "down").set(len(states) - up)
            key = binds_key(self.namespace, route)
            pipe.hset(key, self.consumer, _encode(now, states))
            pipe.expire(key, KEY_TTL)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("bind states not written", extra={"error": type(exc).__name__})


def _encode(now_ms: int, states: Sequence[BindState]) -> bytes:
    binds = [{"kind": s.kind, "up": s.up, "error": s.error} for s in states]
    return orjson.dumps({"at": now_ms, "binds": binds})


async def read_binds(
    redis: RedisClient, namespace: str, routes: Sequence[str]
) -> dict[str, RouteBinds]:
    """Each route's binds as live workers last reported them; routes nobody reports are left out."""
    pipe = redis.pipeline(transaction=False)
    for route in routes:
        pipe.hgetall(binds_key(namespace, route))
    replies: list[dict[bytes, bytes]] = await pipe.execute()
    oldest = (time.time() - STALE_AFTER) * 1000
    found: dict[str, RouteBinds] = {}
    stale: list[tuple[str, str]] = []
    for route, reports in zip(routes, replies, strict=True):
        for consumer, raw in reports.items():
            report = orjson.loads(raw)
            if report["at"] < oldest:
                stale.append((route, text(consumer)))
                continue
            binds = found.setdefault(route, RouteBinds())
            binds.workers += 1
            for bind in report["binds"]:
                if bind["up"]:
                    binds.up += 1
                    continue
                binds.down += 1
                kind = str(bind["error"]).partition(":")[0] or "not bound yet"
                if kind not in binds.errors:
                    binds.errors.append(kind)
    if stale:  # reports of workers that died without taking them back
        pipe = redis.pipeline(transaction=False)
        for route, worker in stale:
            pipe.hdel(binds_key(namespace, route), worker)
        await pipe.execute()
    return found
