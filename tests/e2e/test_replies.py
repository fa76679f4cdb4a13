"""Every reply is kept: binds held with nothing to send, deliver_sm acknowledged only once
written, and neither a worker killed nor Redis away loses one; against loa's SMSC simulator."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from helpers import TcpProxy, running, status_async, until
from loa.adapters import registry
from loa.adapters.smpp.adapter import SmppAdapter
from loa.api import create_app
from loa.campaigns.controls import campaign_controls
from loa.engine.binds import read_binds
from loa.engine.connection import RedisClient, connect
from loa.engine.events import EventWriter, read_inbound
from loa.engine.keys import suppression_key
from loa.engine.metrics import Metrics
from loa.engine.worker import process_main
from loa.settings import EventSettings, Settings
from loa.sim.smsc import SmscSimulator

pytestmark = pytest.mark.anyio

PHONE = "+84912345678"
HOTLINE = "1900"


@pytest.fixture
def redis_url(service_url: str) -> str:
    """The local service, over TCP: these tests put a proxy between loa and it."""
    return service_url


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    """Redis behind a proxy that a test can cut or hold."""
    target = urlparse(redis_url)
    forwarder = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await forwarder.start()
    yield forwarder
    await forwarder.stop()


def smpp_route(port: int, **options: Any) -> dict[str, Any]:
    """An SMPP route to the simulator that rebinds quickly."""
    return {
        "adapter": "smpp",
        "options": {
            "host": "127.0.0.1",
            "port": port,
            "system_id": "moh",
            "reconnect_min": 0.05,
            "reconnect_max": 0.5,
            "bind_timeout": 2.0,
            **options,
        },
    }


def bound(client: RedisClient, settings: Settings, route: str, up: int) -> Any:
    """A check: the workers report `up` binds of `route` up."""

    async def check() -> bool:
        binds = (await read_binds(client, settings.namespace, [route])).get(route)
        return binds is not None and binds.up == up

    return check


async def inbound_texts(client: RedisClient, settings: Settings) -> list[str]:
    return [row["text"] for row in await read_inbound(client, settings.namespace)]


async def test_a_reply_is_stored_on_a_route_that_never_sent_and_after_the_smsc_restarts(
    make_settings: Any, redis_client: RedisClient
) -> None:
    async with SmscSimulator() as sim:
        settings = make_settings(routes={"sms": smpp_route(sim.port)})
        async with running(settings, redis_client) as worker:
            # no campaign, nothing queued: the route is bound all the same
            await until(bound(redis_client, settings, "sms", 1), 15, "the idle route bound")
            answer = await sim.send_mo(PHONE, HOTLINE, "Tôi bị sốt, cần tư vấn")
            assert answer == 0
            # acknowledged only once written: it is there the moment the SMSC has its answer
            assert await inbound_texts(redis_client, settings) == ["Tôi bị sốt, cần tư vấn"]
            status = await status_async(settings, "sms")
            assert (status.binds_up, status.binds_down, status.binds) == (1, 0, "1/1")
            gauge = worker.metrics.registry.get_sample_value
            assert gauge("loa_route_binds", {"route": "sms", "state": "up"}) == 1

            port = sim.port
            await sim.stop()  # the SMSC restarts: down for a while, then back on its port
            await until(bound(redis_client, settings, "sms", 0), 15, "the bind reported down")
            assert gauge("loa_route_binds", {"route": "sms", "state": "down"}) == 1
            assert (await status_async(settings, "sms")).binds == "0/1"
            async with SmscSimulator(port=port) as again:
                await until(bound(redis_client, settings, "sms", 1), 15, "the route bound again")
                assert again.stats()["submits"] == 0, "bound again with nothing sent"
                assert await again.send_mo(PHONE, HOTLINE, "STOP") == 0
    assert await inbound_texts(redis_client, settings) == ["Tôi bị sốt, cần tư vấn", "STOP"]
    assert await redis_client.sismember(suppression_key(settings.namespace), PHONE)


async def test_readyz_counts_the_binds_and_names_a_route_with_none_up(
    make_settings: Any, redis_url: str, redis_client: RedisClient
) -> None:
    async with SmscSimulator() as sim:
        settings = make_settings(routes={"sms": smpp_route(sim.port), "push": {"adapter": "null"}})
        app = create_app(settings, lambda: connect(redis_url))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://loa.test"
            ) as client,
            running(settings, redis_client),
        ):
            await until(bound(redis_client, settings, "sms", 1), 15, "the route bound")
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()) == (
                200,
                {"status": "ready", "binds": {"sms": {"up": 1, "down": 0, "workers": 1}}},
            )
            await sim.stop()
            await until(bound(redis_client, settings, "sms", 0), 15, "the bind reported down")
            down = await client.get("/readyz")
    assert down.status_code == 503
    message = down.json()["error"]["message"]
    assert "sms: no bind up in 1 worker(s)" in message and "push" not in message
    assert str(sim.port) not in message, "an unauthenticated probe learns no addresses"


async def test_while_redis_is_away_a_reply_is_refused_for_now_and_then_kept_once(
    proxy: TcpProxy, redis_client: RedisClient, namespace: str
) -> None:
    through_proxy = connect(proxy.url)
    events = EventWriter(through_proxy, namespace, EventSettings(), Metrics())
    async with SmscSimulator({"redeliver_delay": 0.1}) as sim:
        options = smpp_route(sim.port)["options"]
        adapter = registry.create_adapter("sms", "smpp", options)
        assert isinstance(adapter, SmppAdapter)
        adapter.attach(events)
        adapter.listen()
        try:
            await until(lambda_async(lambda: sim.stats()["bound"] == 1), 10, "a bind")
            await proxy.cut()
            sending = asyncio.ensure_future(sim.send_mo(PHONE, HOTLINE, "STOP", answer_within=60))
            await until(lambda_async(lambda: sim.stats()["mo_retried"] >= 2), 30, "re-sends")
            assert not sending.done(), "never acknowledged while it could not be written"
            assert await redis_client.xlen(f"{namespace}:inbound") == 0
            await proxy.restore()
            assert await sending == 0
        finally:
            await adapter.aclose()
            await through_proxy.aclose()
    rows = await read_inbound(redis_client, namespace)
    assert [(row["sender"], row["text"], row["optout"]) for row in rows] == [(PHONE, "STOP", "1")]
    assert await redis_client.sismember(suppression_key(namespace), PHONE)
    stats = sim.stats()
    assert stats["mo_acked"] == 1 and stats["mo_sent"] == stats["mo_retried"] + 1


@pytest.mark.parametrize("anyio_backend", [("asyncio", {"use_uvloop": False})], ids=["asyncio"])
async def test_a_worker_killed_between_receiving_a_reply_and_writing_it_loses_nothing(
    make_settings: Any, proxy: TcpProxy, redis_client: RedisClient
) -> None:
    context = multiprocessing.get_context("spawn")

    def spawn(settings: Settings) -> multiprocessing.process.BaseProcess:
        arguments = (settings, proxy.url, ["sms"], campaign_controls)
        process = context.Process(target=process_main, args=arguments)
        process.start()
        return process

    async with SmscSimulator({"redeliver_delay": 0.1}) as sim:
        settings = make_settings(routes={"sms": smpp_route(sim.port)})
        first = spawn(settings)
        try:
            await until(bound(redis_client, settings, "sms", 1), 60, "the first worker bound")
            proxy.hold()  # Redis goes silent for the worker: its writes hang
            sending = asyncio.ensure_future(sim.send_mo(PHONE, HOTLINE, "STOP", answer_within=90))
            # the worker has the reply and is writing it (its opt-out first) when it dies
            phone = PHONE.encode()
            await until(lambda_async(lambda: phone in proxy.held), 30, "the write under way")
            assert first.pid is not None
            os.kill(first.pid, signal.SIGKILL)
            await asyncio.to_thread(first.join, 30)
            await until(lambda_async(lambda: sim.stats()["mo_retried"] >= 1), 30, "the loss seen")
            assert await read_inbound(redis_client, settings.namespace) == []
            assert not await redis_client.exists(suppression_key(settings.namespace))
            await proxy.restore()
            second = spawn(settings)
            try:
                assert await sending == 0, "the SMSC sent it again to the next worker"
            finally:
                second.terminate()
                await asyncio.to_thread(second.join, 30)
        finally:
            if first.is_alive():
                first.kill()
    rows = await read_inbound(redis_client, settings.namespace)
    assert [(row["sender"], row["text"]) for row in rows] == [(PHONE, "STOP")], "exactly once"
    assert await redis_client.sismember(suppression_key(settings.namespace), PHONE)
    assert sim.stats()["mo_acked"] == 1


def lambda_async(check: Any) -> Any:
    """A synchronous check as the async one `until` awaits."""

    async def wrapped() -> bool:
        return bool(check())

    return wrapped
