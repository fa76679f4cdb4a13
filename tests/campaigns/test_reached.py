"""The frequency memory on real Redis: whom workers recorded reaching, as planners see it."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from loa.campaigns.controls import Controls
from loa.campaigns.packing import pack, unpack
from loa.campaigns.reached import ReachedByOthers, days, entry, person_number, read_entry
from loa.campaigns.seen import SeenNumbers
from loa.engine.keys import campaign_key, legacy_frequency_key, reached_key
from loa.message import Message

pytestmark = pytest.mark.anyio

DAY = 86_400


def test_people_are_remembered_by_their_number_and_other_addresses_by_a_digest() -> None:
    assert person_number("+84912345678") == 84_912_345_678
    mail = person_number("an@example.vn")
    assert mail > 10**15 and mail == person_number("an@example.vn")
    assert mail != person_number("binh@example.vn")
    assert person_number("84912345678") > 10**15, "not E.164: a digest, never a number"


def test_the_days_of_a_window_reach_back_to_the_day_it_starts() -> None:
    noon = 20_000 * DAY + DAY // 2
    assert days(noon - 2 * DAY, noon) == [float((20_000 + k) * DAY) for k in (-2, -1, 0)]
    assert days(noon - 60, noon) == [float(20_000 * DAY)]


def test_a_bitmap_answers_without_marking() -> None:
    seen = SeenNumbers(deltas=False)
    values = np.array([84_912_345_678, 84_320_000_001, 1_202_555_0123, 84_960_000_000], np.int64)
    seen.claim(values[:3])
    assert seen.has(values).tolist() == [True, True, True, False]
    assert seen.has(values[3:]).tolist() == [False], "asking marked nothing"


async def _running(redis_client, ns: str, *campaigns: str) -> None:
    for campaign in campaigns:
        await redis_client.hset(campaign_key(ns, campaign), "state", "running")


async def test_a_planner_skips_whom_other_campaigns_reached_and_sees_new_entries(
    redis_client, namespace
):
    await _running(redis_client, namespace, "a", "b", "self")
    controls = Controls(redis_client, namespace, memory=7 * DAY)
    people = [f"+8491{n:07d}" for n in range(10)] + ["an@example.vn"]
    messages = [Message(id=str(i), to=p, body="hi") for i, p in enumerate(people)]
    await controls.reached("a", messages, [0, 1, 10])
    await controls.reached("self", messages, [2, 3])
    await controls.reached("b", messages, [4, 5, 6], sent_at=time.time())
    mine = ReachedByOthers(redis_client, namespace, "self", 3_600)
    assert await mine.blocked_people(people) == [
        *[True, True, False, False, True, True, True], *[False] * 3, True
    ], "reached by a and b; its own sends block nobody"
    await controls.reached("b", messages, [2, 9])
    blocked = await mine.blocked_people(people)
    assert blocked[2] and blocked[9], "an entry appended since the last look counts"
    plain = [Message(id="x", to="+84987654321", body="hi")]
    await controls.reached("not-a-campaign", plain, [0])  # plain engine traffic: not recorded
    assert await mine.blocked_people(["+84987654321"]) == [False]


async def test_entries_older_than_the_window_block_nobody(redis_client, namespace):
    now = time.time()
    yesterday = reached_key(namespace, now - DAY)
    await redis_client.rpush(yesterday, entry("a", int(now - DAY), ["+84911111111"]))
    await redis_client.rpush(yesterday, entry("a", int(now - DAY + 7_200), ["+84922222222"]))
    window = DAY - 3_600  # reaches back into yesterday, past the first entry only
    mine = ReachedByOthers(redis_client, namespace, "self", window, clock=lambda: now)
    assert await mine.blocked_people(["+84911111111", "+84922222222"]) == [False, True]


async def test_the_memory_costs_a_few_bytes_a_person(redis_client, namespace):
    """Workers record a chunk of 50 at a time (route.chunk's default): measured, not assumed."""
    await _running(redis_client, namespace, "national-advice")
    controls = Controls(redis_client, namespace, memory=7 * DAY)
    rng = random.Random(7)
    numbers = rng.sample(range(10**9), 50_000)
    for first in range(0, len(numbers), 50):
        part = numbers[first : first + 50]
        chunk = [Message(id=str(n), to=f"+84{n:09d}", body="") for n in part]
        await controls.reached("national-advice", chunk, range(len(chunk)))
    key = reached_key(namespace, time.time())
    used = int(await redis_client.memory_usage(key, samples=0))
    per_person = used / len(numbers)
    print(f"frequency memory: {per_person:.2f} bytes a person")
    assert per_person <= 8, f"{per_person:.1f} bytes a person"  # a hash field a person took ~80
    entries = await redis_client.lrange(key, 0, -1)
    assert sum(len(np.unique(_numbers(raw))) for raw in entries) == len(numbers)
    assert await redis_client.ttl(key) > 7 * DAY


def _numbers(raw: bytes) -> np.ndarray:
    found = read_entry(raw)
    assert found is not None
    return unpack(found[2])  # type: ignore[no-any-return]


def test_a_number_with_a_leading_zero_is_not_taken_for_another() -> None:
    assert person_number("+0912345678") != person_number("+912345678") == 912_345_678


async def test_a_long_day_is_read_a_page_at_a_time(redis_client, namespace, monkeypatch):
    from loa.campaigns import reached

    monkeypatch.setattr(reached, "PAGE", 3)
    key = reached_key(namespace, time.time())
    people = [f"+849100000{n:02d}" for n in range(10)]
    for person in people:
        await redis_client.rpush(key, entry("a", int(time.time()), [person]))
    mine = ReachedByOthers(redis_client, namespace, "self", 3_600)
    assert await mine.blocked_people(people) == [True] * 10
    for person in ["+84920000000", "+84920000001"]:
        await redis_client.rpush(key, entry("a", int(time.time()), [person]))
    assert await mine.blocked_people(["+84920000001"]) == [True]
    assert mine.read[key] == 12


@given(st.lists(st.integers(0, 2**62), max_size=300, unique=True))
@hsettings(max_examples=200, deadline=None)
def test_workers_and_planners_pack_numbers_alike(values: list[int]) -> None:
    """Workers pack a list without numpy, planners a numpy array: one format, byte for byte."""
    numbers = sorted(values)
    packed = pack(numbers)
    assert packed == pack(np.array(numbers, np.int64))
    assert unpack(packed).tolist() == numbers


def test_a_worker_loads_neither_numpy_nor_pyarrow() -> None:
    """What a worker imports to remember whom it reached stays small: it runs in every worker
    process (the planner and erasures load numpy when they read)."""
    code = (
        "import sys, loa.engine.worker, loa.campaigns.controls, loa.campaigns.reached\n"
        "print(sorted(m for m in ('numpy', 'pyarrow') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


async def test_a_cap_holds_across_an_upgrade_from_the_hash_kept_before(redis_client, namespace):
    """The memory loa kept before the packed lists (a hash a day, person -> campaign@epoch) is
    read for the window after an upgrade: whom another campaign reached stays skipped."""
    now = time.time()
    await redis_client.hset(
        legacy_frequency_key(namespace, now),
        mapping={
            "+84911111111": f"other@{int(now - 60)}",
            "+84922222222": f"self@{int(now - 60)}",  # its own send blocks nobody
            "+84933333333": f"other@{int(now - 7_200)}",  # before the window
        },
    )
    mine = ReachedByOthers(redis_client, namespace, "self", 3_600, clock=lambda: now)
    people = ["+84911111111", "+84922222222", "+84933333333"]
    assert await mine.blocked_people(people) == [True, False, False]
