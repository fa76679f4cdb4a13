"""Fallback on silence and on failure: Zalo (the simulator, over HTTP) accepts every message but
never delivers a share of them; exactly that share goes on by SMS after `fallback_after`, once,
and receipts reach loa by the real webhook of a real API server on loopback."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from helpers import api_server, enqueue_async, read_sink, running, status_async, until
from loa.engine.connection import RedisClient, text
from loa.engine.control import campaign_key
from loa.engine.events import receipts_key
from loa.engine.keys import shard_keys
from loa.engine.queue import Queues
from loa.engine.silence import pending
from loa.fallback import AFTER, ON_FAILURE
from loa.message import Lane, Message
from loa.settings import Settings
from loa.sim.http import HttpSimulator

pytestmark = pytest.mark.anyio

OA_SECRET = "oa-secret-for-tests"
APP_ID = "3310500480048"
ZALO = "zalo-zns"
SMS = "sms-x"


@pytest.fixture
def redis_url(service_url: str) -> str:
    """A real API server and worker per test: the local Redis service is enough."""
    return service_url


def build_settings(
    make_settings: Any, sim: HttpSimulator, sink: Path, route: Any = None, **zalo: Any
) -> Settings:
    settings: Settings = make_settings(
        routes={
            ZALO: {
                "adapter": "zalo",
                "shards": 2,
                "chunk": 20,
                "options": {"base_url": sim.url, "access_token": "sim-zalo-token", **zalo},
                **(route or {}),
            },
            SMS: {"adapter": "file", "shards": 2, "options": {"path": str(sink / "{pid}.jsonl")}},
        },
        api={"webhook_secrets": {ZALO: OA_SECRET}},
    )
    return settings


def people(total: int, after_ms: int | None = 1500, **policy: Any) -> list[Message]:
    """Zalo messages that fall back to SMS, waiting `after_ms` for their delivered receipt."""
    extra: dict[str, Any] = dict(policy)
    if after_ms is not None:
        extra[AFTER] = after_ms
    return [
        Message(
            str(n),
            f"+8491{n:07d}",
            "",
            extra={
                "template_id": "248613",
                "data": {"n": str(n)},
                "next": [["sms", SMS, f"+8491{n:07d}", f"SMS {n}", 1, None]],
                **extra,
            },
        )
        for n in range(total)
    ]


async def start_campaign(client: RedisClient, settings: Settings, campaign: str) -> None:
    await client.hset(campaign_key(settings.namespace, campaign), mapping={"state": "running"})


async def delivered(client: RedisClient, settings: Settings, campaign: str) -> Counter[str]:
    raw = await client.hgetall(receipts_key(settings.namespace, campaign))
    return Counter({text(k): int(v) for k, v in raw.items()})


async def campaign_counts(client: RedisClient, settings: Settings, campaign: str, route: str):
    shards = shard_keys(settings.namespace, route, settings.route(route).shards)
    return await Queues(client, settings.namespace).campaign_stats(shards, campaign)


@pytest.fixture
async def sim() -> AsyncIterator[HttpSimulator]:
    options = {"zalo_app_id": APP_ID, "zalo_oa_secret": OA_SECRET, "seed": 7}
    async with HttpSimulator(options) as server:
        yield server


async def test_exactly_the_silent_share_is_sent_again_by_sms_once(
    make_settings: Any, redis_url: str, redis_client: RedisClient, sim: HttpSimulator, tmp_path
) -> None:
    sink = tmp_path / "sms"
    settings = build_settings(make_settings, sim, sink)
    total = 160
    messages = people(total, after_ms=3000)  # a delivered event takes milliseconds
    sim.configure(zalo_silent_ratio=0.25)
    silent = {m.id for m in messages if sim.silent(m.to)}
    assert 20 < len(silent) < 60, "the seeded share picks some phones, not all or none"
    await start_campaign(redis_client, settings, "camp-s")
    async with api_server(settings, redis_url, ZALO) as webhook:
        sim.configure(zalo_webhook=webhook)
        await enqueue_async(settings, ZALO, messages, campaign="camp-s", lane=Lane.EMERGENCY)

        async def settled() -> bool:
            timers = await pending(redis_client, settings.namespace, ZALO)
            sms = await status_async(settings, SMS)
            zalo = await status_async(settings, ZALO)
            return zalo.accepted == total and timers == 0 and sms.finished >= len(silent)

        async with running(settings, redis_client) as worker:
            await until(settled, 60, "every timer closed and every fallback sent")
    labels = {"route": ZALO, "lane": "emergency", "outcome": "fallback_timeout"}
    fired = worker.metrics.registry.get_sample_value("loa_messages_total", labels)
    assert fired == len(silent), "the metric counts what the sweeps fired"
    sent = Counter(str(line["id"]) for line in read_sink(sink))
    assert set(sent) == silent, "exactly the silent ones went on by SMS"
    assert max(sent.values()) == 1, "nobody twice"
    assert {line["body"] for line in read_sink(sink)} == {f"SMS {n}" for n in silent}
    zalo = await status_async(settings, ZALO)
    assert (zalo.accepted, zalo.fallback_timeout, zalo.fallback, zalo.failed) == (
        total,
        len(silent),
        0,
        0,
    )
    assert (await status_async(settings, SMS)).accepted == len(silent)
    counted = await campaign_counts(redis_client, settings, "camp-s", ZALO)
    assert counted["fallback_timeout"] == len(silent)
    assert (await delivered(redis_client, settings, "camp-s"))[f"{ZALO}:delivered"] == total - len(
        silent
    )
    assert sim.stats["zalo"].outcomes["silent"] == len(silent)


async def test_a_late_receipt_is_counted_and_changes_nothing(
    make_settings: Any, redis_url: str, redis_client: RedisClient, sim: HttpSimulator, tmp_path
) -> None:
    sink = tmp_path / "sms"
    settings = build_settings(make_settings, sim, sink)
    total = 30
    messages = people(total, after_ms=2500)
    late = {m.id: m.to.lstrip("+") for m in messages[::5]}
    await start_campaign(redis_client, settings, "camp-l")
    async with api_server(settings, redis_url, ZALO) as webhook:
        sim.configure(zalo_webhook=webhook, zalo_late=list(late.values()), zalo_late_delay=5.0)
        await enqueue_async(settings, ZALO, messages, campaign="camp-l")

        async def late_counted() -> bool:
            got = await delivered(redis_client, settings, "camp-l")
            timers = await pending(redis_client, settings.namespace, ZALO)
            return got[f"{ZALO}:delivered"] == total and timers == 0

        async with running(settings, redis_client):
            await until(late_counted, 60, "every receipt counted, the late ones too")
            sms_sent = await status_async(settings, SMS)

            async def sent_once() -> bool:
                return (await status_async(settings, SMS)).finished >= len(late)

            await until(sent_once, 30, "the fallbacks of the late ones sent")
    sent = Counter(str(line["id"]) for line in read_sink(sink))
    assert set(sent) == set(late) and max(sent.values()) == 1
    assert sms_sent.accepted <= len(late)
    zalo = await status_async(settings, ZALO)
    assert zalo.fallback_timeout == len(late), "the fallback went before the receipt came"
    assert sim.stats["zalo"].outcomes["late"] == len(late)


async def test_a_permanent_failure_falls_back_unless_the_plan_says_not_to(
    make_settings: Any, redis_url: str, redis_client: RedisClient, sim: HttpSimulator, tmp_path
) -> None:
    sink = tmp_path / "sms"
    # -118 read as a refusal of the channel for good (not the person's): it falls back too
    settings = build_settings(make_settings, sim, sink, errors={"-118": "failed"})
    total = 40
    on = people(total, after_ms=None)
    off = [
        Message(f"off-{m.id}", m.to, m.body, m.parts, {**(m.extra or {}), ON_FAILURE: False})
        for m in on
    ]
    sim.configure(no_zalo=[m.to.lstrip("+") for m in on[:12]])
    without = {m.id for m in on[:12]}
    await start_campaign(redis_client, settings, "camp-p")
    await start_campaign(redis_client, settings, "camp-q")
    await enqueue_async(settings, ZALO, on, campaign="camp-p")
    await enqueue_async(settings, ZALO, off, campaign="camp-q")

    async def settled() -> bool:
        zalo = await status_async(settings, ZALO)
        sms = await status_async(settings, SMS)
        return zalo.finished >= 2 * total and sms.finished >= len(without)

    async with running(settings, redis_client):
        await until(settled, 60, "every message settled")
    sent = Counter(str(line["id"]) for line in read_sink(sink))
    assert set(sent) == without and max(sent.values()) == 1
    p = await campaign_counts(redis_client, settings, "camp-p", ZALO)
    q = await campaign_counts(redis_client, settings, "camp-q", ZALO)
    assert (p["fallback_failed"], p["fallback"], p["failed"]) == (len(without), len(without), 0)
    assert (q["fallback_failed"], q["fallback"], q["failed"]) == (0, 0, len(without))
    assert (await status_async(settings, ZALO)).fallback_failed == len(without)


async def test_a_template_failure_never_falls_back(
    make_settings: Any, redis_client: RedisClient, sim: HttpSimulator, tmp_path
) -> None:
    sink = tmp_path / "sms"
    settings = build_settings(make_settings, sim, sink)
    sim.configure(zalo_templates=["another-template"])  # ours is unknown: -109 for everyone
    await start_campaign(redis_client, settings, "camp-t")
    await enqueue_async(settings, ZALO, people(10, after_ms=None), campaign="camp-t")

    async def settled() -> bool:
        return (await status_async(settings, ZALO)).finished >= 10

    async with running(settings, redis_client):
        await until(settled, 30, "every message settled")
    counts = await campaign_counts(redis_client, settings, "camp-t", ZALO)
    assert (counts["failed"], counts["fallback"], counts["fallback_failed"]) == (10, 0, 0)
    assert read_sink(sink) == []


async def test_messages_that_give_up_after_their_retries_fall_back(
    make_settings: Any, redis_client: RedisClient, sim: HttpSimulator, tmp_path
) -> None:
    sink = tmp_path / "sms"
    settings = build_settings(
        make_settings, sim, sink, {"max_attempts": 2, "backoff": 0.05}, errors={"-118": "retry"}
    )
    messages = people(20, after_ms=None)
    sim.configure(no_zalo=[m.to.lstrip("+") for m in messages[:5]])
    await start_campaign(redis_client, settings, "camp-r")
    await enqueue_async(settings, ZALO, messages, campaign="camp-r")

    async def settled() -> bool:
        zalo = await status_async(settings, ZALO)
        return zalo.finished >= 20 and (await status_async(settings, SMS)).finished >= 5

    async with running(settings, redis_client):
        await until(settled, 30, "every message settled")
    assert sorted(int(line["id"]) for line in read_sink(sink)) == list(range(5))
    counts = await campaign_counts(redis_client, settings, "camp-r", ZALO)
    assert (counts["retried"], counts["dead"], counts["fallback_failed"]) == (5, 0, 5)
