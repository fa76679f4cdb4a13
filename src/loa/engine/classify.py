"""What one chunk's send results mean for its messages: a pure function, no I/O."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loa.engine.backoff import retry_delay
from loa.engine.envelope import Batch
from loa.message import (
    RESUME,
    UNANSWERED,
    Accepted,
    Failed,
    Message,
    Outcome,
    RetryLater,
    SendResult,
    Throttled,
)
from loa.settings import RouteSettings

# the message on its next channel (route, message), or None: asked for a message that failed
# here (with its Failed), or that gave up after its attempts (None)
Fallback = Callable[[Message, Failed | None], tuple[str, Message] | None]


def no_fallback(message: Message, failed: Failed | None) -> None:
    """A route that hands nothing to another channel."""
    return None


@dataclass(slots=True)
class ChunkOutcome:
    """One chunk's results, sorted: counted outcomes and what happens to each message next."""

    counts: Counter[str] = field(default_factory=Counter)
    accepted: Sequence[int] = ()  # indexes the provider took
    throttled: list[int] = field(default_factory=list)  # indexes to send again, same attempt
    throttle_after: float = 0.0  # the longest retry-after a throttling provider asked for
    retry: list[tuple[int, float]] = field(default_factory=list)  # (index, delay in s)
    dead: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)
    carry: dict[int, dict[str, Any]] = field(default_factory=dict)  # into a message's next send
    fallbacks: list[tuple[str, Message]] = field(default_factory=list)  # (route, message)
    unanswered: bool = False  # a send got no answer: hold the route until the provider answers


def classify(
    results: Sequence[SendResult],
    batch: Batch,
    indexes: Sequence[int],
    limits: RouteSettings,
    fallback: Fallback = no_fallback,
    rng: random.Random | None = None,
) -> ChunkOutcome:
    """Sort the results of the messages at `indexes` of `batch` into a ChunkOutcome."""
    # the common case, fast: every message taken, none of them sent again in any way
    if all(type(result) is Accepted and not result.resent for result in results) and not (
        batch.attempt and unanswered_before(batch, indexes)
    ):
        return ChunkOutcome(Counter({Outcome.ACCEPTED: len(results)}), indexes)
    outcome = ChunkOutcome(accepted=[])
    for index, result in zip(indexes, results, strict=True):
        message = batch.messages[index]
        if isinstance(result, Accepted):
            _accepted(outcome, index, message, result)
        elif isinstance(result, Throttled):
            _throttled(outcome, index, result)
        elif isinstance(result, RetryLater):
            _retry_later(outcome, index, message, result, batch.attempt, limits, rng, fallback)
        elif isinstance(result, Failed):
            _failed(outcome, index, message, result, fallback)
        else:
            raise TypeError(f"adapter returned {result!r}, not a SendResult")
    return outcome


def _accepted(outcome: ChunkOutcome, index: int, message: Message, result: Accepted) -> None:
    assert isinstance(outcome.accepted, list)
    outcome.counts[Outcome.ACCEPTED] += 1
    outcome.accepted.append(index)
    if result.resent:  # parts the provider had taken went out again
        outcome.counts[Outcome.REDELIVERED] += 1
    elif unanswered(message):  # it may have taken the first copy too
        outcome.counts[Outcome.POSSIBLE_DUPLICATE] += 1


def _throttled(outcome: ChunkOutcome, index: int, result: Throttled) -> None:
    outcome.counts[Outcome.THROTTLED] += 1
    outcome.throttled.append(index)
    outcome.throttle_after = max(outcome.throttle_after, result.retry_after or 0.0)
    if result.resume is not None:
        outcome.carry[index] = {RESUME: result.resume}


def _retry_later(
    outcome: ChunkOutcome,
    index: int,
    message: Message,
    result: RetryLater,
    attempt: int,
    limits: RouteSettings,
    rng: random.Random | None,
    fallback: Fallback,
) -> None:
    carry: dict[str, Any] = {} if result.resume is None else {RESUME: result.resume}
    if result.unknown:  # counted, and the route waits until the provider answers
        outcome.counts[Outcome.UNKNOWN] += 1
        if unanswered(message):  # an earlier copy got no answer either: this one may be extra
            outcome.counts[Outcome.POSSIBLE_DUPLICATE] += 1
        outcome.unanswered = True
        carry[UNANSWERED] = True
    if attempt + 1 >= limits.max_attempts:
        handover = fallback(message, None)
        if handover is not None:  # gave up here: the next channel takes it
            outcome.counts[Outcome.FALLBACK] += 1
            outcome.counts[Outcome.FALLBACK_FAILED] += 1
            outcome.fallbacks.append(handover)
            return
        outcome.counts[Outcome.DEAD] += 1
        outcome.dead.append((index, f"gave up after {attempt + 1} attempts: {result.reason}"))
        return
    outcome.counts[Outcome.RETRIED] += 1
    outcome.retry.append((index, retry_delay(limits, attempt, result.retry_after, rng)))
    if carry:
        outcome.carry[index] = carry


def _failed(
    outcome: ChunkOutcome, index: int, message: Message, result: Failed, fallback: Fallback
) -> None:
    handover = fallback(message, result)
    if handover is not None:
        outcome.counts[Outcome.FALLBACK] += 1
        outcome.counts[Outcome.FALLBACK_FAILED] += 1
        outcome.fallbacks.append(handover)
    else:
        outcome.counts[Outcome.FAILED] += 1
        outcome.dead.append((index, result.reason))


def carrying(message: Message, carry: dict[str, Any] | None) -> Message:
    """The message to send again, with what it carries into its next send (in `extra`): the
    parts its adapter must still send, that its last send got no answer."""
    if not carry:
        return message
    return dataclasses.replace(message, extra={**(message.extra or {}), **carry})


def unanswered(message: Message) -> bool:
    """True when an earlier send of the message got no answer (it may have been taken)."""
    return bool(message.extra and message.extra.get(UNANSWERED))


def unanswered_before(batch: Batch, indexes: Sequence[int]) -> bool:
    """True when any message at `indexes` went out before without an answer."""
    messages = batch.messages
    return any(unanswered(messages[i]) for i in indexes)
