"""A long SMS is the unit of success: parts the SMSC took are never sent again, the rest
go out with the same reference, and a resend that cannot be avoided is counted."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from helpers import enqueue_async, messages, running, status_async, until
from loa.adapters.smpp.adapter import SmppAdapter, SmppOptions
from loa.engine.connection import RedisClient
from loa.engine.progress import Progress
from loa.message import RESUME, Accepted, Message, Throttled
from loa.settings import Settings
from loa.sim.smsc import SmscOptions, SmscSimulator

pytestmark = pytest.mark.anyio

# GSM 03.38, three parts of 153 characters at most
LONG_TEXT = (
    "Bo Y te: lich tiem vac xin soi - rubella cho tre tu 1 den 5 tuoi tai tram y te phuong "
    "vao thu Bay va Chu nhat, tu 7:30 den 11:00. Mang theo so tiem chung va the bao hiem y te. "
    "Tre dang sot hoac mac benh cap tinh se duoc hen lai. Sau khi tiem, o lai 30 phut de theo "
    "doi. Goi 1900 9095 neu can ho tro. Phu huynh vui long den dung gio de tranh dong nguoi "
    "va deo khau trang khi den tram."
)


def long_message(name: str = "long-1", extra: dict[str, Any] | None = None) -> Message:
    return Message(name, "+84912345678", LONG_TEXT, parts=3, extra=extra)


def sar_or_udh(method: str) -> dict[str, Any]:
    return {"system_id": "loa", "long_messages": method, "enquire_link": 0}


@pytest.mark.parametrize("method", ["udh", "sar"])
async def test_only_the_refused_part_goes_again_with_the_same_reference(method: str) -> None:
    # every second submit is refused: part 2 of the first send, then that part once more
    async with SmscSimulator(SmscOptions(throttle_every=2)) as smsc:
        options = SmppOptions(port=smsc.port, **sar_or_udh(method))
        adapter = SmppAdapter("carrier", options)
        try:
            message = long_message()
            sends = 0
            while True:
                sends += 1
                (result,) = await adapter.send([message])
                if not isinstance(result, Throttled):
                    break
                assert result.resume is not None, "the parts taken are remembered"
                assert sends < 5, "the message never finished"
                message = Message(message.id, message.to, message.body, 3, {RESUME: result.resume})
        finally:
            await adapter.aclose()
        stats = smsc.stats()
        whole = smsc.messages
    assert isinstance(result, Accepted) and not result.resent
    assert sends == 3  # part 2 refused twice (submits 2 and 4), then taken (submit 5)
    assert len(result.provider_ids) == 3, "one id per part, in order"
    assert [m.text for m in whole] == [LONG_TEXT], "the phone gets one whole message"
    assert (stats["accepted"], stats["throttled"], stats["duplicate_parts"]) == (3, 2, 0)
    assert stats["abandoned_messages"] == 0


async def test_a_resend_that_cannot_continue_is_counted() -> None:
    async with SmscSimulator(SmscOptions()) as smsc:
        adapter = SmppAdapter("carrier", SmppOptions(port=smsc.port, **sar_or_udh("udh")))
        try:
            # parts taken by an earlier send, remembered for a text of another length
            stale = {RESUME: {"ref": 7, "ids": ["a1", ""], "bind": 0}}
            (result,) = await adapter.send([long_message(extra=stale)])
        finally:
            await adapter.aclose()
    assert isinstance(result, Accepted) and result.resent
    assert [m.text for m in smsc.messages] == [LONG_TEXT]


async def test_a_long_message_with_a_throttled_middle_part_is_delivered_whole_once(
    make_settings, redis_client: RedisClient
) -> None:
    async with SmscSimulator(SmscOptions(throttle_every=2)) as smsc:
        settings: Settings = make_settings(
            routes={
                "carrier": {
                    "adapter": "smpp",
                    "rate": 200,
                    "concurrency": 1,
                    "shards": 1,
                    "options": sar_or_udh("udh") | {"port": smsc.port},
                }
            }
        )
        await enqueue_async(settings, "carrier", [long_message()])

        async def accepted() -> bool:
            return (await status_async(settings, "carrier")).accepted >= 1

        async with running(settings, redis_client):
            await until(accepted, 30, "the long message")
        stats = smsc.stats()
        whole = smsc.messages
    final = await status_async(settings, "carrier")
    assert [m.text for m in whole] == [LONG_TEXT]
    assert stats["duplicate_parts"] == 0 and stats["duplicate_messages"] == 0
    assert stats["accepted"] == 3, "three parts taken, none of them twice"
    assert final.accepted == 1 and final.throttled >= 1 and final.redelivered == 0


async def test_a_resend_the_adapter_could_not_avoid_is_counted_redelivered(
    make_settings, redis_client: RedisClient
) -> None:
    async with SmscSimulator(SmscOptions()) as smsc:
        settings: Settings = make_settings(
            routes={
                "carrier": {
                    "adapter": "smpp",
                    "shards": 1,
                    "options": sar_or_udh("udh") | {"port": smsc.port},
                }
            }
        )
        stale = {RESUME: {"ref": 7, "ids": ["a1", ""], "bind": 0}}
        await enqueue_async(settings, "carrier", [long_message(extra=stale), *messages(4)])

        async def accepted() -> bool:
            return (await status_async(settings, "carrier")).accepted >= 5

        async with running(settings, redis_client):
            await until(accepted, 30, "five messages")
    final = await status_async(settings, "carrier")
    assert (final.accepted, final.redelivered) == (5, 1)


def test_a_checkpoint_keeps_the_parts_taken_and_reads_older_ones() -> None:
    carry = {2: {RESUME: {"ref": 9, "ids": ["a", "", "c"], "bind": 1}}}
    progress = Progress(done=3, carry=carry)
    progress.throttled.append(2)
    again = Progress.unpack(progress.pack())
    assert again.carry == carry and again.throttled == [2]
    # a checkpoint from before the parts were kept (eight fields) still reads
    older = msgpack.packb([3, {"accepted": 2}, [], [2], [], [], 0.0, 0])
    assert Progress.unpack(older).carry == {}
