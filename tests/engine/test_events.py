"""Receipts met with their messages, replies with opt-outs, and channel fallback, on real Redis."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers import enqueue_async, read_sink, running, status_async, until
from loa.adapters import registry
from loa.adapters.base import EventSink
from loa.cli.campaign import inbound_app
from loa.engine.connection import RedisClient, connect
from loa.engine.control import campaign_key, suppression_key
from loa.engine.embedded import free_port
from loa.engine.envelope import Batch
from loa.engine.events import (
    EventsNotWritten,
    EventWriter,
    inbound_key,
    is_optout,
    read_inbound,
    receipt_key,
    receipts_key,
    regions_key,
    sent_of,
)
from loa.engine.keys import region_field, shard_keys
from loa.engine.metrics import Metrics
from loa.engine.queue import Queues
from loa.message import Accepted, Failed, Inbound, Lane, Message, Receipt, SendResult
from loa.settings import EventSettings, Settings

pytestmark = pytest.mark.anyio


def writer(client: RedisClient, namespace: str, **options: Any) -> EventWriter:
    return EventWriter(client, namespace, EventSettings(**options), Metrics())


def counts(raw: Mapping[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in raw.items()}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("STOP", True),
        (" stop ", True),
        ("Stop.", True),
        ("Từ chối", True),
        ("TU  CHOI", True),
        ("hủy", True),
        ("HUY!", True),
        ("huyết áp cao", False),  # "blood pressure high": not an opt-out
        ("Toi khong muon dung", False),
        ("STOP nhan tin", False),  # only the keyword itself opts out, never a sentence
        ("", False),
    ],
)
def test_optout_keywords(reply: str, expected: bool) -> None:
    assert is_optout(reply, ["STOP", "TU CHOI", "HUY"]) is expected


async def test_receipt_after_the_message_counts_once(
    redis_client: RedisClient, namespace: str
) -> None:
    events = writer(redis_client, namespace)
    message = Message("7", "+84912345678", "hi")
    early = await events.correlator.sent("sms-a", "c1", [(message, "abc")])
    assert not early
    events.receipt(Receipt("sms-a", "abc", True, "DELIVRD"))
    events.receipt(Receipt("sms-a", "abc", True, "DELIVRD"))  # the SMSC sent it twice
    events.receipt(Receipt("sms-a", "nobody-sent-this", False, "UNDELIV"))
    await events.drained()
    assert counts(await redis_client.hgetall(receipts_key(namespace, "c1"))) == {
        "sms-a:delivered": 1
    }
    # the duplicate and the stranger wait for a message that never comes, then expire
    ttl = await redis_client.ttl(receipt_key(namespace, "sms-a", "nobody-sent-this"))
    assert 0 < ttl <= 72 * 3600


async def test_receipt_before_the_submit_response_is_kept_and_met(
    redis_client: RedisClient, namespace: str
) -> None:
    events = writer(redis_client, namespace)
    events.receipt(Receipt("sms-a", "9f", False, "UNDELIV", "001"))
    await events.drained()
    assert await redis_client.hgetall(receipts_key(namespace, "c2")) == {}
    early = await events.correlator.sent("sms-a", "c2", [(Message("1", "+84912345678"), "9f")])
    await events.correlator.count("c2", early)
    assert counts(await redis_client.hgetall(receipts_key(namespace, "c2"))) == {
        "sms-a:undelivered": 1
    }
    # remembered as counted, so that a repeat of the receipt counts nothing
    assert await redis_client.get(receipt_key(namespace, "sms-a", "9f")) == b"d"


async def test_a_long_message_counts_once_by_its_first_part(
    redis_client: RedisClient, namespace: str
) -> None:
    events = writer(redis_client, namespace)
    await events.correlator.sent("sms-a", "c3", [(Message("1", "+84912345678"), "p1,p2,p3")])
    for part in ("p1", "p2", "p3"):
        events.receipt(Receipt("sms-a", part, True, "DELIVRD"))
    await events.drained()
    assert counts(await redis_client.hgetall(receipts_key(namespace, "c3"))) == {
        "sms-a:delivered": 1
    }


async def test_receipts_count_per_region_of_their_messages_batch(
    redis_client: RedisClient, namespace: str
) -> None:
    events = writer(redis_client, namespace)
    hcmc = Message("1", "+84912345678", "hi")
    hanoi = Message("2", "+84912345679", "hi")
    nowhere = Message("3", "+84912345670", "hi")
    # one receipt before its message (met when the message is recorded), the others after
    events.receipt(Receipt("sms-a", "r2", False, "UNDELIV"))
    await events.drained()
    await events.correlator.sent("sms-a", "c9", [(hcmc, "r1a,r1b")], "79")
    early = await events.correlator.sent("sms-a", "c9", [(hanoi, "r2")], "01")
    await events.correlator.count("c9", early)
    await events.correlator.sent("sms-a", "c9", [(nowhere, "r3")])  # a batch of no region
    for provider_id in ("r1a", "r1b", "r3"):  # a long message counts by its first part
        events.receipt(Receipt("sms-a", provider_id, True, "DELIVRD"))
    await events.drained()
    assert counts(await redis_client.hgetall(receipts_key(namespace, "c9"))) == {
        "sms-a:delivered": 2,
        "sms-a:undelivered": 1,
    }
    assert counts(await redis_client.hgetall(regions_key(namespace, "c9"))) == {
        "79:delivered": 1,
        "01:undelivered": 1,
    }


def test_a_sent_value_is_read_with_or_without_its_region() -> None:
    assert sent_of("c1|7|0") == ("c1", True, "")  # as written before regions travelled
    assert sent_of("c1|7|1") == ("c1", False, "")
    assert sent_of("c1|7|0|@79") == ("c1", True, "79")
    assert sent_of("c1|7|2|@HÀ NỘI") == ("c1", False, "HÀ NỘI")


async def test_same_id_on_two_routes_does_not_meet(
    redis_client: RedisClient, namespace: str
) -> None:
    events = writer(redis_client, namespace)
    await events.correlator.sent("sms-a", "c4", [(Message("1", "+84912345678"), "1")])
    events.receipt(Receipt("sms-b", "1", True, "DELIVRD"))  # another SMSC's id 1
    await events.drained()
    assert await redis_client.hgetall(receipts_key(namespace, "c4")) == {}


async def test_replies_go_to_the_stream_and_stop_opts_out(
    redis_client: RedisClient, namespace: str, tmp_path: Path
) -> None:
    events = writer(redis_client, namespace)
    events.inbound(Inbound("sms-a", "+84912345678", "Tôi khỏe, cảm ơn", recipient="8088"))
    events.inbound(Inbound("sms-a", "+84987654321", "Từ chối", recipient="8088"))
    events.inbound(Inbound("zalo", "zalo-user-1", '=HYPERLINK("x")', channel="zalo"))
    events.inbound(Inbound("zalo", "4368012345678901", "stop", channel="zalo"))  # digits only
    events.inbound(Inbound("sms-a", "0000", "STOP"))  # digits, yet no number
    await events.drained()
    assert await redis_client.smembers(suppression_key(namespace)) == {
        b"+84987654321",
        b"4368012345678901",
    }
    rows = await read_inbound(redis_client, namespace)
    assert [(r["sender"], r["optout"]) for r in rows] == [
        ("+84912345678", "0"),
        ("+84987654321", "1"),
        ("zalo-user-1", "0"),
        ("4368012345678901", "1"),
        ("0000", "1"),
    ]
    assert rows[0]["text"] == "Tôi khỏe, cảm ơn"
    later = await read_inbound(redis_client, namespace, after=rows[0]["id"])
    assert [r["sender"] for r in later][:2] == ["+84987654321", "zalo-user-1"]


async def test_a_reply_is_stored_once_by_its_provider_id_and_opts_out_once(
    redis_client: RedisClient, namespace: str
) -> None:
    events = writer(redis_client, namespace)
    stop = Inbound("zalo", "zalo-user-9", "STOP", channel="zalo", provider_id="z-1")
    other = Inbound("zalo", "zalo-user-9", "STOP", channel="zalo", provider_id="z-2")
    written = await events.store([], [stop, stop, other])  # a repeat within one write, too
    assert (written.replies, written.duplicates) == (2, 1)
    assert await redis_client.smembers(suppression_key(namespace)) == {b"zalo-user-9"}
    await redis_client.srem(suppression_key(namespace), "zalo-user-9")  # an operator's undo
    again = await events.store([], [stop])
    assert (again.replies, again.duplicates) == (0, 1)
    assert await redis_client.smembers(suppression_key(namespace)) == set()
    rows = await read_inbound(redis_client, namespace)
    assert [row["provider_id"] for row in rows] == ["z-1", "z-2"]
    # a reply without an id (an SMS) is stored each time it comes
    sms = Inbound("sms-a", "+84912345678", "Cam on")
    assert (await events.store([], [sms, sms])).replies == 2


async def test_a_receipt_repeated_after_it_was_counted_counts_nothing(
    redis_client: RedisClient, namespace: str
) -> None:
    events = writer(redis_client, namespace)
    await events.correlator.sent("sms-a", "c5", [(Message("1", "+84912345678"), "r-1")])
    receipt = Receipt("sms-a", "r-1", True, "DELIVRD")
    assert (await events.store([receipt], [])).duplicates == 0
    # the SMSC did not hear our answer and sends it again, later
    assert (await events.store([receipt, receipt], [])).duplicates == 2
    assert counts(await redis_client.hgetall(receipts_key(namespace, "c5"))) == {
        "sms-a:delivered": 1
    }


async def test_events_are_refused_not_dropped_while_redis_is_away(namespace: str) -> None:
    away = connect(f"redis://127.0.0.1:{free_port()}/0")
    try:
        events = writer(away, namespace)
        futures = [
            events.receipt(Receipt("sms-a", "r-2", True, "DELIVRD")),
            events.inbound(Inbound("sms-a", "+84912345678", "STOP")),
        ]
        for future in futures:
            with pytest.raises(EventsNotWritten, match="ConnectionError"):
                await future
        assert events.waiting == 0, "refused, so the provider sends them again; none held"
    finally:
        await away.aclose()


def test_inbound_export_writes_csv_without_formulas(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    try:
        client.xadd(
            inbound_key(namespace),
            {
                "at": 0,
                "route": "sms-a",
                "channel": "sms",
                "sender": "+84912345678",
                "recipient": "8088",
                "text": "=1+1",
                "optout": 0,
            },
        )
    finally:
        client.close()
    config = tmp_path / "loa.toml"
    config.write_text(f'namespace = "{namespace}"\n')
    out = tmp_path / "inbound.csv"
    result = CliRunner().invoke(
        inbound_app, ["export", str(out), "--config", str(config), "--redis", redis_url]
    )
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1
    assert rows[0]["sender"] == "'+84912345678"  # as the failed-recipients report writes it
    assert rows[0]["text"] == "'=1+1"  # a spreadsheet shows it, never runs it


class ReceiptingAdapter:
    """Accepts every message with an id and reports it delivered, sometimes before answering."""

    def __init__(self, route: str) -> None:
        self.route = route
        self.sink: EventSink | None = None
        self.count = 0

    def attach(self, sink: EventSink) -> None:
        self.sink = sink

    async def send(self, messages: Sequence[Message]) -> Sequence[SendResult]:
        assert self.sink is not None, "the worker must attach its sink before sending"
        results: list[SendResult] = []
        for message in messages:
            self.count += 1
            provider_id = f"{self.route}-{message.id}"
            if self.count % 2:  # half the receipts beat the response, as carriers' do
                self.sink.receipt(Receipt(self.route, provider_id, True, "DELIVRD"))
            results.append(Accepted(provider_id))
        await asyncio.sleep(0.01)
        for message in messages[1::2]:
            self.sink.receipt(Receipt(self.route, f"{self.route}-{message.id}", False, "UNDELIV"))
        return results

    async def aclose(self) -> None:
        pass


class NoAccountAdapter:
    """Zalo-like: every other person has no account there; the rest are accepted."""

    def __init__(self, route: str) -> None:
        self.route = route

    async def send(self, messages: Sequence[Message]) -> Sequence[SendResult]:
        return [
            Failed("Zalo account not existed", fallback=True) if int(m.id) % 2 else Accepted()
            for m in messages
        ]

    async def aclose(self) -> None:
        pass


@pytest.fixture
def test_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    builtins = registry._builtins()

    def patched() -> dict[str, Any]:
        return {
            **builtins,
            "receipting": lambda route, options: ReceiptingAdapter(route),
            "no-account": lambda route, options: NoAccountAdapter(route),
        }

    monkeypatch.setattr(registry, "_builtins", patched)


async def start_campaign(client: RedisClient, settings: Settings, campaign: str) -> None:
    await client.hset(campaign_key(settings.namespace, campaign), mapping={"state": "running"})


@pytest.mark.usefixtures("test_adapters")
async def test_worker_counts_every_receipt_for_its_campaign(
    make_settings: Any, redis_client: RedisClient
) -> None:
    settings = make_settings(routes={"sms-r": {"adapter": "receipting", "shards": 2, "chunk": 20}})
    await start_campaign(redis_client, settings, "camp-r")
    total = 300
    messages = [Message(str(n), f"+8491{n:07d}", "advice") for n in range(total)]
    await enqueue_async(settings, "sms-r", messages, campaign="camp-r")
    key = receipts_key(settings.namespace, "camp-r")

    async def all_counted() -> bool:
        return sum(counts(await redis_client.hgetall(key)).values()) >= total

    async with running(settings, redis_client):
        await until(all_counted, 30, "a receipt counted for every message")
    # each chunk: every other message reported undelivered after its delivered receipt was
    # taken; only the first receipt of an id counts, so the early (odd) ones say delivered
    found = counts(await redis_client.hgetall(key))
    assert sum(found.values()) == total
    assert set(found) <= {"sms-r:delivered", "sms-r:undelivered"}
    assert found["sms-r:delivered"] >= total // 2


@pytest.mark.usefixtures("test_adapters")
async def test_a_worker_counts_a_batch_of_one_region_under_it(
    make_settings: Any, redis_client: RedisClient
) -> None:
    settings = make_settings(routes={"sms-r": {"adapter": "receipting", "shards": 2, "chunk": 20}})
    await start_campaign(redis_client, settings, "camp-g")
    shards = shard_keys(settings.namespace, "sms-r", 2)
    queues = Queues(redis_client, settings.namespace)
    await queues.prepare(shards)
    sizes = {"79": 30, "01": 20, "": 10}  # "": a batch of several regions, or none
    for n, (region, size) in enumerate(sizes.items()):
        # ids unique over the batches: the adapter's provider ids are made from them
        messages = [Message(f"{n}{i:03d}", f"+849{n}{i:07d}", "advice") for i in range(size)]
        batch = Batch("sms-r", Lane.NORMAL, messages, campaign="camp-g", region=region)
        await queues.put(shards[n % 2], batch)

    async def all_counted() -> bool:
        found = counts(await redis_client.hgetall(receipts_key(settings.namespace, "camp-g")))
        return sum(found.values()) >= sum(sizes.values())

    async with running(settings, redis_client):
        await until(all_counted, 30, "a receipt counted for every message")
    sent = {region: 0 for region in ("79", "01")}
    for keys in shards:
        for region in sent:
            value = await redis_client.hget(
                keys.campaign_stats, region_field("camp-g", region, "accepted")
            )
            sent[region] += int(value or 0)
    assert sent == {"79": 30, "01": 20}
    by_region = counts(await redis_client.hgetall(regions_key(settings.namespace, "camp-g")))
    assert by_region["79:delivered"] + by_region.get("79:undelivered", 0) == 30
    assert by_region["01:delivered"] + by_region.get("01:undelivered", 0) == 20
    assert not [field for field in by_region if not field.startswith(("79:", "01:"))]


@pytest.mark.usefixtures("test_adapters")
async def test_fallback_moves_people_without_an_account_to_the_next_channel(
    make_settings: Any, redis_client: RedisClient, tmp_path: Path
) -> None:
    sink = tmp_path / "sms"
    settings = make_settings(
        routes={
            "zalo-x": {"adapter": "no-account", "shards": 2, "chunk": 10},
            "sms-x": {
                "adapter": "file",
                "shards": 3,
                "options": {"path": str(sink / "{route}-{pid}.jsonl")},
            },
        }
    )
    await start_campaign(redis_client, settings, "camp-f")
    total = 101
    messages = [
        Message(
            str(n),
            f"+8491{n:07d}",
            "",
            extra={
                "channel": "zalo",
                "template_id": "t1",
                "data": {"n": n},
                "next": [["sms", "sms-x", f"+8491{n:07d}", f"SMS {n}", 1, None]],
            },
        )
        for n in range(total)
    ]
    await enqueue_async(settings, "zalo-x", messages, campaign="camp-f")

    async def sms_done() -> bool:
        return (await status_async(settings, "sms-x")).accepted >= total // 2

    async with running(settings, redis_client):
        await until(sms_done, 30, "the fallback messages sent by SMS")
    zalo = await status_async(settings, "zalo-x")
    sms = await status_async(settings, "sms-x")
    assert (zalo.accepted, zalo.fallback, zalo.failed) == (51, 50, 0)
    assert sms.accepted == 50
    lines = read_sink(sink)
    assert sorted(int(line["id"]) for line in lines) == list(range(1, total, 2))
    assert {line["body"] for line in lines} == {f"SMS {n}" for n in range(1, total, 2)}


@pytest.mark.usefixtures("test_adapters")
async def test_a_fallback_without_a_next_channel_fails(
    make_settings: Any, redis_client: RedisClient
) -> None:
    settings = make_settings(routes={"zalo-y": {"adapter": "no-account", "chunk": 10}})
    await start_campaign(redis_client, settings, "camp-g")
    messages = [Message(str(n), f"+8491{n:07d}", "x") for n in range(10)]
    await enqueue_async(settings, "zalo-y", messages, campaign="camp-g")

    async def settled() -> bool:
        return (await status_async(settings, "zalo-y")).finished >= 10

    async with running(settings, redis_client):
        await until(settled, 30, "every message settled")
    zalo = await status_async(settings, "zalo-y")
    assert (zalo.accepted, zalo.failed, zalo.fallback) == (5, 5, 0)
