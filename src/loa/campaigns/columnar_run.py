"""Running the columnar planner: batches through the Redis checks onto the queues, resumably.

Each batch meets Redis for opt-outs and the frequency cap only when the campaign has any (one
call each per batch), and for nothing else: deduplication is the planner's bitmap. Every
CHECKPOINT_ROWS rows the partial batches are flushed, the bitmap's delta is stored, and then
the checkpoint that counts it: a planner killed anywhere in between starts again from the
previous checkpoint with exactly the memory it had there.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from loa.campaigns import planner as rows
from loa.campaigns.columnar import Candidates, ColumnarPlanner, eligible
from loa.campaigns.columns import read_columns
from loa.campaigns.numbers import e164
from loa.campaigns.partitions import Partition
from loa.campaigns.planner import (
    Batcher,
    Checkpoint,
    Pending,
    Planner,
    RedisChecks,
    Report,
    plan_audience,
)
from loa.campaigns.seen import SeenNumbers
from loa.engine.connection import RedisClient
from loa.engine.enqueue import Enqueuer, Origin
from loa.engine.keys import campaign_seen_numbers_key
from loa.engine.queue import Queues
from loa.errors import PlanError
from loa.message import Message

GC_ALLOCATIONS = 50_000  # allocations between collections of the youngest generation


class Run:
    """One columnar planning run of one partition."""

    def __init__(
        self, planner: Planner, redis: RedisClient, partition: Partition, queue: bool
    ) -> None:
        self.planner = planner
        self.redis = redis
        self.partition = partition
        self.queue = queue
        self.work = ColumnarPlanner(planner, partition)
        self.seen = SeenNumbers(deltas=queue)
        settings, namespace = planner.settings, planner.settings.namespace
        window = planner.plan.limits.frequency_cap
        self.checks = RedisChecks(
            redis, namespace, "", planner.campaign, int(window.total_seconds()) if window else None
        )
        self.key = campaign_seen_numbers_key(namespace, planner.campaign)
        self.enqueuer: Enqueuer | None = None
        if queue:
            prefix = partition.prefix(planner.campaign)
            origin = Origin(planner.campaign, prefix, planner.plan.lane, planner.expires_ms)
            self.enqueuer = Enqueuer(Queues(redis, namespace), settings, origin)

    async def restore(self, state: Checkpoint) -> None:
        """Reload the seen numbers the checkpoint counts (and none stored after it)."""
        label = self.partition.label
        for number in range(state.seen_blobs):
            blob = await self.redis.hget(self.key, f"{label}:{number}")
            if blob is None:
                raise RuntimeError(f"seen-number delta {label}:{number} is missing")
            self.seen.load(blob if isinstance(blob, bytes) else str(blob).encode("latin-1"))

    async def settle(self, picked: Candidates, batcher: Batcher) -> None:
        """Deduplicate, check opt-outs and the cap, count, and batch what is left."""
        kept = np.flatnonzero(self.seen.claim(picked.values))
        counts = picked.counts
        counts.duplicate += len(picked.values) - len(kept)
        kept = self._drop(picked, kept, await self._opted(picked, kept), "suppressed")
        kept = self._drop(picked, kept, await self._blocked(picked, kept), "capped")
        self.work.count(picked, kept)
        if len(kept) and not counts.samples:
            first = int(kept[0])
            body = self.work.contents[int(picked.contents[first])][0]
            language = self.planner.plan.language
            counts.sample("sms", language, e164(picked.values[kept[:1]])[0], body)
        if self.queue and len(kept):
            await batcher.put(_in_line_order(batcher, self.work.messages(picked, kept)))

    async def _opted(self, picked: Candidates, kept: Any) -> Any:
        """Who of the kept opted out (None: nobody has; their numbers are then never spelled)."""
        if not len(kept) or not await self.checks.any_opt_outs():
            return None
        return await self.checks.opted(e164(picked.values[kept]))

    async def _blocked(self, picked: Candidates, kept: Any) -> Any:
        reached = self.checks.reached
        return await reached.blocked(picked.values[kept]) if reached and len(kept) else None

    def _drop(self, picked: Candidates, kept: Any, flags: Any, counter: str) -> Any:
        """The candidates `flags` does not mark (None: all), the others counted as `counter`."""
        if flags is None:
            return kept
        left = ~np.asarray(flags, bool)
        setattr(picked.counts, counter, getattr(picked.counts, counter) + int((~left).sum()))
        return kept[left]

    async def store_seen(self, state: Checkpoint) -> int:
        """Store the bitmap's delta since the last checkpoint; the count the next one holds."""
        blob = self.seen.delta()
        if not blob or not self.queue:
            return state.seen_blobs
        await self.redis.hset(self.key, f"{self.partition.label}:{state.seen_blobs}", blob)
        return state.seen_blobs + 1


