"""One route inside one worker process: N senders looping over batches, and a claimer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import RedisError

from loa.adapters.base import Adapter, Pingable
from loa.engine.backoff import retry_delay, throttle_delay
from loa.engine.control import Controls, Decision
from loa.engine.enqueue import pick_shard
from loa.engine.envelope import Batch, message_row, now_ms
from loa.engine.events import Correlator
from loa.engine.keys import ShardKeys, shard_keys
from loa.engine.metrics import Metrics
from loa.engine.progress import Progress
from loa.engine.queue import Held, Queues, Taken, dead_letter
from loa.engine.ratelimit import RateLimiter
from loa.engine.silence import Silence, cancel
from loa.fallback import next_message, on_failure
from loa.message import (
    RESUME,
    UNANSWERED,
    Accepted,
    Failed,
    Lane,
    Message,
    Outcome,
    RetryLater,
    SendResult,
    Throttled,
)
from loa.settings import RouteSettings, WorkerSettings

log = logging.getLogger(__name__)

CONSUMER_CLEANUP_PERIOD = 300.0  # seconds between sweeps of consumers that left
CONSUMER_FORGET_MS = 3_600_000  # a consumer with nothing pending, silent for an hour, has left
CLAIM_PERIOD_MAX = 2.0  # seconds between looks for abandoned batches, at most
CLAIM_ROUNDS = 64  # batches adopted from one shard per look, at most (one per lane each round)
HELD_BACK_PAUSE = 0.02  # seconds a sender waits while a higher lane is being sent
# How old the route's view of its busiest lane may be when a sender decides to send a lower
# lane: shared by the senders of a process, so a busy route reads it 100 times a second at most
TOP_LANE_FRESH = 0.01
SOON_MS = 1000  # a higher lane's retries due within this long hold lower lanes back already
PROBE_PAUSE_MIN = 0.5  # seconds between pings of a provider that stopped answering, at first
PROBE_PAUSE_MAX = 5.0


class RouteRunner:
    """Moves one route's batches from its shards through its adapter, honouring its limits."""

    def __init__(
        self,
        name: str,
        limits: RouteSettings,
        adapter: Adapter,
        queues: Queues,
        limiter: RateLimiter,
        metrics: Metrics,
        consumer: str,
        worker: WorkerSettings,
        stopping: asyncio.Event,
        controls: Controls | None = None,
        correlator: Correlator | None = None,
        route_shards: Mapping[str, int] | None = None,
        silence: Silence | None = None,
    ) -> None:
        self.name = name
        self.limits = limits
        self.adapter = adapter
        self.queues = queues
        self.limiter = limiter
        self.metrics = metrics
        self.consumer = consumer
        self.worker = worker
        self.stopping = stopping
        self.controls = controls
        self.correlator = correlator  # set when the adapter's provider sends receipts
        self.route_shards = dict(route_shards or {})  # every route's shards: fallback targets
        self.silence = silence  # arms fallback timers of messages that wait for a receipt
        self.shards = shard_keys(queues.namespace, name, limits.shards)
        self.chunk = limits.chunk
        # every batch this runner owns, waiting or sending, kept alive by the heartbeat
        self.held: dict[tuple[str, str], Taken] = {}
        self.claim_cursors: dict[str, str] = {}
        # The highest lane with work on any shard of the route, as last read: while a higher
        # lane has batches waiting or being sent anywhere, no lower lane is taken or sent.
        self._top = Lane.BULK
        self._top_read = -1.0  # never read yet
        self._top_reading: asyncio.Future[None] | None = None
        # cleared when a send got no answer: nothing more leaves until the provider answers a
        # ping again, so an outage does not turn every message in it into a duplicate
        self._healthy = asyncio.Event()
        self._healthy.set()
        self._probe: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Run the senders and the claimer until `stopping` is set and in-flight work settled."""
        async with asyncio.TaskGroup() as group:
            heartbeat = group.create_task(self._heartbeat(), name=f"{self.name}-heartbeat")
            loops = [
                group.create_task(self._sender(index), name=f"{self.name}-sender-{index}")
                for index in range(self.limits.concurrency)
            ]
            loops.append(group.create_task(self._claimer(), name=f"{self.name}-claimer"))
            await asyncio.wait(loops)  # drained: nothing is held any more
            heartbeat.cancel()
            for task in (self._probe, self._top_reading):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

    async def _sender(self, index: int) -> None:
        """Take a batch (higher lanes first), send it, settle it; block on a shard while idle."""
        offset = index % len(self.shards)
        block_ms = max(1, int(self.worker.idle_block * 1000))
        while not self.stopping.is_set():
            if not await self._until_healthy():
                continue
            # a lane outranks shard order: while any shard has urgent work, read no lower lane
            lowest = await self.top_lane()
            taken = None
            held = False
            for step in range(len(self.shards)):
                keys = self.shards[(offset + step) % len(self.shards)]
                got = await self.queues.take(keys, self.consumer, lowest)
                if got is Held.BACK:
                    held = True
                elif got is not None:
                    taken = got
                    offset = (offset + step + 1) % len(self.shards)
                    break
            if taken is not None:
                await self.process(self._hold([taken])[0])
                continue
            if held or lowest != Lane.BULK:  # urgent batches are being sent: take no lower lane
                await self._pause(HELD_BACK_PAUSE)
                continue
            # nothing anywhere: wait on one shard's streams (Redis wakes us when a batch lands)
            offset = (offset + 1) % len(self.shards)
            keys = self.shards[offset]
            for arrived in self._hold(await self.queues.wait_take(keys, self.consumer, block_ms)):
                await self.process(arrived)

    async def _claimer(self) -> None:
        """Adopt batches whose consumer went silent for `claim_idle` (a crashed worker).

        The first look is at start: a worker that replaces a crashed one adopts what it left
        at once, however short-lived it turns out to be itself.
        """
        idle_ms = int(self.worker.claim_idle * 1000)
        period = max(0.2, min(self.worker.claim_idle / 4, CLAIM_PERIOD_MAX))
        last_cleanup = time.monotonic()
        first = True
        while not self.stopping.is_set():
            if not first:
                await self._pause(period)
            first = False
            if time.monotonic() - last_cleanup > CONSUMER_CLEANUP_PERIOD:
                last_cleanup = time.monotonic()
                for keys in self.shards:
                    await self.queues.forget_idle_consumers(keys, CONSUMER_FORGET_MS)
            for keys in self.shards:
                await self._claim_shard(keys, idle_ms)
                if self.stopping.is_set():
                    return

    async def _claim_shard(self, keys: ShardKeys, idle_ms: int) -> None:
        """Adopt one shard's abandoned batches, one per lane at a time, each sent at once.

        One at a time: a batch adopted and left waiting here would count as taken by this
        worker too, if it died in turn, and look like a batch that kills its workers.
        """
        for _ in range(CLAIM_ROUNDS):
            if self.stopping.is_set():
                return
            claimed = await self.queues.claim(
                keys, self.consumer, idle_ms, self.claim_cursors, count=1
            )
            if not claimed:
                return
            for taken in self._hold(claimed):
                log.info(
                    "claimed a batch left by a silent worker",
                    extra={
                        **self._context(taken.batch),
                        "entry": taken.entry_id,
                        "done": taken.progress.done if taken.progress else 0,
                    },
                )
                await self.process(taken)

    def _context(self, batch: Batch) -> dict[str, str]:
        """Structured log fields for a batch: its route, and its campaign when it has one."""
        if batch.campaign:
            return {"route": self.name, "campaign": batch.campaign}
        return {"route": self.name}

    def _hold(self, taken: list[Taken]) -> list[Taken]:
        """Register batches as ours until settled, so the heartbeat keeps them."""
        for one in taken:
            self.held[(one.stream, one.entry_id)] = one
        return taken

    async def _heartbeat(self) -> None:
        """Refresh every held batch well within `claim_idle`, however long it waits or sends.

        A batch waiting for tokens on a slow route, or queued behind others in this runner, is
        alive; without this it would look abandoned and another worker would send it again.
        """
        period = self.worker.claim_idle / 3
        while True:
            await asyncio.sleep(period)
            by_stream: dict[str, list[Taken]] = {}
            for taken in list(self.held.values()):
                by_stream.setdefault(taken.stream, []).append(taken)
            for stream, held in by_stream.items():
                lost = set(
                    await self.queues.touch(stream, self.consumer, [t.entry_id for t in held])
                )
                for taken in held:
                    if taken.entry_id in lost and (stream, taken.entry_id) in self.held:
                        taken.lost = True

    async def top_lane(self) -> Lane:
        """The highest lane with work on any shard of the route, as read at most TOP_LANE_FRESH
        and a round trip ago. One read at a time serves every sender, and none waits for it
        (but for the first): a busy route must not queue its senders behind this check."""
        reading = self._top_reading
        if reading is None and time.monotonic() - self._top_read >= TOP_LANE_FRESH:
            reading = self._top_reading = asyncio.ensure_future(self._read_top_lane())
        if reading is not None and self._top_read < 0:
            await asyncio.shield(reading)
        return self._top

    async def _read_top_lane(self) -> None:
        try:
            # retries due very soon count as work: an alert a throttle put back for 50 ms must
            # not let bulk take the route meanwhile
            self._top = await self.queues.top_lane(self.shards, now_ms() + SOON_MS)
        except (RedisError, OSError) as exc:  # the senders' own calls will say it; keep the last
            log.warning(
                "could not read the route's lanes", extra={"route": self.name, "error": repr(exc)}
            )
        finally:
            self._top_read = time.monotonic()
            self._top_reading = None

    def _suspect(self) -> None:
        """A send got no answer: hold the route, and ping the provider until it answers."""
        if not isinstance(self.adapter, Pingable) or not self._healthy.is_set():
            return
        self._healthy.clear()
        log.warning(
            "a send got no answer: the route holds its messages until the provider answers",
            extra={"route": self.name},
        )
        self._probe = asyncio.create_task(self._ping_until_answered(), name=f"{self.name}-probe")

    async def _ping_until_answered(self) -> None:
        assert isinstance(self.adapter, Pingable)
        pause = PROBE_PAUSE_MIN
        while not self.stopping.is_set():
            try:
                async with asyncio.timeout(self.limits.timeout):
                    await self.adapter.ping()
            # the plug-in boundary: whatever the ping raised, the provider did not answer
            except Exception:
                log.debug("ping unanswered", extra={"route": self.name}, exc_info=True)
                await self._pause(pause)
                pause = min(pause * 2, PROBE_PAUSE_MAX)
                continue
            log.info("the provider answers again: the route resumes", extra={"route": self.name})
            self._healthy.set()
            return

    async def _until_healthy(self) -> bool:
        """Wait while the route is held for an unanswered send; False when asked to stop."""
        if self._healthy.is_set():
            return True
        healthy = asyncio.ensure_future(self._healthy.wait())
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait([healthy, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            healthy.cancel()
            stopping.cancel()
        return self._healthy.is_set() and not self.stopping.is_set()

    async def _outranked(self, lane: Lane) -> bool:
        """True when a higher lane than `lane` has work on the route: `lane` must give way."""
        return lane != Lane.EMERGENCY and await self.top_lane() < lane

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the worker is asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def process(self, taken: Taken) -> None:
        """Send a batch chunk by chunk, checkpointing between chunks, then settle it."""
        try:
            await self._process(taken)
        finally:
            self.held.pop((taken.stream, taken.entry_id), None)

    async def _process(self, taken: Taken) -> None:
        batch = taken.batch
        messages = batch.messages
        progress = taken.progress or Progress()
        # workers that took the batch since it last made progress: all of them died on it
        stalled = taken.deliveries - progress.delivery
        if stalled > self.worker.max_deliveries:
            # stop feeding it to more of them
            reason = f"batch was taken {stalled} times in a row without progress"
            log.error(
                "poison batch moved to dead letters",
                extra={**self._context(batch), "entry": taken.entry_id},
            )
            progress.dead.extend((i, reason) for i in range(progress.done, len(messages)))
            progress.counts[Outcome.DEAD] += len(messages) - progress.done
            progress.done = len(messages)
        # what a worker that died had handed to its adapter without recording the outcome: those
        # messages may have reached the provider, so sending them again is counted as a resend
        unsettled = range(progress.done, progress.handed)
        progress.handed = 0
        while progress.done < len(messages):
            if batch.expired(now_ms()):
                progress.counts[Outcome.EXPIRED] += len(messages) - progress.done
                progress.done = len(messages)
                break
            if self.stopping.is_set():  # draining: what was not sent goes back, unsent
                progress.requeue.extend(range(progress.done, len(messages)))
                progress.done = len(messages)
                break
            if not await self._until_healthy():
                continue  # stopping: the batch goes back above
            if taken.lost or not await self._may_leave(batch, progress):
                break
            if await self._outranked(batch.lane):
                self._give_way(taken, progress)
                break
            end = self._slice_end(messages, progress.done)
            indexes = await self._unsuppressed(batch, range(progress.done, end))
            chunk = [messages[i] for i in indexes]
            if chunk:
                if not await self._wait_for_rate(batch, chunk):
                    self._give_way(taken, progress)  # a higher lane came while we waited
                    break
                if not await self._may_leave(batch, progress):
                    break  # paused or cancelled while waiting for tokens: nothing left
                if not await self._handing_over(taken, progress, indexes, unsettled):
                    taken.lost = True
                    break  # another worker has it now: sending would duplicate
                sent_at = time.time()  # a reply to it can come no earlier
                results = await self._send(chunk)
                progress.handed = 0
                await self._record(batch, progress, indexes, results, sent_at)
            opted_out = end - progress.done - len(indexes)
            if opted_out:  # counted with the chunk's results: a checkpoint never runs ahead
                progress.counts[Outcome.SUPPRESSED] += opted_out
            progress.done = end
            progress.delivery = taken.deliveries  # progress made by this worker's delivery
            if progress.done < len(messages) and not await self.queues.checkpoint(taken, progress):
                taken.lost = True
        if taken.lost:
            log.warning(
                "batch was claimed by another worker; leaving it to them",
                extra={**self._context(batch), "entry": taken.entry_id},
            )
            return
        await self._settle(taken, progress)

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
        return await self.queues.checkpoint(taken, progress)

    def _count_unanswered(self, message: Message, counts: Counter[str]) -> None:
        """A send that got no answer: counted, and the route waits until the provider answers."""
        counts[Outcome.UNKNOWN] += 1
        if _unanswered(message):  # an earlier copy got no answer either: this one may be extra
            counts[Outcome.POSSIBLE_DUPLICATE] += 1
        self._suspect()

    def _tokens(self, batch: Batch, indexes: Sequence[int]) -> int:
        """What the messages at `indexes` cost in the route's unit."""
        if self.limits.unit != "parts":
            return len(indexes)
        messages = batch.messages
        return sum(messages[i].parts for i in indexes)

    def _slice_end(self, messages: Sequence[Message], start: int) -> int:
        """Where the next send ends: at most `chunk` messages, and on a rate-limited route at
        most the route's burst in tokens (but always one message), whatever `chunk` is."""
        end = min(len(messages), start + self.chunk)
        budget = self.limiter.slice_tokens()
        if not budget:
            return end
        if self.limits.unit != "parts":
            return min(end, start + budget)
        tokens = messages[start].parts
        stop = start + 1
        while stop < end and tokens + messages[stop].parts <= budget:
            tokens += messages[stop].parts
            stop += 1
        return stop

    def _give_way(self, taken: Taken, progress: Progress) -> None:
        """A higher lane has work: the rest of this batch goes back to its queue, unsent.

        What was sent stays counted and checkpointed; the rest is queued again as a batch of
        its own, so the sender is free for the higher lane at once.
        """
        messages = taken.batch.messages
        log.debug(
            "a higher lane has work: the rest of the batch goes back",
            extra={**self._context(taken.batch), "left": len(messages) - progress.done},
        )
        progress.requeue.extend(range(progress.done, len(messages)))
        progress.done = len(messages)
        self.metrics.lane_yields.labels(self.name, taken.lane.label).inc()

    async def _wait_for_rate(self, batch: Batch, chunk: Sequence[Message]) -> bool:
        """The route's limit, then the campaign's own cap (in messages) if it has one.

        False when a higher lane came meanwhile: the route's tokens went back, nothing may leave.
        """
        waited = 0.0
        tokens = 0
        if not self.limiter.unlimited:
            tokens = sum(m.parts for m in chunk) if self.limits.unit == "parts" else len(chunk)
            spent = await self.limiter.acquire(tokens, lambda: self._outranked(batch.lane))
            if spent is None:
                return False
            waited += spent
        if self.controls is not None and batch.campaign:
            capped = await self.controls.campaign_limiter(batch.campaign)
            if capped is not None:
                waited += await capped.acquire(len(chunk)) or 0.0
        if waited:
            self.metrics.ratelimit_wait.labels(self.name).inc(waited)
        if waited and await self._outranked(batch.lane):
            await self.limiter.refund(tokens)  # the tokens are the higher lane's now
            return False
        return True

    async def _send(self, chunk: Sequence[Message]) -> Sequence[SendResult]:
        """Call the adapter: the plug-in boundary, where its failures become retries."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.limits.timeout):  # no extra task, unlike wait_for
                results = await self.adapter.send(chunk)
        except TimeoutError:  # some of the chunk may have left: its outcome is unknown
            reason = f"adapter took longer than {self.limits.timeout}s"
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
            self.metrics.send_seconds.labels(self.name).observe(time.perf_counter() - started)
        if len(results) != len(chunk):
            log.error(
                "adapter broke its contract: wrong number of results",
                extra={"route": self.name, "results": len(results), "messages": len(chunk)},
            )
            reason = f"adapter returned {len(results)} results for {len(chunk)} messages"
            results = [RetryLater(reason)] * len(chunk)
        return results

    async def _may_leave(self, batch: Batch, progress: Progress) -> bool:
        """Ask the campaign's controls; a paused or cancelled batch ends here, unsent."""
        if self.controls is None:
            return True
        verdict = await self.controls.verdict(batch.campaign, batch.lane, now_ms())
        if verdict.decision is Decision.SEND:
            return True
        rest = len(batch.messages) - progress.done
        if verdict.decision is Decision.CANCEL:
            progress.counts[Outcome.CANCELLED] += rest
        else:
            progress.requeue.extend(range(progress.done, len(batch.messages)))
            progress.hold_until_ms = verdict.until_ms
        progress.done = len(batch.messages)
        return False

    async def _unsuppressed(self, batch: Batch, indexes: range) -> Sequence[int]:
        """The messages of the chunk whose recipients have not opted out since planning."""
        if self.controls is None or not batch.campaign:
            return indexes
        flags = await self.controls.suppressed([batch.messages[i].to for i in indexes])
        if not any(flags):
            return indexes
        return [i for i, opted_out in zip(indexes, flags, strict=True) if not opted_out]

    async def _record(
        self,
        batch: Batch,
        progress: Progress,
        indexes: Sequence[int],
        results: Sequence[SendResult],
        sent_at: float | None = None,
    ) -> None:
        """Fold one chunk's results (for the messages at `indexes`, sent at `sent_at`, epoch
        seconds) into the batch's progress."""
        counts = progress.counts
        if self.correlator is not None and batch.campaign:
            await self._correlate(batch, indexes, results)
        # the common case, fast: every message taken, none of them sent again in any way
        if all(type(result) is Accepted and not result.resent for result in results) and not (
            batch.attempt and _unanswered_before(batch, indexes)
        ):
            counts[Outcome.ACCEPTED] += len(results)
            await self._reached(batch, indexes, sent_at)
            if not self.limiter.unlimited:
                self.limiter.record(self._tokens(batch, indexes))
            return
        fallbacks: list[tuple[str, Message]] = []
        last_attempt = batch.attempt + 1 >= self.limits.max_attempts
        accepted: list[int] = []
        refused: list[int] = []
        for index, result in zip(indexes, results, strict=True):
            kind = type(result)
            if kind is Accepted:
                assert isinstance(result, Accepted)
                counts[Outcome.ACCEPTED] += 1
                accepted.append(index)
                if result.resent:  # parts the provider had taken went out again
                    counts[Outcome.REDELIVERED] += 1
                elif _unanswered(batch.messages[index]):  # it may have taken the first copy too
                    counts[Outcome.POSSIBLE_DUPLICATE] += 1
            elif kind is Throttled:
                counts[Outcome.THROTTLED] += 1
                progress.throttled.append(index)
                assert isinstance(result, Throttled)
                progress.throttle_after = max(progress.throttle_after, result.retry_after or 0.0)
                if result.resume is not None:
                    progress.carry[index] = {RESUME: result.resume}
                refused.append(index)
            elif kind is RetryLater:
                assert isinstance(result, RetryLater)
                carry: dict[str, Any] = {} if result.resume is None else {RESUME: result.resume}
                if result.unknown:
                    self._count_unanswered(batch.messages[index], counts)
                    carry[UNANSWERED] = True
                handover = self._fallback(batch.messages[index], None) if last_attempt else None
                if handover is not None:  # gave up here: the next channel takes it
                    counts[Outcome.FALLBACK] += 1
                    counts[Outcome.FALLBACK_FAILED] += 1
                    fallbacks.append(handover)
                elif last_attempt:
                    counts[Outcome.DEAD] += 1
                    reason = f"gave up after {batch.attempt + 1} attempts: {result.reason}"
                    progress.dead.append((index, reason))
                else:
                    counts[Outcome.RETRIED] += 1
                    delay = retry_delay(self.limits, batch.attempt, result.retry_after)
                    progress.retry.append((index, delay))
                    if carry:
                        progress.carry[index] = carry
            elif kind is Failed:
                assert isinstance(result, Failed)
                handover = self._fallback(batch.messages[index], result)
                if handover is not None:
                    counts[Outcome.FALLBACK] += 1
                    counts[Outcome.FALLBACK_FAILED] += 1
                    fallbacks.append(handover)
                else:
                    counts[Outcome.FAILED] += 1
                    progress.dead.append((index, result.reason))
            else:
                raise TypeError(f"adapter returned {result!r}, not a SendResult")
        if not self.limiter.unlimited:
            self.limiter.record(self._tokens(batch, accepted), self._tokens(batch, refused))
        if refused:
            self.metrics.throttle_events.labels(self.name).inc()
            await self.limiter.report_throttle()
        if fallbacks:
            await self._hand_over(batch, indexes[0], fallbacks)
        await self._reached(batch, accepted, sent_at)

    async def _reached(
        self, batch: Batch, accepted: Sequence[int], sent_at: float | None = None
    ) -> None:
        """Remember whom the campaign reached, for other campaigns' frequency caps, and open
        its question for them as asked when the chunk was sent."""
        if self.controls is not None and batch.campaign and accepted:
            await self.controls.reached(batch.campaign, batch.messages, accepted, sent_at)

    async def _correlate(
        self, batch: Batch, indexes: Sequence[int], results: Sequence[SendResult]
    ) -> None:
        """Remember provider ids of accepted messages so their receipts find their campaign."""
        assert self.correlator is not None
        accepted = [
            (batch.messages[index], result.provider_id)
            for index, result in zip(indexes, results, strict=True)
            if type(result) is Accepted and result.provider_id
        ]
        if accepted:
            if self.silence is not None:  # before the receipts can meet them: none is missed
                await self.silence.arm(self.name, batch, [message for message, _ in accepted])
            delivered: list[str] = []
            early = await self.correlator.sent(
                self.name, batch.campaign, accepted, batch.region, delivered
            )
            await self.correlator.count(batch.campaign, early)
            if delivered and self.silence is not None:  # their receipts came first
                await cancel(self.queues.redis, self.queues.namespace, {self.name: delivered})

    def _fallback(self, message: Message, failed: Failed | None) -> tuple[str, Message] | None:
        """The message on its campaign's next channel, if this failure (None: it gave up after
        its attempts) hands it over and it has one this worker can route."""
        if not on_failure(message, failed):
            return None
        handover = next_message(message)
        if handover is None or handover[0] not in self.route_shards:
            return None
        return handover

    async def _hand_over(
        self, batch: Batch, chunk_start: int, fallbacks: list[tuple[str, Message]]
    ) -> None:
        """Queue messages on their next channel's route, once even if this chunk is re-sent.

        The batch id is derived from this batch and chunk, so a chunk sent again after a
        crash queues nothing twice.
        """
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
            shards = shard_keys(self.queues.namespace, route, self.route_shards[route])
            keys = pick_shard(shards, handed.id)
            items.append((keys, handed, 0))
        await self.queues.put_once(items)

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
                [_carrying(messages[i], carry.get(i)) for i, _ in progress.retry],
                batch.attempt + 1,
            )
            requeue.append((now + int(delay * 1000), retry))
        if progress.throttled:
            again = batch.derive(
                [_carrying(messages[i], carry.get(i)) for i in progress.throttled],
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
        settled = await self.queues.settle(taken, progress.counts, requeue, dead, regions)
        if settled:
            self._count(taken, progress)

    def _count(self, taken: Taken, progress: Progress) -> None:
        lane = taken.lane.label
        for outcome, amount in progress.counts.items():
            self.metrics.messages.labels(self.name, lane, outcome).inc(amount)
        if progress.dead:
            self.metrics.dead_letters.labels(self.name).inc(len(progress.dead))
        self.metrics.batches.labels(self.name, lane).inc()


def _carrying(message: Message, carry: dict[str, Any] | None) -> Message:
    """The message to send again, with what it carries into its next send (in `extra`): the
    parts its adapter must still send, that its last send got no answer."""
    if not carry:
        return message
    return dataclasses.replace(message, extra={**(message.extra or {}), **carry})


def _unanswered(message: Message) -> bool:
    """True when an earlier send of the message got no answer (it may have been taken)."""
    return bool(message.extra and message.extra.get(UNANSWERED))


def _unanswered_before(batch: Batch, indexes: Sequence[int]) -> bool:
    """True when any message at `indexes` went out before without an answer."""
    messages = batch.messages
    return any(_unanswered(messages[i]) for i in indexes)
