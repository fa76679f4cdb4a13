"""What every part of one route's runner shares: its settings, adapter, queues, limits, metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from loa.adapters.base import Adapter
from loa.engine.control import CampaignControls
from loa.engine.envelope import Batch
from loa.engine.events import Correlator
from loa.engine.keys import ShardKeys, shard_keys
from loa.engine.metrics import Metrics
from loa.engine.queue import Queues
from loa.engine.ratelimit import RateLimiter
from loa.engine.silence import Silence
from loa.settings import RouteSettings, WorkerSettings


@dataclass(slots=True)
class RouteContext:
    """One route inside one worker process, as its scheduler, gate and owner of batches see it."""

    name: str
    limits: RouteSettings
    adapter: Adapter
    queues: Queues
    limiter: RateLimiter
    metrics: Metrics
    consumer: str
    worker: WorkerSettings
    stopping: asyncio.Event
    controls: CampaignControls | None = None
    correlator: Correlator | None = None  # set when the adapter's provider sends receipts
    route_shards: Mapping[str, int] = field(default_factory=dict)  # fallback targets' shards
    silence: Silence | None = None  # arms fallback timers of messages that wait for a receipt
    shards: list[ShardKeys] = field(init=False)

    def __post_init__(self) -> None:
        self.route_shards = dict(self.route_shards)
        self.shards = shard_keys(self.queues.namespace, self.name, self.limits.shards)

    def fields(self, batch: Batch) -> dict[str, str]:
        """Structured log fields for a batch: its route, and its campaign when it has one."""
        if batch.campaign:
            return {"route": self.name, "campaign": batch.campaign}
        return {"route": self.name}

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the worker is asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
