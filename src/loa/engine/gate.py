"""What a chunk passes before it leaves: the campaign's controls, opt-outs, and rate limits."""

from __future__ import annotations

from collections.abc import Sequence

from loa.engine.context import RouteContext
from loa.engine.control import Decision
from loa.engine.envelope import Batch, now_ms
from loa.engine.lanes import LaneView
from loa.engine.progress import Progress
from loa.message import Message, Outcome


class ChunkGate:
    """Asked before each chunk of a batch: may it leave, who in it may, how much of it, when."""

    def __init__(self, ctx: RouteContext, lanes: LaneView) -> None:
        self.ctx = ctx
        self.lanes = lanes
        self.in_parts = ctx.limits.unit == "parts"

    def tokens(self, batch: Batch, indexes: Sequence[int]) -> int:
        """What the messages at `indexes` cost in the route's unit."""
        if not self.in_parts:
            return len(indexes)
        messages = batch.messages
        return sum(messages[i].parts for i in indexes)

    def slice_end(self, messages: Sequence[Message], start: int) -> int:
        """Where the next send ends: at most `chunk` messages, and on a rate-limited route at
        most the route's burst in tokens (but always one message), whatever `chunk` is."""
        end = min(len(messages), start + self.ctx.limits.chunk)
        budget = self.ctx.limiter.slice_tokens()
        if not budget:
            return end
        if not self.in_parts:
            return min(end, start + budget)
        tokens = messages[start].parts
        stop = start + 1
        while stop < end and tokens + messages[stop].parts <= budget:
            tokens += messages[stop].parts
            stop += 1
        return stop

    async def may_leave(self, batch: Batch, progress: Progress) -> bool:
        """Ask the campaign's controls; a paused or cancelled batch ends here, unsent."""
        controls = self.ctx.controls
        if controls is None:
            return True
        verdict = await controls.verdict(batch.campaign, batch.lane, now_ms())
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

    async def unsuppressed(self, batch: Batch, indexes: range) -> Sequence[int]:
        """The messages of the chunk whose recipients have not opted out since planning."""
        controls = self.ctx.controls
        if controls is None or not batch.campaign:
            return indexes
        flags = await controls.suppressed([batch.messages[i].to for i in indexes])
        if not any(flags):
            return indexes
        return [i for i, opted_out in zip(indexes, flags, strict=True) if not opted_out]

    async def wait_for_rate(self, batch: Batch, chunk: Sequence[Message]) -> bool:
        """The route's limit, then the campaign's own cap (in messages) if it has one.

        False when a higher lane came meanwhile: the route's tokens went back, nothing may leave.
        """
        ctx = self.ctx
        limiter = ctx.limiter
        waited = 0.0
        tokens = 0
        if not limiter.unlimited:
            tokens = sum(m.parts for m in chunk) if self.in_parts else len(chunk)
            spent = await limiter.acquire(tokens, lambda: self.lanes.outranked(batch.lane))
            if spent is None:
                return False
            waited += spent
        if ctx.controls is not None and batch.campaign:
            capped = await ctx.controls.campaign_limiter(batch.campaign)
            if capped is not None:
                waited += await capped.acquire(len(chunk)) or 0.0
        if waited:
            ctx.metrics.ratelimit_wait.labels(ctx.name).inc(waited)
        if waited and await self.lanes.outranked(batch.lane):
            await limiter.refund(tokens)  # the tokens are the higher lane's now
            return False
        return True
