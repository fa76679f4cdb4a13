"""Erasure and retention on real Redis: a purged number leaves no trace, expired data goes."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from loa.campaigns.controls import Controls
from loa.campaigns.reached import ReachedByOthers, entry, read_entry
from loa.campaigns.suppression import Suppression
from loa.engine.connection import RedisClient, text
from loa.engine.envelope import Batch, unpack
from loa.engine.events import EventWriter
from loa.engine.keys import (
    ShardKeys,
    campaign_key,
    campaign_seen_numbers_key,
    inbound_key,
    legacy_frequency_key,
    reached_key,
    suppression_key,
)
from loa.engine.metrics import Metrics
from loa.engine.queue import Queues, dead_letter
from loa.inbox import Inbox
from loa.message import Inbound, Lane, Message
from loa.privacy.purge import Purge, rewrite_aof
from loa.settings import Settings

pytestmark = pytest.mark.anyio

ERASED = "+84987654321"
OTHER = "+84912345678"
# every form the erased number could be stored in, as bytes found anywhere in a value
FORMS = (b"84987654321", b"0987654321", b"987654321")


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


@pytest.fixture
def settings(make_settings: Any, tmp_path: Path) -> Settings:
    route = {"adapter": "null", "shards": 2}
    return make_settings(  # type: ignore[no-any-return]
        routes={"sms": route}, channels={"sms": {"default": "sms"}}
    )


async def everything(redis: RedisClient, namespace: str) -> list[bytes]:
    """Every key name, field, member, item and stream value of the namespace, msgpack opened."""
    found: list[bytes] = []
    for pattern in (f"{namespace}:*", f"{{{namespace}:*"):
        async for raw in redis.scan_iter(match=pattern, count=1000):
            key = text(raw)
            found.append(key.encode())
            kind = text(await redis.type(key))
            if kind == "string":
                found.append(await redis.get(key))
            elif kind == "hash":
                for field, value in (await redis.hgetall(key)).items():
                    found += [field, value]
            elif kind == "set":
                found += list(await redis.smembers(key))
            elif kind == "zset":
                found += list(await redis.zrange(key, 0, -1))
            elif kind == "list":
                found += list(await redis.lrange(key, 0, -1))
            elif kind == "stream":
                for _, fields in await redis.xrange(key):
                    for field, value in fields.items():
                        found += [field, value]
    opened = []
    for value in found:
        with contextlib.suppress(ValueError, TypeError, UnicodeDecodeError):
            opened.append(repr(msgpack.unpackb(value, raw=False, strict_map_key=False)).encode())
    return found + opened


def traces(values: list[bytes]) -> int:
    return sum(1 for value in values for form in FORMS if form in value)


async def seed(settings: Settings, redis: RedisClient) -> ShardKeys:
    """The erased number and another person everywhere loa keeps numbers."""
    ns = settings.namespace
    await Suppression(redis, ns).add([ERASED, "+84900000001"])
    keys = ShardKeys(ns, "sms", 0)
    queues = Queues(redis, ns)
    await queues.prepare([keys])
    both = [Message(id="1", to=ERASED, body="hi"), Message(id="2", to=OTHER, body="hi")]
    await queues.put(keys, Batch(route="sms", lane=Lane.NORMAL, messages=both, campaign="c1"))
    alone = Batch(route="sms", lane=Lane.BULK, messages=both[:1], campaign="c1")
    later = Batch(route="sms", lane=Lane.HIGH, messages=list(both), campaign="c1", attempt=1)
    await queues.put_once([(keys, alone, 0), (keys, later, int(time.time() * 1000) + 3_600_000)])
    batch = Batch(route="sms", lane=Lane.NORMAL, messages=both, campaign="c1")
    for person in (ERASED, OTHER):
        letter = dead_letter("sms", Lane.NORMAL, batch, ["1", person, "hi", 1, None], "failed")
        await redis.xadd(keys.dead, {"m": letter})
    await redis.hset(f"{ns}:{{camp:c1}}:seen", mapping={ERASED: "1", OTHER: "2"})
    await redis.rpush(reached_key(ns, time.time()), entry("c1", 1, [ERASED, OTHER]))
    writer = EventWriter(redis, ns, settings.events, Metrics())
    for sender, said in (("84987654321", "I have a fever"), ("0987654321", "help"),
                         ("84912345678", "thanks")):  # fmt: skip
        writer.inbound(Inbound(route="sms", sender=sender, text=said, channel="sms"))
    await writer.drained()
    await Inbox(settings, redis).sync()
    drive = f"{ns}:{{appt:d1}}"
    await redis.sadd(f"{ns}:appointments", "d1")
    for phone in (ERASED, OTHER):
        await redis.hset(f"{drive}:people", phone, "waiting:no_session\t\t1\t001x\tp\t79")
        await redis.hset(f"{drive}:fields", phone, '{"name": "An"}')
        await redis.zadd(f"{drive}:waiting", {f"001x|{phone}": 0})
        await redis.xadd(f"{drive}:history", {"e": "waiting", "p": phone, "s": "", "f": ""})
    return keys


async def test_purge_by_number_leaves_no_trace_and_keeps_the_opt_out(settings, redis_client):
    keys = await seed(settings, redis_client)
    before = await everything(redis_client, settings.namespace)
    assert traces(before) > 10  # the seed put it everywhere
    other_before = sum(1 for v in before if b"84912345678" in v)

    done = await Purge(settings, redis_client).number("0987 654 321")

    after = await everything(redis_client, settings.namespace)
    assert traces(after) == 0
    # the other person is untouched, everywhere
    assert sum(1 for v in after if b"84912345678" in v) == other_before
    assert done.queued == 3 and done.in_flight == 0
    assert done.cases == 1 and done.appointments == 1
    assert done.inbound == 2 and done.dead_letters == 1
    # still opted out, through a digest: the engine's and the planner's checks see it
    assert done.opted_out
    assert not await redis_client.sismember(suppression_key(settings.namespace), ERASED)
    assert await Suppression(redis_client, settings.namespace).check([ERASED, OTHER]) == [
        True,
        False,
    ]
    controls = Controls(redis_client, settings.namespace)
    assert await controls.suppressed([ERASED, "+84900000001", OTHER]) == [True, True, False]
    # the batches that named both still carry the other person; the lone one is gone
    queued = [unpack(f[b"b"]) for lane in Lane for _, f in await redis_client.xrange(
        keys.stream(lane))]  # fmt: skip
    assert [[m.to for m in b.messages] for b in queued] == [[OTHER]]
    later = [unpack(m) for m in await redis_client.zrange(keys.delayed(Lane.HIGH), 0, -1)]
    assert [[m.to for m in b.messages] for b in later] == [[OTHER]]
    stats = await redis_client.hgetall(keys.campaign_stats)
    assert int(stats[b"c1:suppressed"]) == 3
    # opting back in works on the digest too
    assert await Suppression(redis_client, settings.namespace).remove([ERASED]) == 1
    assert await controls.suppressed([ERASED]) == [False]


async def test_purge_takes_the_number_out_of_the_columnar_planners_seen_deltas(
    settings, redis_client
):
    import numpy as np

    from loa.campaigns.packing import unpack
    from loa.campaigns.seen import SeenNumbers

    memory = SeenNumbers()
    key = campaign_seen_numbers_key(settings.namespace, "c1")
    people = [int(ERASED[1:]), int(OTHER[1:]), 84_900_000_001, 1_202_555_0123]
    for number, field in enumerate(["0/1:0", "0/1:1", "1/2:0"]):
        memory.claim(np.array(people[number:number + 2], np.int64))  # fmt: skip
        await redis_client.hset(key, field, memory.delta())
    blobs = await redis_client.hgetall(key)
    held = {int(n) for blob in blobs.values() for n in unpack(blob)}
    assert held == set(people), "the deltas hold every number exactly: an erasure opens them"
    assert traces(list(blobs.values())) == 0, "compressed: no byte search could find it"

    done = await Purge(settings, redis_client).number("0987 654 321")

    blobs = await redis_client.hgetall(key)
    held = {int(n) for blob in blobs.values() for n in unpack(blob)}
    assert held == set(people) - {int(ERASED[1:])}
    assert done.entries == 1, "one delta held it"
    again = SeenNumbers()  # a planner started again reloads the deltas: the erased is unknown
    for field in ("0/1:0", "0/1:1"):
        again.load(blobs[field.encode()])
    claimed = again.claim(np.array(people[:3], np.int64))
    assert claimed.tolist() == [True, False, False]


async def test_purge_takes_the_number_out_of_whom_campaigns_reached(settings, redis_client):
    import numpy as np

    from loa.campaigns.packing import unpack as unpacked

    ns = settings.namespace
    now = time.time()
    key = reached_key(ns, now)
    controls = Controls(redis_client, ns, memory=86_400)
    for campaign, people in (("c1", [ERASED, OTHER]), ("c2", [ERASED]), ("c3", [OTHER])):
        await redis_client.hset(campaign_key(ns, campaign), "state", "running")
        messages = [Message(id=str(i), to=p, body="hi") for i, p in enumerate(people)]
        await controls.reached(campaign, messages, range(len(messages)))
    entries = await redis_client.lrange(key, 0, -1)
    assert traces(entries) == 0, "packed: no byte search could find it"

    done = await Purge(settings, redis_client).number("0987 654 321")

    entries = await redis_client.lrange(key, 0, -1)
    assert len(entries) == 3, "each entry stays in its place"
    held = [set(unpacked(read_entry(raw)[2]).tolist()) for raw in entries]  # type: ignore[index]
    assert held == [{int(OTHER[1:])}, set(), {int(OTHER[1:])}]
    assert done.entries == 2, "two entries named it"
    planner = ReachedByOthers(redis_client, ns, "c9", 3_600)
    values = np.array([int(ERASED[1:]), int(OTHER[1:])], np.int64)
    assert (await planner.blocked(values)).tolist() == [False, True]


async def test_an_erasure_that_read_before_another_wrote_keeps_both(settings, redis_client):
    """Two people erased at the same moment, from the same entry: the second write, made from
    what it read before the first, must not bring back the number the first took out."""
    from loa.campaigns.packing import unpack as unpacked
    from loa.campaigns.reached import entry_without

    key = reached_key(settings.namespace, time.time())
    await redis_client.rpush(key, entry("c1", int(time.time()), [ERASED, OTHER, "+84900000001"]))
    read_before = (await redis_client.lrange(key, 0, 0))[0]

    await Purge(settings, redis_client).number(ERASED)  # the first erasure writes
    wrote = await Purge(settings, redis_client)._rewrite(
        key, "list", 0, read_before, lambda raw: entry_without(raw, int(OTHER[1:]))
    )  # the second, from its older read

    assert wrote
    held = unpacked(read_entry((await redis_client.lrange(key, 0, 0))[0])[2])  # type: ignore[index]
    assert held.tolist() == [84_900_000_001]


async def test_purge_of_a_campaign_empties_its_entries_and_planners_keep_their_place(
    settings, redis_client
):
    import numpy as np

    ns = settings.namespace
    key = reached_key(ns, time.time())
    first, second, third = (int(f"8490000000{n}") for n in range(3))
    await redis_client.rpush(key, entry("c1", int(time.time()), [f"+{first}"]))
    await redis_client.rpush(key, entry("c2", int(time.time()), [f"+{second}"]))
    planner = ReachedByOthers(redis_client, ns, "c9", 3_600)
    values = np.array([first, second, third], np.int64)
    assert (await planner.blocked(values)).tolist() == [True, True, False]
    await redis_client.hset(campaign_key(ns, "c1"), "state", "done")

    legacy = legacy_frequency_key(ns, time.time())  # as kept before the packed lists
    await redis_client.hset(legacy, mapping={"+84911111111": "c1@1", "+84922222222": "c2@1"})

    done = await Purge(settings, redis_client).campaign("c1")

    assert done.frequency == 2
    assert await redis_client.hkeys(legacy) == [b"+84922222222"]
    assert [read_entry(raw) is None for raw in await redis_client.lrange(key, 0, -1)] == [
        True,
        False,
    ]
    await redis_client.rpush(key, entry("c3", int(time.time()), [f"+{third}"]))
    assert (await planner.blocked(values)).tolist() == [True, True, True], "read from its place"
    fresh = ReachedByOthers(redis_client, ns, "c9", 3_600)
    assert (await fresh.blocked(values)).tolist() == [False, True, True], "c1 is forgotten"


async def test_purge_of_a_number_never_opted_out_does_not_opt_it_out(settings, redis_client):
    await seed(settings, redis_client)
    await Suppression(redis_client, settings.namespace).remove([ERASED])
    done = await Purge(settings, redis_client).number(ERASED)
    assert not done.opted_out
    assert traces(await everything(redis_client, settings.namespace)) == 0


async def test_purge_leaves_a_batch_held_by_a_worker_to_it(settings, redis_client):
    keys = ShardKeys(settings.namespace, "sms", 0)
    queues = Queues(redis_client, settings.namespace)
    await queues.prepare([keys])
    batch = Batch(route="sms", lane=Lane.NORMAL, messages=[Message(id="1", to=ERASED)])
    await queues.put(keys, batch)
    taken = await queues.take(keys, "w1")
    assert taken is not None
    done = await Purge(settings, redis_client).number(ERASED)
    assert done.in_flight == 1 and done.queued == 0


async def test_rewrite_aof_after_a_purge(embedded_url):
    from loa.engine.connection import connect

    client = connect(embedded_url)
    try:
        assert await rewrite_aof(client) in ("started", "busy")
    finally:
        await client.aclose()


def test_inbound_key_is_in_the_namespace(settings):
    assert inbound_key(settings.namespace).startswith(settings.namespace + ":")


async def test_retention_sweep_removes_expired_data_and_keeps_fresh(settings, redis_client):
    from loa.privacy.retention import DAY_MS, sweep

    ns = settings.namespace
    now = int(time.time() * 1000)
    old, fresh = now - 200 * DAY_MS, now - 10 * DAY_MS
    for at in (old, fresh):
        await redis_client.xadd(inbound_key(ns), {"sender": OTHER, "text": "x"}, id=f"{at}-0")
    keys = ShardKeys(ns, "sms", 0)
    for at in (now - 40 * DAY_MS, fresh):
        await redis_client.xadd(keys.dead, {"m": b"x"}, id=f"{at}-0")
    inbox = Inbox(settings, redis_client)
    old_case = await inbox.raise_case(ERASED, "old")
    fresh_case = await inbox.raise_case(OTHER, "new")
    prefix = f"{ns}:{{inbox}}"
    await redis_client.zadd(f"{prefix}:cases", {old_case: old})
    for drive, day in (("gone", "2025-01-10"), ("kept", time.strftime("%Y-%m-%d"))):
        await redis_client.sadd(f"{ns}:appointments", drive)
        await redis_client.hset(f"{ns}:{{appt:{drive}}}:session", f"s1|{day}|08:00", "1\t79\t09:00")
        await redis_client.hset(f"{ns}:{{appt:{drive}}}:people", OTHER, "placed")
    uploads = settings.data_dir / "uploads"
    uploads.mkdir(parents=True)
    (uploads / "old.csv").write_text("phone\n")
    (uploads / "new.csv").write_text("phone\n")
    import os

    os.utime(uploads / "old.csv", (old / 1000, old / 1000))

    swept = await sweep(settings, redis_client, now_ms=now)
    again = await sweep(settings, redis_client, now_ms=now)  # a second clock: nothing more

    assert (swept.inbound, swept.dead_letters, swept.cases, swept.drives, swept.uploads) == (
        1, 1, 1, 1, 1)  # fmt: skip
    assert again.total() == 0
    assert [text(i) for i, _ in await redis_client.xrange(inbound_key(ns))] == [f"{fresh}-0"]
    assert await redis_client.xlen(keys.dead) == 1
    assert not await redis_client.exists(f"{prefix}:case:{old_case}", f"{prefix}:log:{old_case}")
    assert await redis_client.hget(f"{prefix}:open", ERASED) is None
    assert await redis_client.exists(f"{prefix}:case:{fresh_case}")
    assert await redis_client.smembers(f"{ns}:appointments") == {b"kept"}
    assert not await redis_client.exists(f"{ns}:{{appt:gone}}:people")
    assert await redis_client.exists(f"{ns}:{{appt:kept}}:people")
    assert sorted(p.name for p in uploads.iterdir()) == ["new.csv"]


def test_loa_purge_number_is_audited_without_the_number(settings, monkeypatch, redis_url):
    import redis as sync_redis
    from typer.testing import CliRunner

    from loa.cli import app

    monkeypatch.setenv("LOA_NAMESPACE", settings.namespace)
    monkeypatch.setenv("LOA_DATA_DIR", str(settings.data_dir))
    client = sync_redis.Redis.from_url(redis_url)
    client.xadd(inbound_key(settings.namespace), {"sender": "84987654321", "text": "hi"})
    result = CliRunner().invoke(app, ["purge", "--number", ERASED, "--redis", redis_url, "--json"])
    assert result.exit_code == 0, result.output
    assert '"inbound": 1' in result.output
    audit = client.xrange(f"{settings.namespace}:audit")
    assert [e[b"action"] for _, e in audit] == [b"privacy.purge_number"]
    assert not any(form in repr(audit).encode() for form in FORMS)
    client.close()
