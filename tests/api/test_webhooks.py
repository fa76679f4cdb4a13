"""Receipt webhooks (signed per route, counted once) and /readyz with routes, on real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from helpers import approved, running, until
from loa.api import create_app
from loa.api.context import ApiContext
from loa.engine.connection import RedisClient, connect
from loa.engine.embedded import free_port
from loa.engine.events import read_inbound
from loa.engine.keys import inbound_key, receipts_key
from loa.errors import ConfigError
from loa.message import Message
from loa.settings import Settings
from loa.sim.http import HttpSimulator

pytestmark = pytest.mark.anyio

ZALO_SECRET = "oa-secret-key-0123"
PUSH_SECRET = "push-secret-key-0123"
APP_ID = "3310500480048"
ZALO_PLAN = (
    'name = "Cảnh báo Zika"\nlane = "high"\nchannels = ["zalo"]\n'
    '[templates]\nzalo = { template_id = "248613", data = { name = "{{ name }}" } }\n'
)
_serial = itertools.count(1)


@pytest.fixture
def redis_url(service_url: str) -> str:
    """The API is Redis-agnostic: the local service is enough (the engine tests cover both)."""
    return service_url


@dataclass
class Hook:
    """The app over ASGI, its context, and the settings it runs with."""

    client: httpx.AsyncClient
    app: FastAPI
    ctx: ApiContext
    settings: Settings
    redis: RedisClient
    tmp: Path

    async def zalo(self, event: dict[str, Any], secret: str = ZALO_SECRET) -> httpx.Response:
        """POST a Zalo event, signed as Zalo signs: sha256(app_id + body + timestamp + key)."""
        body = orjson.dumps(event)
        return await self.client.post(
            "/api/v1/webhooks/zalo-zns",
            content=body,
            headers={"X-ZEvent-Signature": zalo_signature(body, event, secret)},
        )

    async def push(
        self, receipts: list[dict[str, Any]], secret: str = PUSH_SECRET, stamp: int | None = None
    ) -> httpx.Response:
        """POST loa's receipt batch to the push route, HMAC-signed with its timestamp."""
        body = orjson.dumps({"receipts": receipts})
        return await self.client.post(
            "/api/v1/webhooks/push", content=body, headers=signed(body, secret, stamp)
        )

    async def delivered(self, campaign: str) -> dict[str, int]:
        raw = await self.redis.hgetall(receipts_key(self.settings.namespace, campaign))
        return {k.decode(): int(v) for k, v in raw.items()}


def zalo_signature(body: bytes, event: dict[str, Any], secret: str) -> str:
    signed = str(event["app_id"]).encode() + body + f"{event['timestamp']}{secret}".encode()
    return hashlib.sha256(signed).hexdigest()


def sign(body: bytes, secret: str, stamp: int) -> str:
    """loa's form: HMAC-SHA256 of `timestamp.body`, as the module's docstring documents it."""
    signed_bytes = str(stamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed_bytes, hashlib.sha256).hexdigest()


def signed(body: bytes, secret: str = PUSH_SECRET, stamp: int | None = None) -> dict[str, str]:
    """The headers of loa's form, signed now (or at `stamp`)."""
    at = int(time.time()) if stamp is None else stamp
    return {"X-Loa-Timestamp": str(at), "X-Loa-Signature": sign(body, secret, at)}


def received(msg_id: str, **extra: Any) -> dict[str, Any]:
    """Zalo's event for a ZNS that reached the phone, stamped now (in milliseconds)."""
    stamp = str(int(time.time() * 1000))
    return {
        "app_id": APP_ID,
        "oa_id": "579745863508352884",
        "event_name": "user_received_message",
        "sender": {"id": "579745863508352884"},
        "recipient": {"id": "8413927584230111"},
        "message": {"msg_id": msg_id, "delivery_time": stamp, "tracking_id": "x"},
        "timestamp": stamp,
        **extra,
    }


@pytest.fixture
async def sim() -> AsyncIterator[HttpSimulator]:
    async with HttpSimulator() as server:
        yield server


