"""The batches one route runner owns: held until settled, kept alive, adopted from the dead."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from loa.engine.context import RouteContext
from loa.engine.keys import ShardKeys
from loa.engine.queue import Taken

log = logging.getLogger(__name__)

CONSUMER_CLEANUP_PERIOD = 300.0  # seconds between sweeps of consumers that left
CONSUMER_FORGET_MS = 3_600_000  # a consumer with nothing pending, silent for an hour, has left
CLAIM_PERIOD_MAX = 2.0  # seconds between looks for abandoned batches, at most
CLAIM_ROUNDS = 64  # batches adopted from one shard per look, at most (one per lane each round)


class Ownership:
    """The held set, the heartbeat that keeps it, and the claimer that adopts what others left.

    `process` sends one batch to its end; adopted batches go to it at once.
    """

    def __init__(self, ctx: RouteContext, process: Callable[[Taken], Awaitable[None]]) -> None:
        self.ctx = ctx
        self.process = process
        # every batch this runner owns, waiting or sending, kept alive by the heartbeat
        self.held: dict[tuple[str, str], Taken] = {}
        self.claim_cursors: dict[str, str] = {}

    def hold(self, taken: list[Taken]) -> list[Taken]:
        """Register batches as ours until settled, so the heartbeat keeps them."""
        for one in taken:
            self.held[(one.stream, one.entry_id)] = one
        return taken

    def release(self, taken: Taken) -> None:
        """The batch is settled, or another worker has it: the heartbeat lets it go."""
        self.held.pop((taken.stream, taken.entry_id), None)

    async def heartbeat(self) -> None:
        """Refresh every held batch well within `claim_idle`, however long it waits or sends.

        A batch waiting for tokens on a slow route, or queued behind others in this runner, is
        alive; without this it would look abandoned and another worker would send it again.
        """
        ctx = self.ctx
        period = ctx.worker.claim_idle / 3
        while True:
            await asyncio.sleep(period)
            by_stream: dict[str, list[Taken]] = {}
            for taken in list(self.held.values()):
                by_stream.setdefault(taken.stream, []).append(taken)
            for stream, held in by_stream.items():
                lost = set(await ctx.queues.touch(stream, ctx.consumer, [t.entry_id for t in held]))
                for taken in held:
                    if taken.entry_id in lost and (stream, taken.entry_id) in self.held:
                        taken.lost = True

    async def claimer(self) -> None:
        """Adopt batches whose consumer went silent for `claim_idle` (a crashed worker).

        The first look is at start: a worker that replaces a crashed one adopts what it left
        at once, however short-lived it turns out to be itself.
        """
        ctx = self.ctx
        idle_ms = int(ctx.worker.claim_idle * 1000)
        period = max(0.2, min(ctx.worker.claim_idle / 4, CLAIM_PERIOD_MAX))
        last_cleanup = time.monotonic()
        first = True
        while not ctx.stopping.is_set():
            if not first:
                await ctx.pause(period)
            first = False
            if time.monotonic() - last_cleanup > CONSUMER_CLEANUP_PERIOD:
                last_cleanup = time.monotonic()
                for keys in ctx.shards:
                    await ctx.queues.forget_idle_consumers(keys, CONSUMER_FORGET_MS)
            for keys in ctx.shards:
                await self._claim_shard(keys, idle_ms)
                if ctx.stopping.is_set():
                    return

    async def _claim_shard(self, keys: ShardKeys, idle_ms: int) -> None:
        """Adopt one shard's abandoned batches, one per lane at a time, each sent at once.

        One at a time: a batch adopted and left waiting here would count as taken by this
        worker too, if it died in turn, and look like a batch that kills its workers.
        """
        ctx = self.ctx
        for _ in range(CLAIM_ROUNDS):
            if ctx.stopping.is_set():
                return
            claimed = await ctx.queues.claim(
                keys, ctx.consumer, idle_ms, self.claim_cursors, count=1
            )
            if not claimed:
                return
            for taken in self.hold(claimed):
                log.info(
                    "claimed a batch left by a silent worker",
                    extra={
                        **ctx.fields(taken.batch),
                        "entry": taken.entry_id,
                        "done": taken.progress.done if taken.progress else 0,
                    },
                )
                await self.process(taken)
