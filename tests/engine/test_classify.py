"""classify: what one chunk's send results mean for its messages, as tables (no Redis, no loop)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from loa.engine.classify import ChunkOutcome, carrying, classify
from loa.engine.envelope import Batch
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
from loa.settings import RouteSettings

LIMITS = RouteSettings(adapter="null", max_attempts=3, backoff=2.0, backoff_max=600.0)
SILENT = {UNANSWERED: True}  # an earlier copy got no answer


def batch(*extras: dict[str, Any] | None, attempt: int = 0) -> Batch:
    """A batch of one message per `extras` entry (its `extra`)."""
    messages = [
        Message(f"m{i}", f"+8490000000{i}", "hi", 1, extra) for i, extra in enumerate(extras)
    ]
    return Batch("sms", Lane.NORMAL, messages, campaign="c1", id="b1", attempt=attempt)


def to_email(message: Message, failed: Failed | None) -> tuple[str, Message] | None:
    """A next channel for a person this one cannot reach (not for a message that gave up)."""
    if failed is None or not failed.fallback:
        return None
    return "email", Message(message.id, "a@example.org", "hi")


def to_email_always(message: Message, failed: Failed | None) -> tuple[str, Message] | None:
    return "email", Message(message.id, "a@example.org", "hi")


def counts(**named: int) -> Counter[str]:
    return Counter({Outcome(name): amount for name, amount in named.items()})


# (what, the chunk's extras, attempt, results, counts, accepted, throttled, retried, dead)
Row = tuple[
    str,
    list[dict[str, Any] | None],
    int,
    list[SendResult],
    Counter[str],
    list[int],
    list[int],
    list[int],
    list[tuple[int, str]],
]
TABLE: list[Row] = [
    (
        "all taken",
        [None, None],
        0,
        [Accepted.one("p0"), Accepted.one("p1")],
        counts(accepted=2),
        [0, 1],
        [],
        [],
        [],
    ),
    (
        "taken again after no answer: a possible duplicate",
        [SILENT, None],
        1,
        [Accepted(), Accepted()],
        counts(accepted=2, possible_duplicate=1),
        [0, 1],
        [],
        [],
        [],
    ),
    (
        "parts resent: redelivered",
        [None],
        0,
        [Accepted(resent=True)],
        counts(accepted=1, redelivered=1),
        [0],
        [],
        [],
        [],
    ),
    (
        "resent after no answer: redelivered, not a possible duplicate",
        [SILENT],
        1,
        [Accepted(resent=True)],
        counts(accepted=1, redelivered=1),
        [0],
        [],
        [],
        [],
    ),
    (
        "throttled",
        [None, None],
        0,
        [Throttled(0.2), Accepted()],
        counts(throttled=1, accepted=1),
        [1],
        [0],
        [],
        [],
    ),
    (
        "a temporary failure is retried",
        [None],
        0,
        [RetryLater("busy")],
        counts(retried=1),
        [],
        [],
        [0],
        [],
    ),
    (
        "no answer: unknown and retried",
        [None],
        0,
        [RetryLater("timeout", unknown=True)],
        counts(unknown=1, retried=1),
        [],
        [],
        [0],
        [],
    ),
    (
        "no answer twice: a possible duplicate too",
        [SILENT],
        1,
        [RetryLater("timeout", unknown=True)],
        counts(unknown=1, possible_duplicate=1, retried=1),
        [],
        [],
        [0],
        [],
    ),
    (
        "the last attempt gives up",
        [None],
        2,
        [RetryLater("busy")],
        counts(dead=1),
        [],
        [],
        [],
        [(0, "gave up after 3 attempts: busy")],
    ),
    (
        "a permanent failure",
        [None],
        0,
        [Failed("no such number")],
        counts(failed=1),
        [],
        [],
        [],
        [(0, "no such number")],
    ),
    (
        "a failure of the person on this channel falls back",
        [None],
        0,
        [Failed("no account", fallback=True)],
        counts(fallback=1, fallback_failed=1),
        [],
        [],
        [],
        [],
    ),
]


@pytest.mark.parametrize(
    ("extras", "attempt", "results", "expected", "accepted", "throttled", "retried", "dead"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_results_are_sorted_into_outcomes(
    extras: list[dict[str, Any] | None],
    attempt: int,
    results: list[SendResult],
    expected: Counter[str],
    accepted: list[int],
    throttled: list[int],
    retried: list[int],
    dead: list[tuple[int, str]],
) -> None:
    chunk = batch(*extras, attempt=attempt)
    outcome = classify(results, chunk, range(len(results)), LIMITS, to_email, random.Random(1))
    assert outcome.counts == expected
    assert list(outcome.accepted) == accepted
    assert outcome.throttled == throttled
    assert [index for index, _ in outcome.retry] == retried
    assert outcome.dead == dead
    finals = sum(
        outcome.counts[final]
        for final in (Outcome.ACCEPTED, Outcome.FAILED, Outcome.DEAD, Outcome.FALLBACK)
    )
    assert finals + len(throttled) + len(retried) == len(results), "each message ends once"


def test_indexes_are_the_batchs_not_the_chunks() -> None:
    whole = batch(None, None, None, None)
    outcome = classify([Throttled(), Failed("gone")], whole, [2, 3], LIMITS)
    assert (outcome.throttled, outcome.dead) == ([2], [(3, "gone")])


def test_a_failure_falls_back_only_where_the_next_channel_is_routed() -> None:
    chunk = batch(None, None)
    results: list[SendResult] = [Failed("no account", fallback=True)] * 2
    routed = classify(results, chunk, range(2), LIMITS, to_email)
    assert [(route, m.id) for route, m in routed.fallbacks] == [("email", "m0"), ("email", "m1")]
    assert routed.counts == counts(fallback=2, fallback_failed=2), "why they went on"
    unrouted = classify(results, chunk, range(2), LIMITS)  # no next channel it can route
    assert (unrouted.counts, unrouted.fallbacks) == (counts(failed=2), [])
    assert unrouted.dead == [(0, "no account"), (1, "no account")]


def test_retry_delays_follow_the_back_off_and_a_providers_retry_after() -> None:
    chunk = batch(None, None, attempt=1)
    outcome = classify(
        [RetryLater("busy"), RetryLater("busy", retry_after=30.0)],
        chunk,
        range(2),
        LIMITS,
        rng=random.Random(7),
    )
    (first, early), (second, late) = outcome.retry
    assert (first, second) == (0, 1)
    assert 2.0 <= early <= 4.0, "attempt 1: between half and all of 2 s doubled"
    assert late == 30.0, "the provider's retry-after wins over a shorter back-off"


def test_what_a_message_carries_into_its_next_send() -> None:
    chunk = batch(None, None, None)
    outcome = classify(
        [
            Throttled(1.5, resume={"sent": [1]}),
            RetryLater("timeout", resume={"sent": [1, 2]}, unknown=True),
            RetryLater("busy"),
        ],
        chunk,
        range(3),
        LIMITS,
    )
    assert outcome.carry == {
        0: {RESUME: {"sent": [1]}},
        1: {RESUME: {"sent": [1, 2]}, UNANSWERED: True},
    }, "a plain retry carries nothing"
    assert outcome.throttle_after == 1.5
    assert outcome.unanswered, "a send with no answer holds the route"
    again = carrying(chunk.messages[1], outcome.carry[1])
    assert again.extra == {RESUME: {"sent": [1, 2]}, UNANSWERED: True}
    assert carrying(chunk.messages[2], None) is chunk.messages[2]


def test_a_message_unanswered_on_its_last_attempt_is_dead_and_still_counted_unknown() -> None:
    outcome = classify([RetryLater("timeout", unknown=True)], batch(None, attempt=2), [0], LIMITS)
    assert outcome.counts == counts(unknown=1, dead=1)
    assert (outcome.carry, outcome.retry) == ({}, [])
    assert outcome.unanswered


def test_a_result_that_is_no_send_result_is_refused() -> None:
    with pytest.raises(TypeError, match="not a SendResult"):
        classify(["ok"], batch(None), [0], LIMITS)  # type: ignore[list-item]


def test_an_all_taken_chunk_is_the_common_case() -> None:
    outcome = classify([Accepted()] * 3, batch(None, None, None), range(3), LIMITS)
    assert outcome == ChunkOutcome(counts(accepted=3), range(3))
    assert not outcome.unanswered


def test_a_failure_that_is_not_the_persons_is_asked_about_and_kept_here() -> None:
    outcome = classify([Failed("bad template")], batch(None), [0], LIMITS, to_email)
    assert (outcome.counts, outcome.fallbacks) == (counts(failed=1), [])


def test_a_message_that_gave_up_goes_on_when_the_route_hands_it_over() -> None:
    outcome = classify([RetryLater("busy")], batch(None, attempt=2), [0], LIMITS, to_email_always)
    assert outcome.counts == counts(fallback=1, fallback_failed=1)
    assert [(route, m.id) for route, m in outcome.fallbacks] == [("email", "m0")]
    assert outcome.dead == []