@pytest.fixture
async def hook(make_settings, redis_url, redis_client, sim, tmp_path) -> AsyncIterator[Hook]:
    settings = make_settings(
        routes={
            "zalo-zns": {
                "adapter": "zalo",
                "options": {"base_url": sim.url, "access_token": "sim-zalo-token"},
                "chunk": 10,
            },
            "push": {"adapter": "null"},
            "quiet": {"adapter": "null"},  # a route without a webhook secret
        },
        channels={"zalo": {"default": "zalo-zns"}},
        api={"webhook_secrets": {"zalo-zns": ZALO_SECRET, "push": PUSH_SECRET}},
    )
    app = create_app(settings, lambda: connect(redis_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 443))
        async with httpx.AsyncClient(transport=transport, base_url="http://loa.test") as client:
            yield Hook(client, app, app.state.loa, settings, redis_client, tmp_path)


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["code"])


async def sent_campaign(hook: Hook, sim: HttpSimulator, people: int) -> tuple[str, set[str]]:
    """A Zalo campaign sent for real through the simulator: its id and ZNS's msg_ids."""
    n = next(_serial)
    plan, audience = hook.tmp / f"zika-{n}.plan.toml", hook.tmp / f"people-{n}.csv"
    plan.write_text(ZALO_PLAN, encoding="utf-8")
    # Zalo reaches people by phone; the zalo_id column says who has an account
    rows = "".join(f"+849120{n:02d}{i:03d},Người {i},79,z{i}\n" for i in range(people))
    audience.write_text("phone,name,region,zalo_id\n" + rows, encoding="utf-8")
    campaigns = hook.ctx.services.campaigns
    before = set(sim.stats["zalo"].accepted.values())
    campaign = await approved(campaigns, plan, audience)
    await campaigns.launch(campaign.id)

    async def done() -> bool:
        return (await campaigns.status(campaign.id))["state"] == "done"

    await until(done, 20, f"campaign {campaign.id} sent")
    return campaign.id, set(sim.stats["zalo"].accepted.values()) - before


# --- receipts ---------------------------------------------------------------------------------


async def test_a_signed_zalo_receipt_counts_delivered_for_its_campaign_once(hook, sim):
    async with running(hook.settings, hook.redis):
        first, first_ids = await sent_campaign(hook, sim, 3)
        other, other_ids = await sent_campaign(hook, sim, 2)
    assert len(first_ids) == 3 and len(other_ids) == 2, "ZNS answered each send with a msg_id"
    for msg_id in sorted(first_ids):
        response = await hook.zalo(received(msg_id))
        assert response.status_code == 200, response.text
        assert response.json() == {"receipts": 1, "inbound": 0, "duplicates": 0}
    status = await hook.ctx.services.campaigns.status(first)
    assert (status["sent"], status["delivered"]) == (3, 3)
    assert status["by_route"]["zalo-zns"]["delivered"] == 3
    assert (await hook.ctx.services.campaigns.status(other))["delivered"] == 0
    # Zalo retries callbacks it thinks were lost: a replay is taken, never counted again
    for msg_id in sorted(first_ids):
        replay = await hook.zalo(received(msg_id))
        assert (replay.status_code, replay.json()["duplicates"]) == (200, 1)
    assert await hook.delivered(first) == {"zalo-zns:delivered": 3}
    assert await hook.delivered(other) == {}


async def test_loa_receipt_batches_count_delivered_and_undelivered_once(hook):
    correlator = hook.ctx.events().correlator
    accepted = [
        (Message(f"m{i}", f"push-token-{i}"), (f"projects/p/messages/{i}",)) for i in range(3)
    ]
    await correlator.sent("push", "c-push", accepted)
    receipts = [
        {"id": "projects/p/messages/0", "delivered": True, "state": "DELIVERED"},
        {"id": "projects/p/messages/1", "delivered": False, "state": "EXPIRED", "error": "ttl"},
    ]
    first = await hook.push(receipts)
    assert (first.status_code, first.json()) == (
        200,
        {"receipts": 2, "inbound": 0, "duplicates": 0},
    )
    again = await hook.push(receipts)
    assert (again.status_code, again.json()["duplicates"]) == (200, 2)
    assert await hook.delivered("c-push") == {"push:delivered": 1, "push:undelivered": 1}


