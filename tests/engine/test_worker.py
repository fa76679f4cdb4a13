"""A worker in this process against real Redis: retries, dead letters, throttling, expiry, lanes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from helpers import (
    enqueue_async,
    id_counts,
    messages,
    read_sink,
    run_until_idle,
    running,
    status_async,
    until,
)
from loa.adapters.file import FileAdapter, FileOptions
from loa.engine.connection import RedisClient, connect
from loa.engine.context import RouteContext
from loa.engine.envelope import Batch, now_ms
from loa.engine.keys import shard_keys
from loa.engine.metrics import Metrics
from loa.engine.progress import Progress
from loa.engine.queue import Queues, Taken
from loa.engine.ratelimit import RateLimiter, RateSpec
from loa.engine.route import RouteRunner
from loa.engine.worker import connections_needed
from loa.message import Lane, Message, SendResult
from loa.settings import Settings

pytestmark = pytest.mark.anyio


def route(adapter: str = "null", **values: object) -> dict[str, object]:
    base: dict[str, object] = {"adapter": adapter, "shards": 2, "chunk": 10, "concurrency": 2}
    return {**base, **values}


async def test_every_message_is_sent_once_and_counted(make_settings, redis_client, tmp_path):
    sink = tmp_path / "sink"
    settings = make_settings(
        routes={"sms": route("file", options={"path": str(sink / "{route}-{pid}.jsonl")})}
    )
    await enqueue_async(settings, "sms", messages(1000), lane=Lane.BULK)
    await run_until_idle(settings, redis_client)
    lines = read_sink(sink)
    assert sorted(line["id"] for line in lines) == sorted(f"m-{n}" for n in range(1000))
    final = await status_async(settings, "sms")
    assert (final.accepted, final.waiting, final.in_flight) == (1000, 0, 0)


async def test_retries_back_off_then_dead_letter_with_reason(make_settings, redis_client):
    settings = make_settings(
        routes={
            "flaky": route(
                max_attempts=3, backoff=0.05, backoff_max=0.2, options={"retry_ratio": 1.0}
            )
        }
    )
    await enqueue_async(settings, "flaky", messages(40))
    await run_until_idle(settings, redis_client)  # batches due again later are not idle
    final = await status_async(settings, "flaky")
    assert final.dead == 40 and final.accepted == 0
    assert final.retried == 80, "two retries per message before the third and last attempt"
    letters = await _dead_letters(redis_client, settings, "flaky")
    assert sorted(letter.message[0] for letter in letters) == sorted(f"m-{n}" for n in range(40))
    assert all("gave up after 3 attempts" in letter.reason for letter in letters)
    assert all(letter.attempt == 2 for letter in letters)


async def test_permanent_failures_are_not_retried(make_settings, redis_client):
    settings = make_settings(routes={"bad": route(options={"fail_ratio": 1.0})})
    await enqueue_async(settings, "bad", messages(25))
    await run_until_idle(settings, redis_client)
    assert await _finished(settings, "bad", 25), "25 failures"
    final = await status_async(settings, "bad")
    assert (final.failed, final.retried, final.dead) == (25, 0, 0)
    letters = await _dead_letters(redis_client, settings, "bad")
    assert {letter.reason for letter in letters} == {"injected permanent failure"}


async def test_expired_messages_are_dropped_and_counted(make_settings, redis_client, tmp_path):
    sink = tmp_path / "sink"
    settings = make_settings(
        routes={"sms": route("file", options={"path": str(sink / "out.jsonl")})}
    )
    await enqueue_async(settings, "sms", messages(30, "old"), expires_ms=now_ms() - 1)
    await enqueue_async(settings, "sms", messages(20, "new"), expires_ms=now_ms() + 600_000)
    await run_until_idle(settings, redis_client)
    assert await _finished(settings, "sms", 50), "50 outcomes"
    final = await status_async(settings, "sms")
    assert (final.expired, final.accepted) == (30, 20)
    assert {line["id"].split("-")[0] for line in read_sink(sink)} == {"new"}, "stale advice sent"


@pytest.mark.parametrize(("shards", "concurrency"), [(1, 1), (4, 2)])
async def test_emergency_lane_overtakes_bulk_backlog(
    make_settings, redis_client, tmp_path, shards, concurrency
):
    sink = tmp_path / "sink"
    settings = make_settings(
        queue={"batch_size": 50},
        routes={
            "sms": route(
                "file",
                shards=shards,
                concurrency=concurrency,
                chunk=50,
                rate=2000,
                unit="messages",
                options={"path": str(sink / "out.jsonl")},
            )
        },
    )
    await enqueue_async(settings, "sms", messages(3000, "bulk"), lane=Lane.BULK)
    async with running(settings, redis_client):
        await until(lambda: _accepted_at_least(settings, "sms", 200), 30, "bulk under way")
        # the whole alert on one shard: lanes must outrank shard order, not just order a shard
        queues = Queues(redis_client, settings.namespace)
        first_shard = shard_keys(settings.namespace, "sms", shards)[0]
        alert = messages(400, "alert")
        for start in range(0, len(alert), 50):
            batch = Batch(route="sms", lane=Lane.EMERGENCY, messages=alert[start : start + 50])
            await queues.put(first_shard, batch)
        await until(lambda: _finished(settings, "sms", 3400), 60, "everything")
    order = [line["id"].split("-")[0] for line in read_sink(sink)]
    first_alert = order.index("alert")
    last_alert = max(i for i, kind in enumerate(order) if kind == "alert")
    # once the alert is taken, no shard gives out bulk while alert batches wait; other senders
    # may finish the bulk batch they hold, and take one more once the alert's last batches are
    # all in flight (nothing urgent is waiting then)
    in_flight = 2 * (concurrency - 1) * 50
    assert order[first_alert:last_alert].count("bulk") <= in_flight
    assert order[last_alert + 1 :].count("bulk") > 0, "bulk resumed after the alert"


async def test_throttled_route_slows_down_and_recovers(make_settings, redis_client):
    settings = make_settings(
        routes={
            "carrier": route(
                rate=2000,
                unit="messages",
                chunk=20,
                concurrency=4,
                throttle_recovery=0.1,
                options={"capacity": 300},
            )
        }
    )
    await enqueue_async(settings, "carrier", messages(2000))
    factors: list[float] = []
    async with running(settings, redis_client) as worker:
        limiter_state = f"{settings.namespace}:{{rl:carrier}}"

        async def done_and_sample() -> bool:
            raw = await redis_client.hget(limiter_state, "factor")
            if raw is not None:
                factors.append(float(raw))
            return await _finished(settings, "carrier", 2000)

        await until(done_and_sample, 60, "2000 messages through a throttling carrier")
        final = await status_async(settings, "carrier")
        assert final.accepted == 2000 and final.dead == 0 and final.retried == 0, (
            "throttled messages wait for the route; they do not burn retry attempts"
        )
        assert final.throttled > 0
        assert min(factors) <= 0.5, "the route's rate was cut"
        # without adaptation the route would offer ~6.7x the carrier's capacity and most
        # answers would be throttles; adapted, fewer throttles than acceptances
        assert final.throttled < final.accepted
        carrier = worker.adapters["carrier"]  # the carrier stops throttling
        carrier.options = carrier.options.model_copy(update={"capacity": 0})  # type: ignore[attr-defined]
        # near the cap it showed, the route probes gently, then faster every 1.5 s nothing is
        # refused, and below 1 at throttle_recovery (0.1/s): back from ~0.15 in 15-20 s
        await until(
            lambda: _factor_at_least(redis_client, settings, "carrier", 0.99),
            40,
            "the route's rate to recover",
        )


async def test_unreadable_entry_goes_to_dead_letters_and_queue_moves_on(
    make_settings, redis_client
):
    settings = make_settings(routes={"sms": route(shards=1)})
    keys = shard_keys(settings.namespace, "sms", 1)[0]
    queues = Queues(redis_client, settings.namespace)
    await queues.prepare([keys])
    await redis_client.xadd(keys.stream(Lane.NORMAL), {b"b": b"\xc1not msgpack"})
    await enqueue_async(settings, "sms", messages(10))
    await run_until_idle(settings, redis_client)
    assert await _finished(settings, "sms", 10), "the good batch"
    letters = await queues.dead_letters(keys)
    assert len(letters) == 1 and "unreadable entry" in letters[0].reason
    assert (await queues.stats([keys])).get("normal:unreadable") == 1


async def _finished(settings: Settings, name: str, total: int) -> bool:
    current = await status_async(settings, name)
    return current.finished >= total and current.in_flight == 0 and current.waiting == 0


async def _accepted_at_least(settings: Settings, name: str, count: int) -> bool:
    return (await status_async(settings, name)).accepted >= count


async def _factor_at_least(
    client: RedisClient, settings: Settings, name: str, floor: float
) -> bool:
    from loa.engine.ratelimit import RateLimiter, RateSpec

    limiter = RateLimiter(client, settings.namespace, name, RateSpec.of(settings.route(name)))
    return await limiter.current_factor() >= floor


async def _dead_letters(client: RedisClient, settings: Settings, name: str) -> list:
    queues = Queues(client, settings.namespace)
    letters = []
    for keys in shard_keys(settings.namespace, name, settings.route(name).shards):
        letters += await queues.dead_letters(keys, count=1000)
    return letters


async def test_a_batch_that_outlives_its_workers_goes_to_dead_letters(make_settings, redis_client):
    settings = make_settings(worker={"max_deliveries": 3}, routes={"sms": route(shards=1)})
    keys = shard_keys(settings.namespace, "sms", 1)[0]
    queues = Queues(redis_client, settings.namespace)
    await queues.prepare([keys])
    await enqueue_async(settings, "sms", messages(5, "poison"))
    # three workers took it in turn and died on it (each claim counts a delivery)
    stream = keys.stream(Lane.NORMAL)
    taken = await queues.take(keys, "ghost-0")
    assert taken is not None
    for ghost in ("ghost-1", "ghost-2"):
        await redis_client.xclaim(stream, "workers", ghost, 0, [taken.entry_id])
    async with running(settings, redis_client):
        await until(lambda: _finished(settings, "sms", 5), 30, "the poison batch settled")
    final = await status_async(settings, "sms")
    assert (final.dead, final.accepted) == (5, 0)
    letters = await queues.dead_letters(keys)
    assert {letter.reason for letter in letters} == {
        "batch was taken 4 times in a row without progress"
    }


async def test_a_batch_whose_workers_die_after_progress_is_not_poison(make_settings, redis_client):
    # workers killed over and over, each after sending part of the batch: it is not the batch
    settings = make_settings(worker={"max_deliveries": 3}, routes={"sms": route(shards=1)})
    keys = shard_keys(settings.namespace, "sms", 1)[0]
    queues = Queues(redis_client, settings.namespace)
    await queues.prepare([keys])
    await enqueue_async(settings, "sms", messages(5, "busy"))
    stream = keys.stream(Lane.NORMAL)
    taken = await queues.take(keys, "ghost-0")
    assert isinstance(taken, Taken)
    for delivery, ghost in enumerate(("ghost-0", "ghost-1", "ghost-2", "ghost-3"), 1):
        if delivery > 1:
            await redis_client.xclaim(stream, "workers", ghost, 0, [taken.entry_id])
        taken.consumer = ghost
        progress = Progress(done=1, delivery=delivery)
        progress.counts["accepted"] = 1
        assert await queues.checkpoint(taken, progress)
    async with running(settings, redis_client):
        await until(lambda: _finished(settings, "sms", 5), 30, "the batch settled")
    final = await status_async(settings, "sms")
    assert (final.dead, final.accepted) == (0, 5), "four workers died on it, each after progress"


async def test_batches_waiting_on_a_slow_route_are_not_taken_from_a_live_worker(
    make_settings, redis_client, tmp_path
):
    # 4 messages/s and chunks of 10: a chunk waits 2.5 s for tokens, claim_idle is 1 s
    sink = tmp_path / "sink"
    settings = make_settings(
        routes={
            "slow": route(
                "file",
                rate=4,
                unit="messages",
                shards=1,
                concurrency=2,
                options={"path": str(sink / "{pid}-{route}.jsonl")},
            )
        }
    )
    await enqueue_async(settings, "slow", messages(16))
    other = connect(settings.redis_url or "")
    try:
        async with running(settings, redis_client), running(settings, other):
            await until(lambda: _finished(settings, "slow", 16), 30, "16 slow messages")
    finally:
        await other.aclose()
    final = await status_async(settings, "slow")
    delivered = [line["id"] for line in read_sink(sink)]
    assert sorted(delivered) == sorted(f"m-{n}" for n in range(16)), "each sent exactly once"
    assert (final.accepted, final.redelivered) == (16, 0)


async def test_claim_finds_a_dead_workers_batches_behind_many_live_ones(
    make_settings, redis_client
):
    settings = make_settings(queue={"batch_size": 1}, routes={"sms": route(shards=1)})
    keys = shard_keys(settings.namespace, "sms", 1)[0]
    queues = Queues(redis_client, settings.namespace)
    await queues.prepare([keys])
    await enqueue_async(settings, "sms", messages(100))
    live = [await queues.take(keys, "live") for _ in range(90)]
    dead = [await queues.take(keys, "dead") for _ in range(10)]
    await asyncio.sleep(2.2)  # everything is idle past the 2 s claim threshold now...
    stream = keys.stream(Lane.NORMAL)
    await queues.touch(stream, "live", [t.entry_id for t in live if t])  # ...but the live ones
    cursors: dict[str, str] = {}
    claimed = []
    for _ in range(5):  # each call scans at most 80 pending entries; the cursor moves on
        claimed += await queues.claim(keys, "rescuer", 2000, cursors)
    assert sorted(t.entry_id for t in claimed) == sorted(t.entry_id for t in dead if t)


async def test_many_idle_senders_share_a_bounded_pool(make_settings, redis_client):
    settings = make_settings(routes={"wide": route(concurrency=150, shards=4)})
    worker_client = connect(
        settings.redis_url or "", max_connections=connections_needed(settings, None)
    )
    try:
        async with running(settings, worker_client):
            await asyncio.sleep(1.0)  # every sender blocks in a read on its own connection
            await enqueue_async(settings, "wide", messages(10))
            await until(lambda: _finished(settings, "wide", 10), 20, "10 messages")
    finally:
        await worker_client.aclose()


async def test_status_does_not_count_in_flight_batches_as_waiting(make_settings, redis_client):
    settings = make_settings(routes={"sms": route(shards=1)})
    keys = shard_keys(settings.namespace, "sms", 1)[0]
    queues = Queues(redis_client, settings.namespace)
    await queues.prepare([keys])
    await enqueue_async(settings, "sms", messages(settings.queue.batch_size * 3))
    assert await queues.take(keys, "c1") is not None
    current = await status_async(settings, "sms")
    assert (current.waiting, current.in_flight) == (2, 1)


async def test_batches_a_dead_worker_held_unsent_are_not_counted_as_redelivered(
    make_settings, redis_client, tmp_path
):
    sink = tmp_path / "sink"
    file_options = {"path": str(sink / "{pid}-{route}.jsonl")}
    settings = make_settings(
        queue={"batch_size": 10}, routes={"sms": route("file", shards=1, options=file_options)}
    )
    keys = shard_keys(settings.namespace, "sms", 1)[0]
    queues = Queues(redis_client, settings.namespace)
    await queues.prepare([keys])
    await enqueue_async(settings, "sms", messages(40))
    # a worker took two batches (waiting for its senders, or for tokens) and was killed
    held = [await queues.take(keys, "killed-worker") for _ in range(2)]
    assert all(isinstance(taken, Taken) for taken in held)
    async with running(settings, redis_client):
        await until(lambda: _finished(settings, "sms", 40), 30, "all 40 messages")
    delivered = id_counts(read_sink(sink))
    assert set(delivered.values()) == {1} and len(delivered) == 40, "each sent exactly once"
    final = await status_async(settings, "sms")
    assert (final.accepted, final.redelivered) == (40, 0), "nothing was sent twice"


class StallingFileAdapter(FileAdapter):
    """Writes its first chunk like the file adapter, then never answers: a worker frozen (and
    then killed) after its provider received the chunk and before the outcome was recorded."""

    async def send(self, messages: Sequence[Message]) -> Sequence[SendResult]:
        await super().send(messages)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_chunk_handed_to_a_dead_workers_adapter_is_counted_when_sent_again(
    make_settings, redis_client, tmp_path
):
    sink = tmp_path / "sink"
    file_options = {"path": str(sink / "{route}-{pid}.jsonl")}
    settings = make_settings(
        queue={"batch_size": 30},
        routes={"sms": route("file", shards=1, concurrency=1, options=file_options)},
    )
    limits = settings.route("sms")
    await enqueue_async(settings, "sms", messages(30))
    queues = Queues(redis_client, settings.namespace)
    stalled = RouteRunner(
        RouteContext(
            "sms",
            limits,
            StallingFileAdapter("sms", FileOptions(path=str(sink / "stalled.jsonl"))),
            queues,
            RateLimiter(redis_client, settings.namespace, "sms", RateSpec.of(limits)),
            Metrics(),
            "killed-worker",
            settings.worker,
            asyncio.Event(),
        )
    )
    killed = asyncio.create_task(stalled.run())
    try:
        await until(lambda: _lines_at_least(sink, 10), 10, "the first chunk at the provider")
    finally:
        killed.cancel()  # as kill -9: nothing settles, nothing more is written
        await asyncio.wait([killed])
    async with running(settings, redis_client):
        await until(lambda: _finished(settings, "sms", 30), 30, "all 30 messages")
    delivered = id_counts(read_sink(sink))
    assert len(delivered) == 30
    duplicates = sum(count - 1 for count in delivered.values())
    assert duplicates == 10, "the chunk the dead worker handed over went out again"
    final = await status_async(settings, "sms")
    assert (final.accepted, final.redelivered) == (30, duplicates)


async def _lines_at_least(sink: Path, count: int) -> bool:
    return len(read_sink(sink)) >= count
