"""Scripted citizens: the simulators' people answer what loa sends them, over the real wire."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import uvicorn

from helpers import enqueue_async, running, until
from loa.api import create_app
from loa.engine.connection import RedisClient, connect
from loa.engine.embedded import free_port
from loa.engine.events import read_inbound
from loa.message import Message
from loa.sim.citizens import CitizenOptions, Citizens, who
from loa.sim.http import HttpSimulator
from loa.sim.smsc import SmscSimulator

pytestmark = pytest.mark.anyio

SCRIPT: dict[str, Any] = {
    "seed": 11,
    "to": "9095",
    "scripts": [
        {
            "match": "lich hen tiem",
            "share": 0.6,
            "delay": 0.05,
            "jitter": 0.2,
            "replies": [
                {"text": "1", "kind": "confirm", "weight": 2},
                {"text": "Xác nhận", "kind": "confirm"},
                {"text": "HUY LICH", "kind": "cancel"},
                {"text": "Cho hỏi tiêm ở đâu ạ?", "kind": "hotline"},
            ],
        }
    ],
}
PEOPLE = 60


def appointment(n: int) -> Message:
    return Message(f"a-{n}", f"+8491{n:07d}", f"Bo Y te: lich hen tiem cua ban {n}. Soan 1/2.")


def test_each_person_does_the_same_every_time_and_answers_once() -> None:
    options = CitizenOptions.model_validate(SCRIPT)
    first, second = Citizens(options), Citizens(options)
    texts = "Bo Y te: LỊCH HẸN TIÊM, 08:00"
    plans = [first.heard(f"8491{n:07d}", texts) for n in range(PEOPLE)]
    assert plans == [second.heard(f"8491{n:07d}", texts) for n in range(PEOPLE)]
    assert 0.4 * PEOPLE < sum(p is not None for p in plans) < 0.8 * PEOPLE
    assert all(first.heard(f"8491{n:07d}", texts) is None for n in range(PEOPLE)), "once"
    assert first.heard("84910000099", "Khan cap: lu lon") is None, "no script for it"
    assert {p.kind for p in plans if p} == {"confirm", "cancel", "hotline"}


async def test_smsc_citizens_answer_with_deliver_sm(make_settings, redis_client: RedisClient):
    async with SmscSimulator({"citizens": SCRIPT, "store": 100}) as sim:
        route = {
            "adapter": "smpp",
            "options": {"host": "127.0.0.1", "port": sim.port, "system_id": "moh"},
        }
        settings = make_settings(routes={"sms": route})
        async with running(settings, redis_client):
            await enqueue_async(settings, "sms", [appointment(n) for n in range(PEOPLE)])
            assert sim.citizens is not None
            citizens = sim.citizens

            async def answered() -> bool:
                return sim.stats()["messages"] == PEOPLE and citizens.waiting == 0

            await until(answered, 30, "every scripted reply")
            # the same messages again (a resend): nobody answers twice
            await enqueue_async(settings, "sms", [appointment(n) for n in range(PEOPLE)])
            await until(lambda_async(lambda: sim.stats()["messages"] == 2 * PEOPLE), 30, "again")
            rows = await read_inbound(redis_client, settings.namespace)
    stats = sim.stats()["citizens"]
    assert stats["failed"] == 0 and stats["sent"] == stats["scheduled"] == len(rows) > 0
    assert sim.citizens is not None
    assert Counter((r["sender"], r["text"]) for r in rows) == Counter(
        (r["phone"], r["text"]) for r in sim.citizens.replies
    )
    # what the simulator reports names nobody by their number
    assert Counter((who(r["sender"]), r["text"]) for r in rows) == Counter(
        (r["who"], r["text"]) for r in stats["replies"]
    )
    assert not any(r["sender"].lstrip("+") in str(stats) for r in rows)
    assert {r["recipient"] for r in rows} == {"9095"}
    assert "Xác nhận" in {r["text"] for r in rows}, "diacritics arrive as sent"
    assert sum(stats["by_kind"].values()) == len(rows)


async def test_zalo_citizens_answer_through_the_signed_webhook(
    make_settings, redis_url: str, redis_client: RedisClient
):
    port = free_port()
    zalo_script = {**SCRIPT, "scripts": [{**SCRIPT["scripts"][0], "match": "248613 lich hen"}]}
    async with HttpSimulator(
        {
            "citizens": zalo_script,
            "webhook_url": f"http://127.0.0.1:{port}/api/v1/webhooks/zalo-zns",
            "webhook_secret": "oa-secret-for-tests",
        }
    ) as sim:
        zalo = {
            "adapter": "zalo",
            "options": {"base_url": sim.url, "access_token": "sim-zalo-token"},
        }
        settings = make_settings(
            routes={"zalo-zns": zalo}, api={"webhook_secrets": {"zalo-zns": "oa-secret-for-tests"}}
        )
        app = create_app(settings, lambda: connect(redis_url))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        serving = asyncio.create_task(server.serve())
        try:
            await until(lambda_async(lambda: server.started), 30, "the API listening")
            async with running(settings, redis_client):
                zns = [
                    Message(
                        f"z-{n}",
                        f"+8491{n:07d}",
                        "",
                        extra={
                            "channel": "zalo",
                            "template_id": "248613",
                            "data": {"what": "Lich hen", "day": "12/12"},
                        },
                    )
                    for n in range(PEOPLE)
                ]
                await enqueue_async(settings, "zalo-zns", zns)
                assert sim.citizens is not None
                citizens = sim.citizens

                async def answered() -> bool:
                    return sim.stats["zalo"].received >= PEOPLE and citizens.waiting == 0

                await until(answered, 30, "every scripted reply")
        finally:
            server.should_exit = True
            await serving
        rows = await read_inbound(redis_client, settings.namespace)
    stats = sim.snapshot()["citizens"]
    assert stats["failed"] == 0 and stats["sent"] == len(rows) > 0
    assert {r["channel"] for r in rows} == {"zalo"}
    assert sim.citizens is not None
    assert Counter((r["sender"], r["text"]) for r in rows) == Counter(
        (r["phone"], r["text"]) for r in sim.citizens.replies
    )


def lambda_async(check: Any) -> Any:
    async def wrapped() -> bool:
        return bool(check())

    return wrapped