async def test_a_receipt_that_beats_its_message_counts_when_the_message_arrives(hook):
    response = await hook.push([{"id": "early-1", "delivered": True}])
    assert response.status_code == 200
    assert await hook.delivered("c-early") == {}
    correlator = hook.ctx.events().correlator
    early = await correlator.sent("push", "c-early", [(Message("m1", "t"), ("early-1",))])
    assert early == {"push:delivered": 1}


async def test_a_zalo_reply_goes_to_the_inbound_stream_and_other_events_are_ignored(hook):
    reply = received("r-1", event_name="user_send_text")
    reply["message"] = {"msg_id": "r-1", "text": "Cảm ơn Bộ Y tế"}
    reply["sender"] = {"id": "8413927584230111"}
    response = await hook.zalo(reply)
    assert (response.status_code, response.json()) == (
        200,
        {"receipts": 0, "inbound": 1, "duplicates": 0},
    )
    [row] = await read_inbound(hook.redis, hook.settings.namespace)
    assert (row["route"], row["channel"], row["sender"], row["text"]) == (
        "zalo-zns",
        "zalo",
        "8413927584230111",
        "Cảm ơn Bộ Y tế",
    )
    # events loa has no use for are answered 200, or Zalo retries them for hours
    seen = received("r-2", event_name="user_seen_message")
    seen["message"] = {"msg_ids": ["r-2"]}
    ignored = await hook.zalo(seen)
    assert (ignored.status_code, ignored.json()) == (
        200,
        {"receipts": 0, "inbound": 0, "duplicates": 0},
    )
    follow = {"app_id": APP_ID, "event_name": "follow", "timestamp": received("x")["timestamp"]}
    assert (await hook.zalo(follow)).status_code == 200
    assert await hook.redis.xlen(inbound_key(hook.settings.namespace)) == 1


# --- replays -----------------------------------------------------------------------------------


def zalo_reply(text: str, msg_id: str, sender: str = "8413927584230111", **extra: Any) -> Any:
    """Zalo's event for a person's text to the official account, stamped now."""
    event = received(msg_id, event_name="user_send_text", **extra)
    event["message"] = {"msg_id": msg_id, "text": text}
    event["sender"] = {"id": sender}
    return event


