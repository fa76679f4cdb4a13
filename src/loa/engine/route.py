"""One route inside one worker process: N senders looping over batches, and a claimer.

The parts: `LaneView` (which lanes may go), `ProviderHealth` (hold after an unanswered send),
`Ownership` (held batches, heartbeat, claimer), `ChunkGate` (controls, opt-outs, limits before
each chunk) and `classify` (what a chunk's results mean); the runner sends and settles.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from loa.engine.backoff import throttle_delay
from loa.engine.classify import ChunkOutcome, carrying, classify
from loa.engine.context import RouteContext
from loa.engine.enqueue import pick_shard
from loa.engine.envelope import Batch, message_row, now_ms
from loa.engine.gate import ChunkGate
from loa.engine.health import ProviderHealth
from loa.engine.keys import shard_keys
from loa.engine.lanes import LaneView
from loa.engine.ownership import Ownership
from loa.engine.progress import Progress
from loa.engine.queue import Held, Taken, dead_letter
from loa.engine.silence import cancel
from loa.fallback import next_message, on_failure
from loa.message import Accepted, Failed, Lane, Message, Outcome, RetryLater, SendResult

log = logging.getLogger(__name__)

HELD_BACK_PAUSE = 0.02  # seconds a sender waits while a higher lane is being sent


class RouteRunner:
    """Moves one route's batches from its shards through its adapter, honouring its limits."""

    def __init__(self, ctx: RouteContext) -> None:
        self.ctx = ctx
        self.name = ctx.name
        self.lanes = LaneView(ctx)
        self.health = ProviderHealth(ctx)
        self.owner = Ownership(ctx, self.process)
        self.gate = ChunkGate(ctx, self.lanes)

    async def run(self) -> None:
        """Run the senders and the claimer until `stopping` is set and in-flight work settled."""
        name = self.name
        async with asyncio.TaskGroup() as group:
            heartbeat = group.create_task(self.owner.heartbeat(), name=f"{name}-heartbeat")
            loops = [
                group.create_task(self._sender(index), name=f"{name}-sender-{index}")
                for index in range(self.ctx.limits.concurrency)
            ]
            loops.append(group.create_task(self.owner.claimer(), name=f"{name}-claimer"))
            await asyncio.wait(loops)  # drained: nothing is held any more
            heartbeat.cancel()
            await self.health.close()
            await self.lanes.close()

    async def _sender(self, index: int) -> None:
        """Take a batch (higher lanes first), send it, settle it; block on a shard while idle."""
        ctx = self.ctx
        shards = ctx.shards
        offset = index % len(shards)
        block_ms = max(1, int(ctx.worker.idle_block * 1000))
        while not ctx.stopping.is_set():
            if not await self.health.until_healthy():
                continue
            # a lane outranks shard order: while any shard has urgent work, read no lower lane
            lowest = await self.lanes.top_lane()
            taken = None
            held = False
            for step in range(len(shards)):
                keys = shards[(offset + step) % len(shards)]
                got = await ctx.queues.take(keys, ctx.consumer, lowest)
                if got is Held.BACK:
                    held = True
                elif got is not None:
                    taken = got
                    offset = (offset + step + 1) % len(shards)
                    break
            if taken is not None:
                await self.process(self.owner.hold([taken])[0])
                continue
            if held or lowest != Lane.BULK:  # urgent batches are being sent: take no lower lane
                await ctx.pause(HELD_BACK_PAUSE)
                continue
            # nothing anywhere: wait on one shard's streams (Redis wakes us when a batch lands)
            offset = (offset + 1) % len(shards)
            arrived = await ctx.queues.wait_take(shards[offset], ctx.consumer, block_ms)
            for one in self.owner.hold(arrived):
                await self.process(one)

    async def process(self, taken: Taken) -> None:
        """Send a batch chunk by chunk, checkpointing between chunks, then settle it."""
        try:
            await self._process(taken)
        finally:
            self.owner.release(taken)

    async def _process(self, taken: Taken) -> None:
        ctx = self.ctx
        batch = taken.batch
        messages = batch.messages
        progress = taken.progress or Progress()
        self._bury_poison(taken, progress)
        # what a worker that died had handed to its adapter without recording the outcome: those
        # messages may have reached the provider, so sending them again is counted as a resend
        unsettled = range(progress.done, progress.handed)
        progress.handed = 0
        while progress.done < len(messages):
            if batch.expired(now_ms()):
                progress.counts[Outcome.EXPIRED] += len(messages) - progress.done
                progress.done = len(messages)
                break
            if ctx.stopping.is_set():  # draining: what was not sent goes back, unsent
                progress.requeue.extend(range(progress.done, len(messages)))
                progress.done = len(messages)
                break
            if not await self.health.until_healthy():
                continue  # stopping: the batch goes back above
            if taken.lost or not await self.gate.may_leave(batch, progress):
                break
            if await self.lanes.outranked(batch.lane):
                self._give_way(taken, progress)
                break
            if not await self._chunk(taken, progress, unsettled):
                break
            if progress.done < len(messages) and not await ctx.queues.checkpoint(taken, progress):
                taken.lost = True
        if taken.lost:
            log.warning(
                "batch was claimed by another worker; leaving it to them",
                extra={**ctx.fields(batch), "entry": taken.entry_id},
            )
            return
        await self._settle(taken, progress)

    def _bury_poison(self, taken: Taken, progress: Progress) -> None:
        """A batch every worker that took it since its last progress died on goes to the dead
        letters, so no more workers are fed to it."""
        messages = taken.batch.messages
        stalled = taken.deliveries - progress.delivery
        if stalled <= self.ctx.worker.max_deliveries:
            return
        reason = f"batch was taken {stalled} times in a row without progress"
        log.error(
            "poison batch moved to dead letters",
            extra={**self.ctx.fields(taken.batch), "entry": taken.entry_id},
        )
        progress.dead.extend((i, reason) for i in range(progress.done, len(messages)))
        progress.counts[Outcome.DEAD] += len(messages) - progress.done
        progress.done = len(messages)

    async def _chunk(self, taken: Taken, progress: Progress, unsettled: range) -> bool:
        """Send the next chunk of the batch and record it; False when the batch stops here
        (a higher lane came, the campaign was paused, or another worker has the batch)."""
        batch = taken.batch
        messages = batch.messages
        end = self.gate.slice_end(messages, progress.done)
        indexes = await self.gate.unsuppressed(batch, range(progress.done, end))
        chunk = [messages[i] for i in indexes]
        if chunk:
            if not await self.gate.wait_for_rate(batch, chunk):
                self._give_way(taken, progress)  # a higher lane came while we waited
                return False
            if not await self.gate.may_leave(batch, progress):
                return False  # paused or cancelled while waiting for tokens: nothing left
            if not await self._handing_over(taken, progress, indexes, unsettled):
                taken.lost = True
                return False  # another worker has it now: sending would duplicate
            sent_at = time.time()  # a reply to it can come no earlier
            results = await self._send(chunk)
            progress.handed = 0
            await self._record(batch, progress, indexes, results, sent_at)
        opted_out = end - progress.done - len(indexes)
        if opted_out:  # counted with the chunk's results: a checkpoint never runs ahead
            progress.counts[Outcome.SUPPRESSED] += opted_out
        progress.done = end
        progress.delivery = taken.deliveries  # progress made by this worker's delivery
        return True

    async def _handing_over(
        self, taken: Taken, progress: Progress, indexes: Sequence[int], unsettled: range
    ) -> bool:
        """Record that these messages go to the adapter now, before they do; False if lost.

        A worker that takes the batch over after a crash counts as redelivered exactly the
        messages this record names that it sends again (those opted out since are not sent):
        a batch that was held, or waited for tokens, when its worker died is not counted.
        """
        if unsettled:
            again = sum(1 for index in indexes if index in unsettled)
            progress.counts[Outcome.REDELIVERED] += again
        progress.handed = indexes[-1] + 1
        return await self.ctx.queues.checkpoint(taken, progress)

    def _give_way(self, taken: Taken, progress: Progress) -> None:
        """A higher lane has work: the rest of this batch goes back to its queue, unsent.

        What was sent stays counted and checkpointed; the rest is queued again as a batch of
        its own, so the sender is free for the higher lane at once.
        """
        messages = taken.batch.messages
        log.debug(
            "a higher lane has work: the rest of the batch goes back",
            extra={**self.ctx.fields(taken.batch), "left": len(messages) - progress.done},
        )
        progress.requeue.extend(range(progress.done, len(messages)))
        progress.done = len(messages)
        self.ctx.metrics.lane_yields.labels(self.name, taken.lane.label).inc()

    async def _send(self, chunk: Sequence[Message]) -> Sequence[SendResult]:
        """Call the adapter: the plug-in boundary, where its failures become retries."""
        ctx = self.ctx
        started = time.perf_counter()
        try:
            async with asyncio.timeout(ctx.limits.timeout):  # no extra task, unlike wait_for
                results = await ctx.adapter.send(chunk)
        except TimeoutError:  # some of the chunk may have left: its outcome is unknown
            reason = f"adapter took longer than {ctx.limits.timeout}s"
            results = [RetryLater(reason, unknown=True)] * len(chunk)
        # the plug-in boundary: an adapter's bug must not take the worker down (logged, retried)
        except Exception as exc:
            log.warning(
                "adapter raised; the chunk will be retried",
                extra={"route": self.name, "error": type(exc).__name__},
                exc_info=True,
            )
            results = [RetryLater(f"adapter raised {type(exc).__name__}")] * len(chunk)
        finally:
            ctx.metrics.send_seconds.labels(self.name).observe(time.perf_counter() - started)
        if len(results) != len(chunk):
            log.error(
                "adapter broke its contract: wrong number of results",
                extra={"route": self.name, "results": len(results), "messages": len(chunk)},
            )
            reason = f"adapter returned {len(results)} results for {len(chunk)} messages"
            results = [RetryLater(reason)] * len(chunk)
        return results

    async def _record(
        self,
        batch: Batch,
        progress: Progress,
        indexes: Sequence[int],
        results: Sequence[SendResult],
        sent_at: float | None = None,
    ) -> None:
        """Fold one chunk's results (for the messages at `indexes`, sent at `sent_at`, epoch
        seconds) into the batch's progress, and tell the limiter, the campaign's controls and
        the fallback routes."""
        ctx = self.ctx
        if ctx.correlator is not None and batch.campaign:
            await self._correlate(batch, indexes, results)
        outcome = classify(results, batch, indexes, ctx.limits, self._fallback)
        _fold(progress, outcome)
        if outcome.unanswered:
            self.health.suspect()
        limiter = ctx.limiter
        if not limiter.unlimited:
            limiter.record(
                self.gate.tokens(batch, outcome.accepted),
                self.gate.tokens(batch, outcome.throttled),
            )
        if outcome.throttled:
            ctx.metrics.throttle_events.labels(self.name).inc()
            await limiter.report_throttle()
        if outcome.fallbacks:
            await self._hand_over(batch, indexes[0], outcome.fallbacks)
        if ctx.controls is not None and batch.campaign and outcome.accepted:
            # whom the campaign reached, for other campaigns' frequency caps, and its question
            # opened for them as asked when the chunk was sent
            await ctx.controls.reached(
                batch.campaign, batch.messages, outcome.accepted, sent_at
            )

    async def _correlate(
        self, batch: Batch, indexes: Sequence[int], results: Sequence[SendResult]
    ) -> None:
        """Remember provider ids of accepted messages so their receipts find their campaign."""
        correlator = self.ctx.correlator
        assert correlator is not None
        accepted = [
            (batch.messages[index], result.provider_ids)
            for index, result in zip(indexes, results, strict=True)
            if type(result) is Accepted and result.provider_ids
        ]
        if accepted:
            silence = self.ctx.silence
            if silence is not None:  # before the receipts can meet them: none is missed
                await silence.arm(self.name, batch, [message for message, _ in accepted])
            delivered: list[str] = []
            early = await correlator.sent(
                self.name, batch.campaign, accepted, batch.region, delivered
            )
            await correlator.count(batch.campaign, early)
            if delivered and silence is not None:  # their receipts came first
                queues = self.ctx.queues
                await cancel(queues.redis, queues.namespace, {self.name: delivered})

    def _fallback(self, message: Message, failed: Failed | None) -> tuple[str, Message] | None:
        """The message on its campaign's next channel, if this failure (None: it gave up after
        its attempts) hands it over and it has one this worker can route."""
        if not on_failure(message, failed):
            return None
        handover = next_message(message)
        if handover is None or handover[0] not in self.ctx.route_shards:
            return None
        return handover

    async def _hand_over(
        self, batch: Batch, chunk_start: int, fallbacks: list[tuple[str, Message]]
    ) -> None:
        """Queue messages on their next channel's route, once even if this chunk is re-sent.

        The batch id is derived from this batch and chunk, so a chunk sent again after a
        crash queues nothing twice.
        """
        queues = self.ctx.queues
        by_route: dict[str, list[Message]] = {}
        for route, message in fallbacks:
            by_route.setdefault(route, []).append(message)
        items = []
        for route, messages in by_route.items():
            handed = Batch(
                route=route,
                lane=batch.lane,
                messages=messages,
                campaign=batch.campaign,
                region=batch.region,
                id=f"{batch.id}.fb{chunk_start}.{route}",
                created_ms=batch.created_ms,
                expires_ms=batch.expires_ms,
            )
            shards = shard_keys(queues.namespace, route, self.ctx.route_shards[route])
            keys = pick_shard(shards, handed.id)
            items.append((keys, handed, 0))
        await queues.put_once(items)

    async def _settle(self, taken: Taken, progress: Progress) -> None:
        """Count, re-queue, dead-letter and acknowledge the batch in one atomic step."""
        batch = taken.batch
        messages = batch.messages
        now = now_ms()
        requeue: list[tuple[int, Batch]] = []
        carry = progress.carry
        if progress.retry:
            delay = max(d for _, d in progress.retry)
            retry = batch.derive(
                [carrying(messages[i], carry.get(i)) for i, _ in progress.retry],
                batch.attempt + 1,
            )
            requeue.append((now + int(delay * 1000), retry))
        if progress.throttled:
            again = batch.derive(
                [carrying(messages[i], carry.get(i)) for i in progress.throttled],
                batch.attempt,
            )
            again.id += f".t{now}"
            delay = throttle_delay(progress.throttle_after or None)
            requeue.append((now + int(delay * 1000), again))
        if progress.requeue:
            rest = batch.derive([messages[i] for i in progress.requeue], batch.attempt)
            rest.id += f".d{now}"
            requeue.append((progress.hold_until_ms, rest))  # 0: back in the stream at once
        dead = [
            dead_letter(self.name, taken.lane, batch, message_row(messages[i]), reason)
            for i, reason in progress.dead
        ]
        # a batch of one region (Batch.region) counts what it sent there in the same step
        accepted = progress.counts.get(Outcome.ACCEPTED, 0)
        regions = {batch.region: accepted} if batch.region and accepted else None
        settled = await self.ctx.queues.settle(taken, progress.counts, requeue, dead, regions)
        if settled:
            self._count(taken, progress)

    def _count(self, taken: Taken, progress: Progress) -> None:
        metrics = self.ctx.metrics
        lane = taken.lane.label
        for outcome, amount in progress.counts.items():
            metrics.messages.labels(self.name, lane, outcome).inc(amount)
        if progress.dead:
            metrics.dead_letters.labels(self.name).inc(len(progress.dead))
        metrics.batches.labels(self.name, lane).inc()


def _fold(progress: Progress, outcome: ChunkOutcome) -> None:
    """Add one chunk's outcome to the batch's progress."""
    counts = progress.counts
    for name, amount in outcome.counts.items():
        counts[name] += amount
    progress.throttled.extend(outcome.throttled)
    progress.throttle_after = max(progress.throttle_after, outcome.throttle_after)
    progress.retry.extend(outcome.retry)
    progress.dead.extend(outcome.dead)
    progress.carry.update(outcome.carry)
