"""The batch envelope: version 2 stores a shared body once; version 1 entries are still read."""

from __future__ import annotations

import msgpack
import pytest

from loa.engine.envelope import VERSION, Batch, pack, unpack
from loa.engine.keys import shard_keys
from loa.engine.queue import FIELD, Queues
from loa.errors import EnvelopeError
from loa.message import Lane, Message

BODY = "Bo Y te: hay deo khau trang noi dong nguoi, rua tay thuong xuyen. Chi tiet: moh.gov.vn"


def batch(messages: list[Message]) -> Batch:
    return Batch(
        route="sms-a",
        lane=Lane.BULK,
        messages=messages,
        campaign="c1",
        id="c1.sms-a.7",
        attempt=2,
        created_ms=1_700_000_000_000,
        expires_ms=1_700_000_600_000,
    )


def same_text(count: int) -> list[Message]:
    return [Message(str(n + 2), f"+8491{n:07d}", BODY, 1) for n in range(count)]


def test_a_shared_body_is_stored_once_and_comes_back_in_every_message() -> None:
    messages = same_text(200)
    messages[5].extra = {"next": [["sms", "sms-b", "+84910000005", BODY, 1, None]]}
    data = pack(batch(messages))
    fields = msgpack.unpackb(data)
    assert fields[0] == VERSION == 2
    assert fields[8] == [BODY, 1]
    assert fields[-1][0] == ["2", "+84910000000"], "rows last, id first: [id, to]"
    assert fields[-1][5][2] == messages[5].extra
    assert data.count(BODY.encode()) == 2  # the shared body, and the one inside `next`
    assert len(data) < 200 * 30
    assert unpack(data) == batch(messages)


@pytest.mark.parametrize(
    "messages",
    [
        [Message("1", "+84911", "a"), Message("2", "+84912", "b")],  # bodies differ
        [Message("1", "+84911", BODY, 1), Message("2", "+84912", BODY, 2)],  # parts differ
        [Message("1", "+84911", BODY, 1, {"channel": "zalo"})],  # one message
        [],
    ],
    ids=["bodies", "parts", "one", "none"],
)
def test_batches_without_a_shared_body_keep_whole_rows(messages: list[Message]) -> None:
    data = pack(batch(messages))
    fields = msgpack.unpackb(data)
    assert fields[8] is None
    assert fields[-1] == [[m.id, m.to, m.body, m.parts, m.extra] for m in messages]
    assert unpack(data) == batch(messages)


def test_version_1_entries_are_still_read() -> None:
    rows = [["2", "+84911", BODY, 1, None], ["3", "+84912", "other", 2, {"k": "v"}]]
    data = msgpack.packb(
        [1, "c1.sms-a.7", "c1", int(Lane.BULK), "sms-a", 2, 1_700_000_000_000, 0, rows],
        use_bin_type=True,
    )
    got = unpack(data)
    assert got.messages == [Message(*row) for row in rows]
    assert (got.id, got.campaign, got.lane, got.route, got.attempt) == (
        "c1.sms-a.7",
        "c1",
        Lane.BULK,
        "sms-a",
        2,
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([4, "id", "c", 3, "r", 0, 0, 0, None, []], "unsupported envelope version 4"),
        ([3, "id", "c", 3, "r", 0, 0, 0, None, []], "has 10 fields, expected 11"),
        ([3, "id", "c", 3, "r", 0, 0, 0, 79, None, []], "the region must be text"),
        ([2, "id", "c", 3, "r", 0, 0, 0, []], "has 9 fields, expected 10"),
        ([1, "id", "c", 3, "r", 0, 0, 0, None, []], "has 10 fields, expected 9"),
        ([2, "id", "c", 3, "r", 0, 0, 0, ["b", 1], [["1"]]], "a row of 1 fields"),
        ([2, "id", "c", 3, "r", 0, 0, 0, [b"b", 1], [["1", "+84"]]], "shared body"),
        ([True, "id", "c", 3, "r", 0, 0, 0, None, []], "unsupported envelope version True"),
    ],
)
def test_malformed_envelopes_are_refused(fields: list[object], reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        unpack(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.anyio
async def test_a_worker_takes_both_versions_from_a_real_queue(redis_client, namespace) -> None:
    queues = Queues(redis_client, namespace)
    keys = shard_keys(namespace, "sms-a", 1)[0]
    await queues.prepare([keys])
    old = msgpack.packb(
        [1, "old", "c1", int(Lane.BULK), "sms-a", 0, 1, 0, [["9", "+84911", BODY, 1, None]]],
        use_bin_type=True,
    )
    await redis_client.xadd(keys.stream(Lane.BULK), {FIELD: old})
    await queues.put(keys, batch(same_text(3)))
    first = await queues.take(keys, "w1")
    second = await queues.take(keys, "w1")
    assert first is not None and second is not None
    assert first.batch.messages == [Message("9", "+84911", BODY, 1)]
    assert second.batch.messages == same_text(3)


def test_a_batch_of_one_region_keeps_it_and_one_without_is_written_as_version_2() -> None:
    messages = [Message("1", "+84912345678", "hi"), Message("2", "+84912345679", "hi")]
    regional = Batch(route="r", lane=Lane.NORMAL, messages=messages, campaign="c", region="79")
    fields = msgpack.unpackb(pack(regional))
    assert (fields[0], fields[8], fields[9]) == (3, "79", ["hi", 1])
    again = unpack(pack(regional))
    assert (again.region, again.messages) == ("79", messages)
    assert again.derive(messages[:1], 1).region == "79"  # a retry is of the same region
    plain = Batch(route="r", lane=Lane.NORMAL, messages=messages, campaign="c")
    assert msgpack.unpackb(pack(plain))[0] == VERSION == 2
    assert unpack(pack(plain)).region == ""
