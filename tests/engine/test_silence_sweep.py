"""The silence timers on real Redis: a sweep that dies after its claim, or after queueing the
fallbacks but before closing them, is finished by the next sweep after the lease, and nothing
is queued or counted twice; a receipt in time cancels, a late one does not."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import until
from loa.engine.connection import RedisClient
from loa.engine.envelope import Batch, now_ms, unpack
from loa.engine.keys import shard_keys
from loa.engine.metrics import Metrics
from loa.engine.queue import Queues
from loa.engine.silence import Silence, cancel, pending, timer_keys
from loa.fallback import AFTER
from loa.message import Lane, Message

pytestmark = pytest.mark.anyio

ZALO, SMS = "zalo-t", "sms-t"
SHARDS = {ZALO: 2, SMS: 3}


class Died(Exception):
    """The sweeper's process ended here (kill -9)."""


def silence(redis_client: RedisClient, namespace: str, lease: float = 0.3) -> Silence:
    return Silence(redis_client, Queues(redis_client, namespace), Metrics(), SHARDS, lease)


def waiting(n: int, after_ms: int) -> list[Message]:
    return [
        Message(
            str(i),
            f"+8491{i:07d}",
            extra={AFTER: after_ms, "next": [["sms", SMS, f"+8491{i:07d}", f"SMS {i}", 1, None]]},
        )
        for i in range(n)
    ]


async def queued(redis_client: RedisClient, namespace: str) -> list[str]:
    """Ids of every message queued on the SMS route."""
    ids = []
    for keys in shard_keys(namespace, SMS, SHARDS[SMS]):
        for _, fields in await redis_client.xrange(keys.stream(Lane.HIGH)):
            ids += [m.id for m in unpack(fields[b"b"]).messages]
    return ids


async def counted(redis_client: RedisClient, namespace: str) -> int:
    keys = timer_keys(namespace, ZALO).shard
    return int(await redis_client.hget(keys.campaign_stats, "camp:fallback_timeout") or 0)


async def test_a_sweep_that_dies_midway_is_finished_once_by_the_next(
    redis_client: RedisClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = Batch(ZALO, Lane.HIGH, waiting(10, 1), campaign="camp")
    first = silence(redis_client, namespace)
    assert await first.arm(ZALO, batch, batch.messages) == 10
    assert await first.arm(ZALO, batch, batch.messages) == 0, "a copy sent again arms nothing"

    async def due() -> bool:
        return now_ms() > batch.created_ms + 50

    await until(due, 5, "the timers to be due")

    async def dies(*args: Any, **kwargs: Any) -> Any:
        raise Died

    # the first sweeper queues the fallbacks, then dies before closing its timers
    monkeypatch.setattr(first, "_fire", dies)
    with pytest.raises(Died):
        await first.sweep(ZALO)
    assert sorted(await queued(redis_client, namespace), key=int) == [str(i) for i in range(10)]
    assert await counted(redis_client, namespace) == 0
    second = silence(redis_client, namespace)
    assert await second.sweep(ZALO) == 0, "the lease holds: the timers are not claimed again yet"

    async def claimed_again() -> bool:
        return await second.sweep(ZALO) == 10

    await until(claimed_again, 5, "the lease to end and the timers to be fired again")
    assert len(await queued(redis_client, namespace)) == 10, "nothing queued twice"
    assert await counted(redis_client, namespace) == 10
    assert await pending(redis_client, namespace, ZALO) == 0
    assert await second.arm(ZALO, batch, batch.messages) == 0, "fired: not armed again"
    assert await second.sweep(ZALO) == 0


async def test_a_receipt_in_time_cancels_and_a_late_one_does_not(
    redis_client: RedisClient, namespace: str
) -> None:
    soon = Batch(ZALO, Lane.HIGH, waiting(4, 1), campaign="camp")
    later = Batch(ZALO, Lane.HIGH, waiting(4, 60_000)[2:], campaign="camp2")
    timers = silence(redis_client, namespace)
    await timers.arm(ZALO, soon, soon.messages)
    await timers.arm(ZALO, later, later.messages)

    async def due() -> bool:
        return now_ms() > soon.created_ms + 50

    await until(due, 5, "the first timers to be due")
    members = ["camp|0", "camp|1", "camp2|2", "camp2|3", "camp2|9"]
    assert await cancel(redis_client, namespace, {ZALO: members}) == 2, "only those in time"
    assert await timers.sweep(ZALO) == 4, "the late receipts stopped nothing"
    assert await pending(redis_client, namespace, ZALO) == 0
    assert len(await queued(redis_client, namespace)) == 4
