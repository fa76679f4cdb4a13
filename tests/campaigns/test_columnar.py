"""The columnar planner against the row planner: the same counts, reasons and queued messages."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from loa.campaigns import columns as columns_module
from loa.campaigns import planner as planner_module
from loa.campaigns.columnar import eligible
from loa.campaigns.columnar_run import plan_columns
from loa.campaigns.numbers import read_numbers
from loa.campaigns.plan import load_plan
from loa.campaigns.planner import Planner, Report, plan_audience
from loa.campaigns.reached import entry
from loa.campaigns.seen import SeenNumbers
from loa.engine.connection import RedisClient, connect
from loa.engine.envelope import unpack
from loa.engine.keys import reached_key, shard_keys
from loa.errors import InvalidPhone
from loa.phone import normalize
from loa.settings import Settings

STATIC = "Bộ Y tế: hãy đeo khẩu trang nơi đông người. Chi tiết: moh.gov.vn"
NAMED = "Bộ Y tế: {{ name }} ơi, hãy đeo khẩu trang. Chi tiết: moh.gov.vn"
LONG = "Bộ Y tế: {{ name }} " + "ơi, " * 200  # too many parts for some names

WIDE = "".join(chr(0xFF10 + int(d)) for d in "0961234567")  # full-width digits
# phone cells of every kind: the common spellings, odd ones, foreign numbers, junk
PHONES = [
    "0961234567", "84912345678", "+84 901 234 567", "(+84) 912.345.678", "0084912345678",
    "01651234567", "912345678", "0921234567", "+12025550123", "12345", "0241234567",
    "", "09123abc78", "+84 96 123 4567", "0961-234-567", " 0961234567 ", WIDE,
    "0971234567", "0971234568", "+84971234567", "8" * 70, "+", "0961234567\t",
]  # fmt: skip
NAMES = ["Nguyễn Thị Hoa", "Lê An", "  ", "", 'Trần "Đức"', "a,b", "x\ny", "Hồ;Vy"]
REGIONS = ["79", " 01 ", "", "hn", "99"]


def _quote(cell: str) -> str:
    if any(c in cell for c in ',"\n\r'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


@st.composite
def hostile_lines(draw: Any) -> bytes:
    """A CSV line: a good row of random cells, or one of the ways rows go wrong."""
    kind = draw(st.integers(0, 11))
    phone = draw(st.sampled_from(PHONES))
    if kind == 8:
        phone = draw(st.from_regex(r"\+?[0-9 .()-]{0,14}", fullmatch=True))
    name, region = draw(st.sampled_from(NAMES)), draw(st.sampled_from(REGIONS))
    line = ",".join(_quote(c) for c in (phone, name, region))
    if kind == 9:
        return draw(st.sampled_from([b"", b"0961234567,a", b"1,2,3,4", b"\x00,a,b", b"\xff,a,b"]))
    if kind == 10:
        return draw(st.sampled_from([b'"unclosed,a,b', b"x" * 70_000 + b",a,b", b"a,b,c\r"]))
    return line.encode()


def write(path: Path, lines: list[bytes], crlf: bool) -> Path:
    end = b"\r\n" if crlf else b"\n"
    path.write_bytes(b"phone,name,region" + end + end.join(lines) + end)
    return path


def plan_file(path: Path, template: str, extra: str = "") -> Path:
    path.write_text(
        f'name = "columns"\nlane = "normal"\nchannels = ["sms"]\nsms_ascii = {extra or "false"}\n'
        f"[templates]\nsms = {template!r}\n",
        encoding="utf-8",
    )
    return path


async def queued(client: RedisClient, settings: Settings, campaign: str) -> list[tuple[Any, ...]]:
    """Every queued message of `campaign` with its batch number: sorted."""
    found = []
    for route, limits in settings.routes.items():
        for keys in shard_keys(settings.namespace, route, limits.shards):
            for stream in keys.streams():
                for _, fields in await client.xrange(stream):
                    batch = unpack(fields[b"b"])
                    if batch.campaign == campaign:
                        number = batch.id.rsplit(".", 1)[1]
                        found += [
                            (route, number, m.id, m.to, m.body, m.parts, m.extra)
                            for m in batch.messages
                        ]
    return sorted(found)


async def both(
    settings: Settings, url: str, plan: Path, people: Path, queue: bool = True
) -> tuple[Report, Report, list[Any], list[Any]]:
    client = connect(url)
    try:
        found = []
        for columnar in (False, True):
            campaign = uuid.uuid4().hex[:8]
            planner = Planner(settings, load_plan(plan), campaign, people, datetime.now(UTC))
            run = plan_columns if columnar else plan_audience
            found.append(await run(planner, client, queue=queue))
            found.append(await queued(client, settings, campaign))
        return found[0], found[2], found[1], found[3]
    finally:
        await client.aclose()


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    route = {"adapter": "null", "shards": 2}
    return make_settings(
        routes={"sms-a": route, "sms-b": {**route, "shards": 3}},
        channels={"sms": {"default": "sms-b", "carriers": {"viettel": "sms-a"}}},
        queue={"batch_size": 4},
    )


@pytest.mark.parametrize(
    ("template", "ascii"),
    [
        (STATIC, "false"),
        (NAMED, "false"),
        (NAMED, "true"),  # folded to ASCII: each name folded once
        (LONG, "false"),  # ends in a space: rendered row by row
        (LONG + "het.", "true"),  # too many parts for some names, filled a column at a time
        ("{{ name }} oi, tiem vac-xin", "false"),  # starts with a name: row by row
    ],
    ids=["static", "named", "named-ascii", "long", "long-filled", "name-first"],
)
def test_columns_and_rows_plan_the_same_hostile_files(
    settings, redis_url, tmp_path, monkeypatch, template, ascii
):
    monkeypatch.setattr(planner_module, "GROUP_ROWS", 7)
    monkeypatch.setattr(columns_module, "CHUNK_BYTES", 97)  # chunks end everywhere
    plan = plan_file(tmp_path / "p.toml", template, ascii)
    assert eligible(Planner(settings, load_plan(plan), "x", tmp_path, datetime.now(UTC)))

    @hsettings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(hostile_lines(), min_size=1, max_size=40), st.booleans())
    def check(lines: list[bytes], crlf: bool) -> None:
        people = write(tmp_path / "a.csv", lines, crlf)
        rows, cols, by_rows, by_cols = asyncio.run(both(settings, redis_url, plan, people))
        assert cols.to_json() == rows.to_json()
        assert by_cols == by_rows

    check()


def test_carriers_that_share_a_route_share_its_batches_in_line_order(
    settings, redis_url, tmp_path, monkeypatch
):
    """Vietnamobile, MobiFone and Vinaphone all go to sms-b: their rows are one group per
    region there, in line order, and the batches are numbered as the row planner numbers them."""
    monkeypatch.setattr(columns_module, "CHUNK_BYTES", 97)
    lines = ["0921234567,Hoa,", "+84 901 234 567,An,79", "84912345678,Hoa,"]
    people = write(tmp_path / "a.csv", [line.encode() for line in lines], crlf=False)
    plan = plan_file(tmp_path / "p.toml", STATIC)
    rows, cols, by_rows, by_cols = asyncio.run(both(settings, redis_url, plan, people))
    assert cols.to_json() == rows.to_json()
    assert by_cols == by_rows
    assert [(m[1], m[2]) for m in by_cols] == [("0", "2"), ("0", "4"), ("1", "3")]


async def by_partitions(
    settings: Settings, url: str, plan: Path, people: Path, count: int
) -> tuple[Report, list[Any], Report, list[Any], list[int]]:
    """The whole audience planned once, and in `count` partitions: reports and messages."""
    from loa.campaigns.partitions import Partition

    client = connect(url)
    try:
        found: list[Any] = []
        for part in [Partition(), *(Partition(k, count) for k in range(count))]:
            campaign = uuid.uuid4().hex[:8]
            planner = Planner(settings, load_plan(plan), campaign, people, datetime.now(UTC))
            report = await plan_columns(planner, client, queue=True, partition=part)
            messages = [m[2:] for m in await queued(client, settings, campaign)]  # no batch
            found.append((report, messages))
        whole, parts = found[0], found[1:]
        summed = Report()
        for report, _ in parts:
            summed.add(report)
        lines = sorted(line for report, _ in parts for line, _ in report.errors)
        by_parts = sorted(m for _, ms in parts for m in ms)
        return whole[0], sorted(whole[1]), summed, by_parts, lines
    finally:
        await client.aclose()


def test_partitions_of_hostile_files_plan_what_the_whole_plans(
    settings, redis_url, tmp_path, monkeypatch
):
    monkeypatch.setattr(columns_module, "CHUNK_BYTES", 97)  # chunks end everywhere
    plan = plan_file(tmp_path / "p.toml", NAMED)

    @hsettings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(hostile_lines(), min_size=1, max_size=40), st.booleans(), st.integers(2, 3))
    def check(lines: list[bytes], crlf: bool, count: int) -> None:
        people = write(tmp_path / "a.csv", lines, crlf)
        whole, messages, summed, by_parts, error_lines = asyncio.run(
            by_partitions(settings, redis_url, plan, people, count)
        )
        every = {"errors", "samples"}
        assert {k: v for k, v in summed.to_json().items() if k not in every} == {
            k: v for k, v in whole.to_json().items() if k not in every
        }
        assert by_parts == messages, "each number queued once, by exactly one partition"
        assert error_lines == sorted(line for line, _ in whole.errors), "each invalid row once"

    check()


def test_a_big_plain_file_goes_the_vectorised_way_and_agrees(make_settings, redis_url, tmp_path):
    route = {"adapter": "null", "shards": 2}
    settings = make_settings(
        routes={"sms-a": route, "sms-b": route},
        channels={"sms": {"default": "sms-b", "carriers": {"viettel": "sms-a"}}},
        queue={"batch_size": 100},
    )
    lines = []
    for n in range(3000):
        cell = ["0{}", "84{}", "+84 {}"][n % 3].format(f"96{n % 2000:07d}")
        lines.append(f"{cell},Lê An {n},{['79', '01'][n % 2]}".encode())
        if n % 500 == 7:
            lines.append(b"0961,too,many,fields")
    people = write(tmp_path / "a.csv", lines, crlf=False)
    plan = plan_file(tmp_path / "p.toml", NAMED, "true")
    rows, cols, by_rows, by_cols = asyncio.run(both(settings, redis_url, plan, people))
    assert cols.to_json() == rows.to_json()
    assert by_cols == by_rows
    assert (cols.total, cols.invalid, cols.duplicate, cols.queued) == (3006, 6, 1000, 2000)


def test_both_paths_skip_whom_other_campaigns_reached_within_the_cap(settings, redis_url, tmp_path):
    lines = [f"0{['96', '91', '32'][n % 3]}{n:07d},An,79".encode() for n in range(600)]
    people = write(tmp_path / "a.csv", lines, crlf=False)
    plan = plan_file(tmp_path / "p.toml", STATIC)
    plan.write_text(plan.read_text() + '[limits]\nfrequency_cap = "2d"\n', encoding="utf-8")
    reached = [f"+84{['96', '91', '32'][n % 3]}{n:07d}" for n in range(0, 600, 7)]
    now = int(time.time())
    key = reached_key(settings.namespace, now)

    async def remember() -> None:
        client = connect(redis_url)
        try:  # another campaign reached every 7th within the cap; one long before it
            await client.rpush(key, entry("other", now - 60, reached[:40]))
            await client.rpush(key, entry("other", now - 3 * 86_400, reached[40:]))
        finally:
            await client.aclose()

    asyncio.run(remember())
    rows, cols, by_rows, by_cols = asyncio.run(both(settings, redis_url, plan, people))
    assert cols.to_json() == rows.to_json()
    assert by_cols == by_rows
    assert (cols.capped, cols.queued) == (40, 560)
    assert not {m[3] for m in by_cols} & set(reached[:40])


def test_the_dry_run_counts_what_the_launch_queues(settings, redis_url, tmp_path):
    lines = [f"09{n % 7}1234567,a,79".encode() for n in range(50)]
    people = write(tmp_path / "a.csv", lines, crlf=False)
    plan = plan_file(tmp_path / "p.toml", STATIC)
    rows, cols, _, nothing = asyncio.run(both(settings, redis_url, plan, people, queue=False))
    assert cols.to_json() == rows.to_json() and nothing == []


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(PHONES), st.text(max_size=20)), max_size=30))
def test_numbers_are_what_normalize_says(cells: list[str]) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]

    numbers = read_numbers(pa.array(cells, pa.string()))
    for index, cell in enumerate(cells):
        try:
            want: int | str = int(normalize(cell)[1:])
        except InvalidPhone as exc:
            want = f"phone: {exc}"
        got = int(numbers.values[index]) if numbers.valid[index] else numbers.reasons[index]
        assert got == want, cell


def test_seen_numbers_survive_their_deltas() -> None:
    import numpy as np

    seen = SeenNumbers()
    first = np.array([84961234567, 84961234567, 12025550123, 84912345678], np.int64)
    assert seen.claim(first).tolist() == [True, False, True, True]
    blob = seen.delta()
    assert seen.claim(np.array([84912345678, 84971234567], np.int64)).tolist() == [False, True]
    again = SeenNumbers()
    again.load(blob)
    assert again.claim(np.array([84961234567, 84971234567, 12025550123])).tolist() == [
        False,
        True,
        False,
    ]


def _formats(tmp_path: Path) -> list[Path]:
    """The same people in every format and spelling the row reader knows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    phones = ["0961234567", "+84 912 345 678", "0961234567", "12345", "", "84971234567"]
    names = ["An", "Bình", "Chi", "Dũng", "Hà", "  "]
    out = []
    for name, delimiter, bom in (
        ("semi.csv", ";", b""),
        ("tab.csv", "\t", b""),
        ("bom.csv", ",", b"\xef\xbb\xbf"),
    ):
        rows = [delimiter.join(["Phone", "NAME", "region"])]
        rows += [delimiter.join([p, n, "79"]) for p, n in zip(phones, names, strict=True)]
        rows.append(delimiter.join(["0981234567", "Lan"]))  # a field short
        path = tmp_path / name
        path.write_bytes(bom + ("\n".join(rows) + "\n").encode())
        out.append(path)
    jsonl = tmp_path / "people.jsonl"
    lines = [
        f'{{"phone": "{p}", "name": "{n}", "region": "79"}}'
        for p, n in zip(phones, names, strict=True)
    ]
    lines += ['{"phone": 84981234567, "name": "Lan", "region": 79}', "[1, 2]", "not json", ""]
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.append(jsonl)
    parquet = tmp_path / "people.parquet"
    table = pa.table(
        {
            "phone": pa.array([84961234567.0, None, 84912345678.0, 12345.0], pa.float64()),
            "name": pa.array(["An", "Bình", None, "Dũng"]),
            "region": pa.array([[1], [2], [3], [4]]),  # lists: every row is a bad row
        }
    )
    pq.write_table(table, parquet)
    good = tmp_path / "good.parquet"
    pq.write_table(table.drop(["region"]), good)
    return [*out, parquet, good]


