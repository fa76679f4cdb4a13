"""Fallback on silence across a worker killed with SIGKILL: a real worker process under the
supervisor sends a Zalo campaign through the simulator, which never delivers a share of it;
the worker is killed while the fallbacks are going out, its replacement finishes them, and
exactly the silent share gets one SMS each."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from helpers import api_server, enqueue_async, read_sink, status_async, until
from loa.engine.connection import RedisClient
from loa.engine.control import campaign_key
from loa.engine.keys import shard_keys
from loa.engine.queue import Queues
from loa.engine.silence import pending
from loa.engine.supervisor import Supervisor
from loa.fallback import AFTER
from loa.message import Lane, Message
from loa.settings import Settings
from loa.sim.http import HttpSimulator

pytestmark = pytest.mark.anyio

OA_SECRET = "oa-secret-for-tests"
ZALO, SMS = "zalo-zns", "sms-x"


@pytest.fixture
def redis_url(service_url: str) -> str:
    """Worker processes take seconds to start: the local Redis service only."""
    return service_url


@pytest.fixture
def anyio_backend() -> str:
    """One loop: the worker under test is a process of its own, on uvloop whatever this is."""
    return "asyncio"


def campaign(total: int) -> list[Message]:
    return [
        Message(
            str(n),
            f"+8491{n:07d}",
            extra={
                "template_id": "248613",
                "data": {"n": str(n)},
                AFTER: 2500,
                "next": [["sms", SMS, f"+8491{n:07d}", f"SMS {n}", 1, None]],
            },
        )
        for n in range(total)
    ]


async def test_the_silent_share_goes_on_by_sms_once_across_a_kill_9(
    make_settings: Any, redis_url: str, redis_client: RedisClient, tmp_path: Path
) -> None:
    sink = tmp_path / "sms"
    options = {"seed": 11, "zalo_silent_ratio": 0.3, "zalo_oa_secret": OA_SECRET}
    async with HttpSimulator(options) as sim:
        settings: Settings = make_settings(
            worker={"claim_idle": 2.0, "drain_timeout": 5.0},
            routes={
                ZALO: {
                    "adapter": "zalo",
                    # 40 a second: the fallbacks go out over seconds, and the kill lands among them
                    "rate": 40,
                    "unit": "messages",
                    "shards": 2,
                    "concurrency": 2,
                    "chunk": 10,
                    "timeout": 1.5,
                    "options": {"base_url": sim.url, "access_token": "sim-zalo-token"},
                },
                SMS: {
                    "adapter": "file",
                    "shards": 2,
                    "options": {"path": str(sink / "{route}-{pid}.jsonl")},
                },
            },
            api={"webhook_secrets": {ZALO: OA_SECRET}},
        )
        total = 240
        messages = campaign(total)
        silent = {m.id for m in messages if sim.silent(m.to)}
        assert 40 < len(silent) < 110
        await redis_client.hset(
            campaign_key(settings.namespace, "flood"), mapping={"state": "running"}
        )
        async with api_server(settings, redis_url, ZALO) as webhook:
            sim.configure(zalo_webhook=webhook)
            await enqueue_async(settings, ZALO, messages, campaign="flood", lane=Lane.EMERGENCY)
            supervisor = Supervisor(settings, processes=1)
            await asyncio.to_thread(supervisor.start)
            try:

                async def some_went_on() -> bool:
                    supervisor.watch()
                    return len(read_sink(sink)) >= len(silent) // 4

                await until(some_went_on, 60, "the first fallbacks sent by SMS")
                [killed] = supervisor.pids()
                os.kill(killed, signal.SIGKILL)
                before = len(read_sink(sink))

                async def replaced() -> bool:
                    supervisor.watch()
                    return bool(supervisor.pids()) and supervisor.pids() != [killed]

                await until(replaced, 30, "the supervisor to start another worker")

                async def settled() -> bool:
                    supervisor.watch()
                    zalo = await status_async(settings, ZALO)
                    sms = await status_async(settings, SMS)
                    timers = await pending(redis_client, settings.namespace, ZALO)
                    waiting = sim.receipts_waiting
                    done = zalo.finished >= total and timers == 0 and not waiting
                    return done and sms.finished >= len(silent)

                await until(settled, 120, "every timer closed and every fallback sent")
            finally:
                await asyncio.to_thread(supervisor.stop)
    assert before < len(silent), "the worker was killed while fallbacks were still due"
    sent = Counter(str(line["id"]) for line in read_sink(sink))
    assert set(sent) == silent, "exactly the silent share went on by SMS"
    assert max(sent.values()) == 1, "nobody got the SMS twice"
    shards = shard_keys(settings.namespace, ZALO, 2)
    counts = await Queues(redis_client, settings.namespace).campaign_stats(shards, "flood")
    assert counts["fallback_timeout"] == len(silent)
    print(f"{len(silent)} silent of {total}; {before} sent by SMS before the kill")
