"""Lower lanes wait while a higher lane of the shard is still being sent, not only waiting."""

from __future__ import annotations

import pytest

from loa.engine.connection import RedisClient
from loa.engine.envelope import Batch, now_ms
from loa.engine.keys import ShardKeys
from loa.engine.queue import Held, Queues, Taken
from loa.message import Lane, Message

pytestmark = pytest.mark.anyio


def batch(lane: Lane, name: str) -> Batch:
    return Batch("sms", lane, [Message(name, "+84912345678", "x")], id=name)


async def test_bulk_waits_until_the_alert_in_flight_is_settled(
    redis_client: RedisClient, namespace: str
) -> None:
    queues = Queues(redis_client, namespace)
    keys = ShardKeys(namespace, "sms", 0)
    await queues.prepare([keys])
    await queues.put(keys, batch(Lane.BULK, "bulk-1"))
    await queues.put(keys, batch(Lane.EMERGENCY, "alert-1"))

    alert = await queues.take(keys, "sender-a")
    assert isinstance(alert, Taken) and alert.lane is Lane.EMERGENCY
    # another sender finds no alert waiting, but the alert is still being sent: no bulk yet
    assert await queues.take(keys, "sender-b") is Held.BACK
    assert await queues.take(keys, "sender-b") is Held.BACK

    assert await queues.settle(alert, {"accepted": 1})
    bulk = await queues.take(keys, "sender-b")
    assert isinstance(bulk, Taken) and bulk.batch.id == "bulk-1"


async def test_a_lane_does_not_hold_back_itself_or_higher_lanes(
    redis_client: RedisClient, namespace: str
) -> None:
    queues = Queues(redis_client, namespace)
    keys = ShardKeys(namespace, "sms", 1)
    await queues.prepare([keys])
    for name in ("normal-1", "normal-2"):
        await queues.put(keys, batch(Lane.NORMAL, name))
    first = await queues.take(keys, "sender-a")
    assert isinstance(first, Taken)
    second = await queues.take(keys, "sender-b")  # same lane: both may be sent at once
    assert isinstance(second, Taken) and second.batch.id == "normal-2"
    await queues.put(keys, batch(Lane.HIGH, "high-1"))
    higher = await queues.take(keys, "sender-c")  # a higher lane is never held back by a lower
    assert isinstance(higher, Taken) and higher.lane is Lane.HIGH
    await queues.put(keys, batch(Lane.BULK, "bulk-1"))
    assert await queues.take(keys, "sender-d") is Held.BACK  # high and normal in flight
    for taken in (higher, first, second):
        assert await queues.settle(taken, {"accepted": 1})
    bulk = await queues.take(keys, "sender-d")
    assert isinstance(bulk, Taken) and bulk.batch.id == "bulk-1"


async def test_the_top_lane_of_a_route_counts_waiting_in_flight_and_due_work(
    redis_client: RedisClient, namespace: str
) -> None:
    queues = Queues(redis_client, namespace)
    shards = [ShardKeys(namespace, "sms", n) for n in range(3)]
    await queues.prepare(shards)
    await queues.put(shards[0], batch(Lane.BULK, "bulk-1"))
    assert await queues.top_lane(shards, now_ms()) is Lane.BULK
    # a retry of the high lane due later holds nothing back; once due, it does
    later = batch(Lane.HIGH, "high-later")
    await queues.put_once([(shards[1], later, now_ms() + 60_000)])
    assert await queues.top_lane(shards, now_ms()) is Lane.BULK
    assert await queues.top_lane(shards, now_ms() + 120_000) is Lane.HIGH
    # an alert on another shard outranks it, waiting and then while it is being sent
    await queues.put(shards[2], batch(Lane.EMERGENCY, "alert-1"))
    assert await queues.top_lane(shards, now_ms()) is Lane.EMERGENCY
    alert = await queues.take(shards[2], "sender-a")
    assert isinstance(alert, Taken) and alert.lane is Lane.EMERGENCY
    assert await queues.top_lane(shards, now_ms()) is Lane.EMERGENCY
    assert await queues.settle(alert, {"accepted": 1})
    assert await queues.top_lane(shards, now_ms()) is Lane.BULK
