"""Reading what the queues hold and what the workers counted, for people and machines."""

from __future__ import annotations

from dataclasses import dataclass

from loa.engine.binds import read_binds
from loa.engine.connection import connect
from loa.engine.embedded import redis_url_for
from loa.engine.keys import shard_keys
from loa.engine.queue import Queues
from loa.message import FINAL
from loa.settings import Settings


@dataclass(slots=True)
class RouteStatus:
    """One route's backlog (batches) and counters (messages), all lanes together."""

    route: str
    waiting: int
    in_flight: int
    delayed: int
    accepted: int = 0
    failed: int = 0
    dead: int = 0
    expired: int = 0
    cancelled: int = 0
    suppressed: int = 0
    fallback: int = 0
    retried: int = 0
    throttled: int = 0
    redelivered: int = 0
    unknown: int = 0
    possible_duplicate: int = 0
    fallback_timeout: int = 0  # accepted here, no delivered receipt in time: sent on the next
    fallback_failed: int = 0  # failed here for good, or gave up: handed to the next channel
    binds_up: int = 0  # receiving binds (SMPP) up over its live workers
    binds_down: int = 0  # and those down, being bound again

    @property
    def binds(self) -> str:
        """Receiving binds as "up/held", or "-" for a route that holds none (or no worker runs)."""
        total = self.binds_up + self.binds_down
        return f"{self.binds_up}/{total}" if total else "-"

    @property
    def finished(self) -> int:
        """Messages with a final outcome."""
        return sum(getattr(self, outcome.value) for outcome in FINAL)


async def route_status(queues: Queues, settings: Settings, route: str) -> RouteStatus:
    """Sum one route's shards."""
    shards = shard_keys(settings.namespace, route, settings.route(route).shards)
    backlog = await queues.backlog(shards)
    counts = await queues.stats(shards)
    status = RouteStatus(
        route=route,
        waiting=sum(v for k, v in backlog.items() if k not in ("pending", "delayed")),
        in_flight=backlog["pending"],
        delayed=backlog["delayed"],
    )
    for key, value in counts.items():
        outcome = key.split(":", 1)[1]
        if hasattr(status, outcome):
            setattr(status, outcome, getattr(status, outcome) + value)
    binds = (await read_binds(queues.redis, settings.namespace, [route])).get(route)
    if binds is not None:
        status.binds_up, status.binds_down = binds.up, binds.down
    return status


async def read_statuses(settings: Settings) -> list[RouteStatus]:
    """Every route's status; an unreachable server is the answer, even with no route."""
    with redis_url_for(settings.redis_url, settings.data_dir) as (url, _):
        redis = connect(url)
        try:
            await redis.ping()
            queues = Queues(redis, settings.namespace)
            return [await route_status(queues, settings, name) for name in settings.routes]
        finally:
            await redis.aclose()