async def plan_columns(
    planner: Planner,
    redis: RedisClient,
    *,
    queue: bool,
    checkpoint: Checkpoint | None = None,
    save: Any = None,
    partition: Partition | None = None,
) -> Report:
    """Plan (or, in a dry run, count) the audience a column batch at a time."""
    _system_allocator()
    with _few_collections():
        return await _plan_columns(planner, redis, queue, checkpoint, save, partition)


def _system_allocator() -> None:
    """Arrow's default allocator (mimalloc) keeps some 40 MB of the chunks it freed resident;
    the planner allocates and frees one chunk at a time, which malloc hands back at once."""
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """Planning makes millions of short-lived messages and no cycles: the collector's default
    (a collection every 700 allocations) would cost a quarter of its time."""
    before = gc.get_threshold()
    gc.set_threshold(GC_ALLOCATIONS, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


async def _plan_columns(
    planner: Planner,
    redis: RedisClient,
    queue: bool,
    checkpoint: Checkpoint | None,
    save: Any,
    partition: Partition | None,
) -> Report:
    run = Run(planner, redis, partition or Partition(), queue)
    state = checkpoint or Checkpoint(None, Report(), {}, columnar=True)
    state.columnar = True
    await run.restore(state)
    if run.enqueuer is not None:
        await run.enqueuer.prepare()
    batcher = Batcher(planner, run.enqueuer, state)
    since = 0
    every = rows.CHECKPOINT_ROWS
    for batch in read_columns(planner.audience, state.resume, every):
        picked = run.work.work(batch)
        await run.settle(picked, batcher)
        state.report.add(picked.counts)
        since += batch.rows
        if since >= every and save is not None:
            await _checkpoint(run, batcher, state, batch.checkpoint, save)
            since = 0
    await batcher.flush(in_line_order=True)
    if save is not None:
        state.seen_blobs = await run.store_seen(state)
        state.regions = sorted(batcher.regions)
        state.resume, state.finished = None, True
        await save(state)
    return state.report


def _in_line_order(
    batcher: Batcher, groups: dict[tuple[str, str], list[Message]]
) -> list[tuple[Pending, list[Message]]]:
    """The groups (per route and region) into batches; the full ones in the order the row
    planner fills them, by their last message's line, so both number them alike."""
    for _, region in groups:  # regions met in line order, as the row planner meets them
        batcher.region(region)
    full = []
    for (route, region), messages in groups.items():
        full += batcher.add_route((route, 0), messages, region)
    full.sort(key=lambda item: int(item[1][-1].id))
    return full


async def _checkpoint(
    run: Run, batcher: Batcher, state: Checkpoint, resume: tuple[int, int] | None, save: Any
) -> None:
    await batcher.flush(in_line_order=True)
    state.seen_blobs = await run.store_seen(state)
    state.resume = resume
    state.sequence = batcher.sequence
    state.regions = sorted(batcher.regions)
    await save(state)


async def plan_any(
    planner: Planner,
    redis: RedisClient,
    *,
    queue: bool,
    checkpoint: Checkpoint | None = None,
    save: Any = None,
    partition: Partition | None = None,
) -> Report:
    """Plan with the columnar planner where it applies, else with the row planner; a run
    started by one planner is finished by the same one."""
    fresh = checkpoint is None or (checkpoint.resume is None and not checkpoint.sequence)
    if eligible(planner) and (fresh or (checkpoint is not None and checkpoint.columnar)):
        return await plan_columns(
            planner, redis, queue=queue, checkpoint=checkpoint, save=save, partition=partition
        )
    if partition is not None and not partition.whole:
        raise PlanError("only a single-channel SMS plan without send times can be partitioned")
    return await plan_audience(planner, redis, queue=queue, checkpoint=checkpoint, save=save)
