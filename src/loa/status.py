"""Reading what the queues hold and what the workers counted, for people and machines."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson
from rich.console import Console
from rich.table import Table

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
    return status


async def print_status(settings: Settings, as_json: bool) -> None:
    """Print every route's status as a table or JSON."""
    with redis_url_for(settings.redis_url, settings.data_dir) as (url, _):
        redis = connect(url)
        try:
            queues = Queues(redis, settings.namespace)
            rows = [await route_status(queues, settings, name) for name in settings.routes]
        finally:
            await redis.aclose()
    if as_json:
        print(orjson.dumps([asdict(r) for r in rows], option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title="loa routes")
    for column in ("route", "waiting", "in flight", "retrying", *FINAL, "retried", "throttled"):
        table.add_column(column, justify="left" if column == "route" else "right")
    for r in rows:
        table.add_row(
            r.route,
            *(
                str(v)
                for v in (
                    r.waiting,
                    r.in_flight,
                    r.delayed,
                    r.accepted,
                    r.failed,
                    r.dead,
                    r.expired,
                    r.retried,
                    r.throttled,
                )
            ),
        )
    Console().print(table)