async def post_raw(hook: Hook, route: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await hook.client.post(f"/api/v1/webhooks/{route}", content=body, headers=headers)


async def test_a_replayed_signed_webhook_is_stored_once(hook):
    event = zalo_reply("Con tôi bị sốt sau khi tiêm", "reply-7")
    body = orjson.dumps(event)
    headers = {"X-ZEvent-Signature": zalo_signature(body, event, ZALO_SECRET)}
    answers = [await post_raw(hook, "zalo-zns", body, headers) for _ in range(3)]
    replays = [(a.status_code, a.json()["duplicates"]) for a in answers]
    assert replays == [(200, 0), (200, 1), (200, 1)]
    # the same message id, even in another (signed) callback, is the same reply
    again = zalo_reply("Con tôi bị sốt sau khi tiêm", "reply-7")
    assert (await hook.zalo(again)).json() == {"receipts": 0, "inbound": 1, "duplicates": 1}
    rows = await read_inbound(hook.redis, hook.settings.namespace)
    assert [(row["text"], row["provider_id"]) for row in rows] == [
        ("Con tôi bị sốt sau khi tiêm", "reply-7")
    ]
    # and loa's own form: a receipt batch replayed byte for byte counts once
    correlator = hook.ctx.events().correlator
    await correlator.sent("push", "c-replay", [(Message("m1", "token-1"), ("push-id-1",))])
    batch = orjson.dumps({"receipts": [{"id": "push-id-1", "delivered": True}]})
    signed_batch = signed(batch)
    for duplicates in (0, 1, 1):
        answer = await post_raw(hook, "push", batch, signed_batch)
        assert (answer.status_code, answer.json()["duplicates"]) == (200, duplicates)
    assert await hook.delivered("c-replay") == {"push:delivered": 1}


async def test_a_replayed_stop_does_not_opt_out_a_person_taken_off_the_list(hook):
    person = "zalo-user-4711"
    event = zalo_reply("STOP", "reply-stop-1", sender=person)
    body = orjson.dumps(event)
    headers = {"X-ZEvent-Signature": zalo_signature(body, event, ZALO_SECRET)}
    assert (await post_raw(hook, "zalo-zns", body, headers)).status_code == 200
    suppression = hook.ctx.services.suppression
    assert await suppression.check([person]) == [True]
    assert await suppression.remove([person]) == 1  # an operator puts the person back
    replay = await post_raw(hook, "zalo-zns", body, headers)
    assert (replay.status_code, replay.json()["duplicates"]) == (200, 1)
    assert await suppression.check([person]) == [False]
    assert len(await read_inbound(hook.redis, hook.settings.namespace)) == 1


@pytest.mark.parametrize(
    "signed_at",
    [1_000_000_000, int(time.time()) - 3600, int(time.time()) + 3600],
    ids=["2001", "an-hour-ago", "in-an-hour"],
)
async def test_a_timestamp_outside_the_window_is_refused(hook, signed_at):
    event = zalo_reply("STOP", f"old-{signed_at}")
    event["timestamp"] = str(signed_at * 1000)  # Zalo's are in milliseconds
    body = orjson.dumps(event)
    headers = {"X-ZEvent-Signature": zalo_signature(body, event, ZALO_SECRET)}
    zalo = await post_raw(hook, "zalo-zns", body, headers)
    batch = orjson.dumps({"receipts": [{"id": f"old-{signed_at}", "delivered": True}]})
    own = await post_raw(hook, "push", batch, signed(batch, stamp=signed_at))
    for response in (zalo, own):
        assert (response.status_code, error_of(response)) == (401, "stale_timestamp")
        message = response.json()["error"]["message"]
        assert time.strftime("%Y-%m-%dT%H", time.gmtime(signed_at)) in message
        assert "300 s either way" in message
    if signed_at == 1_000_000_000:
        assert "2001-09-09T01:46:40Z" in zalo.json()["error"]["message"]
    assert await read_inbound(hook.redis, hook.settings.namespace) == []
    # within the window (four minutes off) both are taken
    event["timestamp"] = str((int(time.time()) - 240) * 1000)
    body = orjson.dumps(event)
    headers = {"X-ZEvent-Signature": zalo_signature(body, event, ZALO_SECRET)}
    assert (await post_raw(hook, "zalo-zns", body, headers)).status_code == 200
    stamp = int(time.time()) + 240
    assert (await post_raw(hook, "push", batch, signed(batch, stamp=stamp))).status_code == 200


@pytest.mark.parametrize("route", ["zalo-zns", "push"])
async def test_the_signature_is_checked_before_the_body_is_read(hook, route):
    """A body that is not even JSON, badly signed, is refused as unsigned (401), not parsed."""
    stamp = str(int(time.time() * 1000))
    body = f'{{"app_id": "{APP_ID}", "timestamp": "{stamp}", "event_name": '.encode() + b"\xff["
    headers = {"X-ZEvent-Signature": "0" * 64} if route == "zalo-zns" else signed(body, "x" * 16)
    response = await post_raw(hook, route, body, headers)
    assert (response.status_code, error_of(response)) == (401, "bad_signature")


async def test_a_webhook_is_answered_503_when_its_events_cannot_be_written(hook, closed_port):
    settings = hook.settings
    app = create_app(settings, lambda: connect(f"redis://127.0.0.1:{closed_port}/0"))
    transport = httpx.ASGITransport(app=app)
    event = zalo_reply("STOP", "reply-lost-1")
    body = orjson.dumps(event)
    headers = {"X-ZEvent-Signature": zalo_signature(body, event, ZALO_SECRET)}
    async with httpx.AsyncClient(transport=transport, base_url="http://loa.test") as client:
        response = await client.post("/api/v1/webhooks/zalo-zns", content=body, headers=headers)
    assert (response.status_code, error_of(response)) == (503, "redis_unavailable")


# --- refusals ---------------------------------------------------------------------------------


async def test_unsigned_or_badly_signed_callbacks_are_401_and_count_nothing(hook):
    correlator = hook.ctx.events().correlator
    await correlator.sent("push", "c-bad", [(Message("m1", "t"), ("bad-1",))])
    await correlator.sent("zalo-zns", "c-bad", [(Message("m2", "+84912000001"), ("zbad-1",))])
    event = received("zbad-1")
    body = orjson.dumps(event)
    good = zalo_signature(body, event, ZALO_SECRET)
    tampered = orjson.dumps({**event, "message": {"msg_id": "zbad-1", "x": 1}})
    batch = orjson.dumps({"receipts": [{"id": "bad-1", "delivered": True}]})
    now = int(time.time())
    stamp = {"X-Loa-Timestamp": str(now)}
    attempts = [
        ("zalo-zns", body, {}),
        ("zalo-zns", body, {"X-ZEvent-Signature": ""}),
        ("zalo-zns", body, {"X-ZEvent-Signature": "0" * 64}),
        ("zalo-zns", body, {"X-ZEvent-Signature": zalo_signature(body, event, "another-secret")}),
        ("zalo-zns", tampered, {"X-ZEvent-Signature": good}),
        ("zalo-zns", body, signed(body, ZALO_SECRET)),  # the wrong scheme
        ("push", batch, {}),
        ("push", batch, stamp),
        ("push", batch, {"X-Loa-Signature": sign(batch, PUSH_SECRET, now)}),  # no time
        ("push", batch, signed(batch, "another-secret")),
        ("push", batch, {**stamp, "X-Loa-Signature": "sha256=" + "f" * 64}),
        ("push", batch, {**stamp, "X-ZEvent-Signature": sign(batch, PUSH_SECRET, now)}),
        ("push", batch + b" ", signed(batch, PUSH_SECRET, now)),
        # the signature of one time with another: the time is signed too
        ("push", batch, {**signed(batch, PUSH_SECRET, now), "X-Loa-Timestamp": str(now + 1)}),
        ("push", batch, {**stamp, "X-Loa-Signature": "sha256=" + sign(batch, PUSH_SECRET, now)}),
        ("push", batch, {"X-Loa-Timestamp": "soon", "X-Loa-Signature": sign(batch, "x", now)}),
        ("push", batch, {"Authorization": "Bearer loa_not-for-webhooks"}),
    ]
    for route, content, headers in attempts:
        response = await hook.client.post(
            f"/api/v1/webhooks/{route}", content=content, headers=headers
        )
        assert response.status_code == 401, (route, headers, response.text)
        assert error_of(response) == "bad_signature"
    assert await hook.delivered("c-bad") == {}
    # the same callbacks, signed right, do count
    assert (
        await hook.client.post(
            "/api/v1/webhooks/zalo-zns", content=body, headers={"X-ZEvent-Signature": good.upper()}
        )
    ).status_code == 200
    assert (await hook.push([{"id": "bad-1", "delivered": True}])).status_code == 200
    assert await hook.delivered("c-bad") == {"push:delivered": 1, "zalo-zns:delivered": 1}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b"{}",
        b'{"receipts": []}',
        b'{"receipts": [{"id": "x"}]}',
        b'{"receipts": [{"id": "", "delivered": true}]}',
        b'{"receipts": [{"id": "x", "delivered": "maybe"}]}',
        b'{"receipts": [{"id": "x", "delivered": true, "colour": "red"}]}',
        b'{"receipts": {"id": "x", "delivered": true}}',
    ],
)
async def test_malformed_loa_receipts_are_422(hook, body):
    response = await hook.client.post("/api/v1/webhooks/push", content=body, headers=signed(body))
    assert (response.status_code, error_of(response)) == (422, "invalid_request")


