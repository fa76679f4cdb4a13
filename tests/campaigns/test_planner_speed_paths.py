"""The planner's fast paths on real Redis: they plan exactly what the general path plans."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from helpers import approved
from loa.campaigns import planner as planner_module
from loa.campaigns.plan import load_plan
from loa.campaigns.planner import Checkpoint, Planner, Report, plan_audience
from loa.campaigns.service import Campaigns
from loa.engine.connection import RedisClient
from loa.engine.control import suppression_key
from loa.engine.envelope import unpack
from loa.engine.keys import shard_keys
from loa.settings import Settings

pytestmark = pytest.mark.anyio

STATIC = "Bộ Y tế: hãy đeo khẩu trang nơi đông người. Chi tiết: moh.gov.vn"
NAMED = "Bộ Y tế: {{ name }} ơi, hãy đeo khẩu trang nơi đông người. Chi tiết: moh.gov.vn"
# every kind of cell the fast paths must treat as the general path does
PHONES = [
    "0961234567",
    "84912345678",
    "+84 901 234 567",
    "0961234567",  # a duplicate of the first row, same spelling
    "+84 96 123 4567",  # and another spelling of it
    "0921234567",  # Vietnamobile: no carrier route, the default one
    "+12025550123",  # foreign
    "12345",  # too short
    "0241234567",  # a landline
    "0971234567",
]


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


def audience(path: Path, repeat: int = 3) -> Path:
    """PHONES `repeat` times over, each pass with new numbers (the last digit moved)."""
    lines = ["phone,name,region"]
    for n in range(repeat):
        for k, phone in enumerate(PHONES):
            cell = phone[:-1] + str((int(phone[-1]) + n) % 10) if phone[-1].isdigit() else phone
            name = ["Nguyễn Thị Hoa", "Trần Văn Đức", "  ", "Lê An"][k % 4]
            lines.append(f"{cell},{name},{['79', ' 01 ', ''][k % 3]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def plan_file(path: Path, template: str, extra: str = "") -> Path:
    path.write_text(
        f'name = "speed paths"\nlane = "normal"\nchannels = ["sms"]\nsms_ascii = true\n{extra}'
        f"[templates]\nsms = {template!r}\n",
        encoding="utf-8",
    )
    return path


async def queued(client: RedisClient, settings: Settings, campaign: str) -> list[tuple[Any, ...]]:
    """Every queued message of `campaign`: route, id, to, body, parts, extra; sorted."""
    found = []
    for route, limits in settings.routes.items():
        for keys in shard_keys(settings.namespace, route, limits.shards):
            for stream in keys.streams():
                for _, fields in await client.xrange(stream):
                    batch = unpack(fields[b"b"])
                    if batch.campaign == campaign:
                        found += [
                            (route, m.id, m.to, m.body, m.parts, m.extra) for m in batch.messages
                        ]
    return sorted(found)


async def planned(
    settings: Settings, client: RedisClient, plan: Path, people: Path, campaign: str, general: bool
) -> tuple[Report, list[tuple[Any, ...]]]:
    planner = Planner(settings, load_plan(plan), campaign, people, datetime.now(UTC))
    if general:
        planner._reach = planner._reach_any  # the path every plan can take
    report = await plan_audience(planner, client, queue=True)
    return report, await queued(client, settings, campaign)


@pytest.mark.parametrize("template", [STATIC, NAMED], ids=["static", "named"])
async def test_fast_paths_plan_what_the_general_path_plans(
    settings, redis_client, tmp_path, monkeypatch, template
):
    monkeypatch.setattr(planner_module, "GROUP_ROWS", 7)
    monkeypatch.setattr(planner_module, "SLICE_ROWS", 3)
    plan = plan_file(tmp_path / "p.toml", template)
    people = audience(tmp_path / "a.csv")
    fast_report, fast = await planned(settings, redis_client, plan, people, "fast", False)
    slow_report, slow = await planned(settings, redis_client, plan, people, "slow", True)
    planner = Planner(settings, load_plan(plan), "x", people, datetime.now(UTC))
    assert planner._reach != planner._reach_any, "the fast path was taken"
    assert fast_report.to_json() == slow_report.to_json()
    assert fast == slow
    assert all(body.isascii() and extra is None for *_, body, _, extra in fast)
    if template == NAMED:  # "  " is no name: those rows are invalid, the others folded
        assert {body.split(" oi,")[0] for *_, body, _, _ in fast} == {
            "Bo Y te: Nguyen Thi Hoa",
            "Bo Y te: Tran Van Duc",
        }
    report = fast_report.to_json()
    invalid = 12 if template == NAMED else 6  # 2 bad phones a pass; and 2 blank names
    assert (report["total"], report["invalid"], report["duplicate"]) == (30, invalid, 6)
    assert report["queued"] == len(fast) == 30 - invalid - 6
    assert report["by_region"]["01"] > 0 and "?" in report["by_region"]


async def test_duplicates_within_one_group_and_across_groups(
    settings, redis_client, tmp_path, monkeypatch
):
    monkeypatch.setattr(planner_module, "GROUP_ROWS", 5)
    people = tmp_path / "a.csv"
    rows = ["0961111111", "0962222222", "+84 96 111 1111", "0961111111", "84962222222"]
    rows += ["0963333333", "0961111111", "0963333333", "0964444444", "+84962222222"]
    people.write_text("phone\n" + "\n".join(rows) + "\n", encoding="utf-8")
    report, messages = await planned(
        settings, redis_client, plan_file(tmp_path / "p.toml", STATIC), people, "dups", False
    )
    # the first line that names a person wins (lines count the header: row 1 is line 2)
    assert [(m[1], m[2]) for m in sorted(messages, key=lambda m: int(m[1]))] == [
        ("2", "+84961111111"),
        ("3", "+84962222222"),
        ("7", "+84963333333"),
        ("10", "+84964444444"),
    ]
    assert (report.total, report.queued, report.duplicate) == (10, 4, 6)


async def test_seen_script_flags_duplicates_and_replays(redis_client, namespace):
    checks = planner_module.RedisChecks(redis_client, namespace, f"{namespace}:seen", "c", None)

    async def flags(phones: str, lines: str) -> bytes:
        return bytes(await checks._seen(keys=[checks.seen_key], args=[phones, lines]))

    assert await flags("+841,+842,+841", "2,3,4") == b"110", "the same person later in a call"
    assert await flags("+841,+842,+843", "2,3,5") == b"111", "a replay of lines 2 and 3"
    assert await flags("+843,+841", "6,4") == b"00", "named before, by other lines"
    assert await redis_client.hgetall(f"{namespace}:seen") == {
        b"+841": b"2",
        b"+842": b"3",
        b"+843": b"5",
    }


async def test_opt_outs_are_asked_about_only_when_there_are_some(
    settings, redis_client, tmp_path, monkeypatch
):
    asked: list[int] = []
    real = planner_module.opted_out

    async def counting(redis: Any, namespace: str, addresses: list[str]) -> Any:
        asked.append(len(addresses))
        return await real(redis, namespace, addresses)

    monkeypatch.setattr(planner_module, "opted_out", counting)
    plan = plan_file(tmp_path / "p.toml", STATIC)
    people = audience(tmp_path / "a.csv", repeat=1)
    report, _ = await planned(settings, redis_client, plan, people, "no-opt-outs", False)
    assert (report.suppressed, asked) == (0, [])
    await redis_client.sadd(suppression_key(settings.namespace), "+84961234567", "+84971234567")
    report, messages = await planned(settings, redis_client, plan, people, "opt-outs", False)
    assert report.suppressed == 2 and asked
    assert not {"+84961234567", "+84971234567"} & {m[2] for m in messages}


async def test_every_checkpoint_counts_exactly_the_rows_before_it(
    settings, redis_client, tmp_path, monkeypatch
):
    monkeypatch.setattr(planner_module, "GROUP_ROWS", 4)
    monkeypatch.setattr(planner_module, "SLICE_ROWS", 3)
    monkeypatch.setattr(planner_module, "CHECKPOINT_ROWS", 8)
    people = audience(tmp_path / "a.csv", repeat=4)
    planner = Planner(
        settings, load_plan(plan_file(tmp_path / "p.toml", STATIC)), "cp", people, datetime.now(UTC)
    )
    saved: list[Checkpoint] = []

    async def save(point: Checkpoint) -> None:
        saved.append(Checkpoint.from_json(point.to_json()))  # as it is stored: a snapshot

    final = await plan_audience(planner, redis_client, queue=True, save=save)
    assert len(saved) == 6 and saved[-1].finished
    lines = people.read_text(encoding="utf-8").splitlines()
    for point in saved[:-1]:
        assert point.resume is not None
        rows = point.resume[1] - 1  # the checkpoint's line, less the header
        head = tmp_path / f"head-{rows}.csv"
        head.write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
        dry = Planner(settings, planner.plan, f"head-{rows}", head, datetime.now(UTC))
        expected = await plan_audience(dry, redis_client, queue=False)
        assert point.report.to_json() == expected.to_json(), f"checkpoint after {rows} rows"
    assert [p.resume[1] - 1 for p in saved[:-1] if p.resume] == [8, 16, 24, 32, 40]
    assert final.to_json() == saved[-1].report.to_json()
    assert len(await queued(redis_client, settings, "cp")) == final.queued


async def test_a_launch_resumes_after_a_failed_round_trip(
    make_settings, redis_client, tmp_path, monkeypatch
):
    """A Redis failure in a group's checks (in flight while the next group is read) fails the
    launch; launching again finishes it with nobody lost and nobody twice (the row planner:
    the columnar planner's own test is in test_columnar.py)."""
    route = {"adapter": "null", "shards": 2}
    settings = make_settings(
        routes={"sms-a": route, "sms-b": {**route, "shards": 3}},
        channels={"sms": {"default": "sms-b", "carriers": {"viettel": "sms-a"}}},
        queue={"batch_size": 4},
        planning={"columnar": False},
    )
    monkeypatch.setattr(planner_module, "GROUP_ROWS", 6)
    monkeypatch.setattr(planner_module, "CHECKPOINT_ROWS", 12)
    people = audience(tmp_path / "a.csv", repeat=6)
    campaigns = Campaigns(settings, redis_client)
    campaign = await approved(campaigns, plan_file(tmp_path / "p.toml", STATIC), people)
    real = planner_module.RedisChecks.filter
    calls = 0

    async def failing(self: Any, group: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise ConnectionError("redis went away")
        return await real(self, group)

    monkeypatch.setattr(planner_module.RedisChecks, "filter", failing)
    with pytest.raises(ConnectionError):
        await campaigns.launch(campaign.id)
    report = await campaigns.launch(campaign.id)
    messages = await queued(redis_client, settings, campaign.id)
    ids = [m[1] for m in messages]
    assert len(ids) == len(set(ids)) == report.queued == 60 - 12 - 12
    assert (report.total, report.invalid, report.duplicate) == (60, 12, 12)