def test_every_format_plans_the_same_both_ways(settings, redis_url, tmp_path):
    plan = plan_file(tmp_path / "p.toml", NAMED, "true")
    for people in _formats(tmp_path):
        rows, cols, by_rows, by_cols = asyncio.run(both(settings, redis_url, plan, people))
        assert cols.to_json() == rows.to_json(), people.name
        assert by_cols == by_rows, people.name
        assert rows.total > 0, people.name


@pytest.mark.parametrize("text", ["4/4", "x", "0/0", "1/300", "-1/2", "1/"])
def test_a_partition_is_k_of_p(text: str) -> None:
    from loa.campaigns.partitions import Partition
    from loa.errors import PlanError

    assert Partition.parse("3/4") == Partition(3, 4)
    with pytest.raises(PlanError, match="partition"):
        Partition.parse(text)


def test_a_number_always_falls_in_the_same_partition_and_they_share_the_numbers() -> None:
    import numpy as np

    from loa.campaigns.partitions import Partition, partition_of

    numbers = np.arange(84_900_000_000, 84_900_040_000, dtype=np.int64)
    first, again = partition_of(numbers, 4), partition_of(numbers[::-1], 4)[::-1]
    assert (first == again).all()
    counts = np.bincount(first, minlength=4)
    assert counts.min() > 9000, "neighbouring numbers spread over every partition"
    masks = [Partition(k, 4).mine(numbers) for k in range(4)]
    assert (sum(mask.astype(int) for mask in masks) == 1).all(), "each in exactly one"


@hsettings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["+1", "+44", "+33", "+61", "+86", "+65", "+54 9", "+52 1", "+39 0", "+84"]),
    st.from_regex(r"[0-9]{6,12}", fullmatch=True),
    st.sampled_from(["", " ", "-", "."]),
)
def test_a_number_ends_with_the_digits_its_spelling_ends_with(
    country: str, digits: str, gap: str
) -> None:
    """What partitions rely on: normalize never changes a number's last three digits."""
    cell = country + gap + digits[:-3] + gap + digits[-3:]
    try:
        number = normalize(cell)
    except InvalidPhone:
        return
    assert number[-3:] == digits[-3:], cell