@pytest.mark.parametrize(
    "event",
    [
        {k: v for k, v in received("m").items() if k != "message"},
        {**received("m"), "message": {"delivery_time": "1"}},
        {**received("m"), "message": {"msg_id": ""}},
        {**received("m"), "message": "m"},
        {**received("m"), "event_name": "user_send_text"},  # a reply without its text
    ],
    ids=["no-message", "no-msg-id", "empty-msg-id", "message-not-object", "reply-without-text"],
)
async def test_malformed_zalo_events_are_422(hook, event):
    response = await hook.zalo(event)
    assert (response.status_code, error_of(response)) == (422, "invalid_request")


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"event_name": "follow"}', b'{"app_id": true, "timestamp": 1}']
)
async def test_zalo_bodies_that_cannot_be_verified_are_422(hook, body):
    headers = {"X-ZEvent-Signature": "0" * 64}
    response = await hook.client.post("/api/v1/webhooks/zalo-zns", content=body, headers=headers)
    assert (response.status_code, error_of(response)) == (422, "invalid_request")


@pytest.mark.parametrize("route", ["nowhere", "quiet"])
async def test_a_route_without_a_webhook_is_404(hook, route):
    body = b'{"receipts": [{"id": "x", "delivered": true}]}'
    response = await hook.client.post(
        f"/api/v1/webhooks/{route}", content=body, headers=signed(body, "x")
    )
    assert (response.status_code, error_of(response)) == (404, "route_not_found")


