"""An alert overtakes bulk at carrier rates; sends never burst past a carrier's cap."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import enqueue_async, messages, read_sink, running, status_async, until
from loa.engine.connection import RedisClient
from loa.engine.envelope import unpack
from loa.engine.keys import LANES, shard_keys
from loa.message import Lane
from loa.settings import Settings
from loa.sim.smsc import SmscOptions, SmscSimulator

pytestmark = pytest.mark.anyio

SENDERS = 2  # one process, concurrency 2


def file_route(sink: Path, rate: float, **values: object) -> dict[str, object]:
    """A file-adapter route at `rate` parts/s with the product's chunk and burst."""
    return {
        "adapter": "file",
        "rate": rate,
        "unit": "parts",
        "shards": 2,
        "concurrency": SENDERS,
        "options": {"path": str(sink / "{route}.jsonl")},
        **values,
    }


@pytest.mark.parametrize("rate", [25, 200])
async def test_an_alert_overtakes_a_saturating_bulk_campaign_at_the_route_rate(
    make_settings, redis_client: RedisClient, tmp_path: Path, rate: int
) -> None:
    sink = tmp_path / "sink"
    settings: Settings = make_settings(routes={"sms": file_route(sink, rate)})
    # both senders hold a bulk batch of the default size (200), each many chunks long, and more
    # bulk waits behind them: the alert must not wait for the held batches to be finished
    bulk = max(800, rate * 8)
    await enqueue_async(settings, "sms", messages(bulk, "bulk"), lane=Lane.BULK)
    alert_count = max(50, rate)
    async with running(settings, redis_client):

        async def bulk_flowing() -> bool:
            return len(read_sink(sink)) >= rate // 2

        await until(bulk_flowing, 30, "bulk under way")
        launched = time.time()
        await enqueue_async(settings, "sms", messages(alert_count, "alert"), lane=Lane.EMERGENCY)

        async def alert_sent() -> bool:
            return sum(line["id"].startswith("alert") for line in read_sink(sink)) >= alert_count

        await until(alert_sent, 60, "the whole alert")
        await until(lambda: _bulk_after_alert(sink), 30, "bulk to resume after the alert")
    lines = sorted(read_sink(sink), key=lambda line: line["ts"])
    alert = [line for line in lines if line["id"].startswith("alert")]
    assert sorted(line["id"] for line in alert) == sorted(f"alert-{n}" for n in range(alert_count))
    first, last = alert[0]["ts"], alert[-1]["ts"]
    between = [
        line for line in lines if line["id"].startswith("bulk") and first <= line["ts"] <= last
    ]
    # only what was already in the adapter's hands: one slice (the route's burst) per sender
    in_hands = SENDERS * max(1, int(rate * settings.route("sms").burst))
    assert len(between) <= in_hands, f"{len(between)} bulk messages went out during the alert"
    # the product's promise is alert parts / route rate + 1 s; a loaded machine gets twice that
    bound = alert_count / rate + 1
    assert last - launched <= 2 * bound, f"the alert took {last - launched:.2f}s (bound {bound}s)"
    # the batches that gave way were put back whole: nothing sent twice, nothing lost
    sent = [line["id"] for line in lines]
    assert len(sent) == len(set(sent)), "a message was sent twice"
    queued = await _queued_ids(redis_client, settings)
    assert not queued & set(sent), "a message sent is still queued"
    assert set(sent) | queued == {f"bulk-{n}" for n in range(bulk)} | {
        f"alert-{n}" for n in range(alert_count)
    }
    final = await status_async(settings, "sms")
    assert final.accepted == len(sent) and final.redelivered == 0 and final.dead == 0


async def _queued_ids(client: RedisClient, settings: Settings) -> set[str]:
    """The ids of every message still in the route's streams and retry sets."""
    ids: set[str] = set()
    for keys in shard_keys(settings.namespace, "sms", settings.route("sms").shards):
        for lane in LANES:
            envelopes = [fields[b"b"] for _, fields in await client.xrange(keys.stream(lane))]
            envelopes += await client.zrange(keys.delayed(lane), 0, -1)
            ids.update(m.id for envelope in envelopes for m in unpack(envelope).messages)
    return ids


async def _bulk_after_alert(sink: Path) -> bool:
    kinds = [line["id"].split("-")[0] for line in sorted(read_sink(sink), key=lambda x: x["ts"])]
    last_alert = max(i for i, kind in enumerate(kinds) if kind == "alert")
    return "bulk" in kinds[last_alert + 1 :]


async def test_a_slow_route_never_bursts_past_the_carriers_window(
    make_settings, redis_client: RedisClient
) -> None:
    # a carrier that takes 30 submits a second and refuses the 31st within the same second
    async with SmscSimulator(SmscOptions(tps=30, tps_burst=1)) as smsc:
        settings: Settings = make_settings(
            routes={
                "carrier": {
                    "adapter": "smpp",
                    "rate": 25,  # the product's chunk (50) and burst: nothing else tuned
                    "options": {"port": smsc.port, "system_id": "loa"},
                }
            }
        )
        count = 100
        await enqueue_async(settings, "carrier", messages(count))
        async with running(settings, redis_client):

            async def all_sent() -> bool:
                return (await status_async(settings, "carrier")).accepted >= count

            await until(all_sent, 60, f"{count} messages at 25/s")
        stats = smsc.stats()
    final = await status_async(settings, "carrier")
    assert stats["throttled"] == 0 and final.throttled == 0, "a send burst past the carrier's cap"
    assert stats["accepted"] == count and final.accepted == count
