"""The queue round trip against both real servers and both event loops."""

from __future__ import annotations

import pytest

from loa.engine.envelope import Batch
from loa.engine.keys import ShardKeys
from loa.engine.queue import Queues
from loa.message import Lane, Message

pytestmark = pytest.mark.anyio


async def test_put_take_settle_round_trip(redis_client, namespace):
    queues = Queues(redis_client, namespace)
    keys = ShardKeys(namespace, "r1", 0)
    await queues.prepare([keys])
    batch = Batch(route="r1", lane=Lane.BULK, messages=[Message("m1", "+84912345678", "hi")])
    await queues.put(keys, batch)
    urgent = Batch(route="r1", lane=Lane.EMERGENCY, messages=[Message("m2", "+84912345679")])
    await queues.put(keys, urgent)

    first = await queues.take(keys, "c1")
    assert first is not None and first.lane is Lane.EMERGENCY
    assert first.batch.messages[0].id == "m2"
    assert await queues.settle(first, {"accepted": 1})
    assert not await queues.settle(first, {"accepted": 1}), "a batch settles once"

    second = await queues.take(keys, "c1")
    assert second is not None and second.batch.id == batch.id
    assert await queues.take(keys, "c1") is None
    assert await queues.settle(second, {"accepted": 1})
    stats = await queues.stats([keys])
    assert stats == {"emergency:accepted": 1, "bulk:accepted": 1}
    assert await redis_client.xlen(keys.stream(Lane.BULK)) == 0, "settled entries are deleted"