def test_a_secret_for_a_route_that_does_not_exist_is_refused(make_settings):
    settings = make_settings(
        routes={"push": {"adapter": "null"}},
        api={"webhook_secrets": {"psuh": PUSH_SECRET}},
    )
    with pytest.raises(ConfigError, match="psuh") as caught:
        create_app(settings, lambda: connect("redis://127.0.0.1:1/0"))
    assert PUSH_SECRET not in str(caught.value)


def test_short_secrets_are_refused_without_being_echoed(make_settings):
    with pytest.raises(ConfigError, match="push") as caught:
        make_settings(routes={"push": {"adapter": "null"}}, api={"webhook_secrets": {"push": "s3"}})
    assert "'s3'" not in str(caught.value)


# --- readiness: routes bound ------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    return free_port()  # nothing listens there: a connection is refused at once


async def ready(settings: Settings, redis_url: str, calls: int = 1) -> list[httpx.Response]:
    app = create_app(settings, lambda: connect(redis_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://loa.test") as client:
            return [await client.get("/readyz") for _ in range(calls)]


def smpp(port: int) -> dict[str, Any]:
    return {
        "adapter": "smpp",
        "options": {"host": "127.0.0.1", "port": port, "system_id": "loa", "bind_timeout": 1.0},
    }


async def test_readyz_is_503_naming_the_route_whose_smsc_is_down(
    make_settings, redis_url, closed_port
):
    settings = make_settings(routes={"sms-viettel": smpp(closed_port), "push": {"adapter": "null"}})
    [response] = await ready(settings, redis_url)
    assert (response.status_code, error_of(response)) == (503, "routes_down")
    message = response.json()["error"]["message"]
    assert "sms-viettel" in message and "push" not in message
    assert str(closed_port) not in message, "an unauthenticated probe learns no addresses"


async def test_readyz_is_200_when_every_route_is_up(make_settings, redis_url, tmp_path):
    settings = make_settings(
        routes={
            "push": {"adapter": "null"},
            "sms-file": {"adapter": "file", "options": {"path": str(tmp_path / "out.jsonl")}},
        }
    )
    [response] = await ready(settings, redis_url)
    assert (response.status_code, response.json()) == (200, {"status": "ready", "binds": {}})


async def test_readyz_names_a_route_whose_adapter_cannot_be_built(
    make_settings, redis_url, tmp_path
):
    missing = tmp_path / "no-such-token"
    options = {"base_url": "http://127.0.0.1:9", "access_token_file": str(missing)}
    settings = make_settings(routes={"zalo-zns": {"adapter": "zalo", "options": options}})
    [response] = await ready(settings, redis_url)
    assert (response.status_code, error_of(response)) == (503, "routes_down")
    assert "zalo-zns: its adapter cannot be built" in response.json()["error"]["message"]


async def test_readyz_pings_a_provider_once_for_many_probes(make_settings, redis_url):
    connections = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()  # an SMSC that hangs up on every bind

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = make_settings(routes={"sms": smpp(port)})
        responses = await ready(settings, redis_url, calls=5)
    finally:
        server.close()
        await server.wait_closed()
    assert [r.status_code for r in responses] == [503] * 5
    assert connections == 1, "probes within a few seconds share one ping"
