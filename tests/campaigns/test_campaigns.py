"""Campaigns end to end on real Redis: planning, restarts, control, schedules, caps, opt-outs."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest

from helpers import approved, read_sink, run_until_idle, running, until
from loa.campaigns import planner as planner_module
from loa.campaigns.clock import CampaignClock
from loa.campaigns.record import State
from loa.campaigns.service import Campaigns
from loa.campaigns.templates import TemplateRefused
from loa.engine.connection import RedisClient
from loa.engine.control import HOLD_RETRY_MS
from loa.engine.keys import shard_keys, suppression_key
from loa.errors import CampaignError
from loa.privacy.retention import RetentionSweep
from loa.settings import Settings

pytestmark = pytest.mark.anyio

# Viettel, Vinaphone and MobiFone numbers, as people type them
PREFIXES = ("096", "091", "090")


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


def write_audience(
    path: Path,
    count: int,
    extra: Callable[[int], dict[str, str]] | None = None,
) -> Path:
    rows = []
    for n in range(count):
        fields = {
            "phone": f"{PREFIXES[n % 3]}{n:07d}",
            "name": f"Nguyen {n}",
            "region": "79" if n % 2 else "01",
        }
        fields.update(extra(n) if extra else {})
        rows.append(fields)
    columns = list(rows[0]) if rows else ["phone", "name", "region"]
    lines = [",".join(columns)] + [",".join(row[c] for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_plan(
    path: Path, body: str = "", lane: str = "normal", schedule: str = "", limits: str = ""
) -> Path:
    path.write_text(
        f'name = "test campaign"\nlane = "{lane}"\nchannels = ["sms"]\n'
        f'[templates]\nsms = "Xin chao {{{{ name }}}}: {body or "tiem vac-xin"}"\n'
        f"{schedule}\n{limits}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def settings(make_settings, tmp_path) -> Settings:
    sink = tmp_path / "sink"
    route = {
        "adapter": "file",
        "shards": 2,
        "chunk": 10,
        "concurrency": 2,
        "options": {"path": str(sink / "{route}-{pid}.jsonl")},
    }
    return make_settings(
        routes={"sms-a": route, "sms-b": {**route, "shards": 3}},
        channels={"sms": {"default": "sms-b", "carriers": {"viettel": "sms-a"}}},
        queue={"batch_size": 50},
    )


async def launched(campaigns: Campaigns, plan: Path, audience: Path) -> str:
    campaign = await approved(campaigns, plan, audience)
    await campaigns.launch(campaign.id)
    return campaign.id


async def queued_ids(client: RedisClient, settings: Settings) -> list[str]:
    """Every message id in every stream and retry set of every route."""
    ids: list[str] = []
    for route, limits in settings.routes.items():
        for keys in shard_keys(settings.namespace, route, limits.shards):
            for stream in keys.streams():
                for _, fields in await client.xrange(stream):
                    ids += [row[0] for row in msgpack.unpackb(fields[b"b"])[-1]]
            for later in keys.delayed_sets():
                for envelope in await client.zrange(later, 0, -1):
                    ids += [row[0] for row in msgpack.unpackb(envelope)[-1]]
    return ids


async def test_dry_run_counts_without_queueing(settings, redis_client, tmp_path):
    audience = write_audience(tmp_path / "a.csv", 300)
    with audience.open("a") as handle:
        handle.write("12345,Bad,79\n0960000000,Dup,79\n")
    plan = write_plan(tmp_path / "p.toml")
    report = await Campaigns(settings, redis_client).validate(plan, audience)
    assert (report.total, report.queued, report.invalid, report.duplicate) == (302, 300, 1, 1)
    assert report.errors == [(302, "phone: too short")]
    assert report.by_route == {"sms-a": 100, "sms-b": 200}
    assert report.by_carrier == {"viettel": 100, "vinaphone": 100, "mobifone": 100}
    assert await queued_ids(redis_client, settings) == [], "a dry run queues nothing"


async def test_a_message_over_the_sms_parts_limit_is_an_invalid_row(
    settings, redis_client, tmp_path
):
    # row n's text is 24 + 400 * n characters (1, 3, 6, 8, 11, 14, 16, 19 parts)
    audience = write_audience(tmp_path / "a.csv", 8, lambda n: {"name": "x" * (400 * n + 1)})
    plan = write_plan(tmp_path / "p.toml")
    report = await Campaigns(settings, redis_client).validate(plan, audience)
    assert (report.total, report.queued, report.invalid, report.parts) == (8, 4, 4, 18)
    assert report.errors[0] == (
        6,  # the fifth row (n = 4), after the header
        "templates.sms: the message is 11 SMS parts, more than the 10 allowed "
        "(planning.max_sms_parts)",
    )
    assert [line for line, _ in report.errors] == [6, 7, 8, 9]
    planning = settings.planning.model_copy(update={"max_sms_parts": 30})
    wider = settings.model_copy(update={"planning": planning})
    assert (await Campaigns(wider, redis_client).validate(plan, audience)).invalid == 0


async def test_a_static_message_over_the_parts_limit_makes_every_row_invalid(
    settings, redis_client, tmp_path
):
    audience = write_audience(tmp_path / "a.csv", 3)
    plan = tmp_path / "p.toml"
    plan.write_text(
        f'name = "t"\nlane = "normal"\nchannels = ["sms"]\n[templates]\nsms = "{"x" * 2000}"\n'
    )
    report = await Campaigns(settings, redis_client).validate(plan, audience)
    assert (report.queued, report.invalid) == (0, 3)
    assert report.errors[0][1].startswith("templates.sms: the message is 14 SMS parts")


async def test_a_template_the_sandbox_refuses_refuses_the_plan(settings, redis_client, tmp_path):
    audience = write_audience(tmp_path / "a.csv", 3000)
    plan = write_plan(tmp_path / "p.toml", body="{{ '%0200000000d' % 1 }}")
    with pytest.raises(TemplateRefused) as refused:
        await Campaigns(settings, redis_client).validate(plan, audience)
    assert str(refused.value) == (
        "templates.sms: refused by the sandbox: '%' formatting would build 200,000,014 "
        "characters (at most 100,000) (audience line 2)"
    )


async def test_planner_killed_mid_file_resumes_without_loss_or_duplicates(
    settings, redis_client, tmp_path, monkeypatch
):
    monkeypatch.setattr(planner_module, "CHECKPOINT_ROWS", 400)
    monkeypatch.setattr(planner_module, "GROUP_ROWS", 100)
    audience = write_audience(tmp_path / "a.csv", 2000)
    campaigns = Campaigns(settings, redis_client)
    campaign = await approved(campaigns, write_plan(tmp_path / "p.toml"), audience)

    real_update = campaigns.store.update
    saves = 0

    async def dying_update(campaign_id: str, fields: dict[str, Any]) -> None:
        nonlocal saves
        if "checkpoint" in fields:
            saves += 1
            if saves == 3:  # batches of this stretch are queued, its checkpoint is not saved
                raise KeyboardInterrupt("planner killed")
        await real_update(campaign_id, fields)

    monkeypatch.setattr(campaigns.store, "update", dying_update)
    with pytest.raises(KeyboardInterrupt):
        await campaigns.launch(campaign.id)
    partial = await queued_ids(redis_client, settings)
    assert 800 <= len(partial) < 2000
    monkeypatch.setattr(campaigns.store, "update", real_update)
    report = await campaigns.launch(campaign.id)  # the operator runs launch again
    ids = await queued_ids(redis_client, settings)
    assert len(ids) == len(set(ids)) == 2000, "everyone queued, nobody twice"
    assert (report.total, report.queued, report.duplicate) == (2000, 2000, 0)
    with pytest.raises(CampaignError, match="already launched"):
        await campaigns.launch(campaign.id)


@pytest.mark.parametrize("columnar", [True, False], ids=["columns", "rows"])
async def test_what_is_sent_is_counted_per_region_as_the_batches_settle(
    settings, redis_client, tmp_path, columnar
):
    regions = ["79", "01", " 48 ", "", "ha noi", "79"]
    audience = write_audience(
        tmp_path / "a.csv", 600, lambda n: {"region": regions[n % len(regions)]}
    )
    settings = settings.model_copy(
        update={"planning": settings.planning.model_copy(update={"columnar": columnar})}
    )
    campaigns = Campaigns(settings, redis_client)
    campaign_id = await launched(campaigns, write_plan(tmp_path / "p.toml"), audience)
    await _run_to_done(settings, redis_client, campaigns, campaign_id)
    counts, counted = await campaigns.by_region(campaign_id)
    assert counted
    sent = {region: row["sent"] for region, row in counts.items()}
    queued = {region: row["queued"] for region, row in counts.items()}
    assert queued == {"79": 200, "01": 100, "48": 100, "?": 100, "HA NOI": 100}
    assert sent == queued, "every message counted once, under its own region"


async def test_campaign_runs_to_done_and_counts(settings, redis_client, tmp_path):
    audience = write_audience(tmp_path / "a.csv", 500)
    campaigns = Campaigns(settings, redis_client)
    campaign_id = await launched(campaigns, write_plan(tmp_path / "p.toml"), audience)
    await _run_to_done(settings, redis_client, campaigns, campaign_id)
    status = await campaigns.status(campaign_id)
    assert {k: status[k] for k in ("total", "queued", "sent", "failed", "invalid")} == {
        "total": 500,
        "queued": 500,
        "sent": 500,
        "failed": 0,
        "invalid": 0,
    }
    assert len(read_sink(tmp_path / "sink")) == 500


async def test_pause_and_cancel_take_effect_within_a_second(settings, redis_client, tmp_path):
    slow = settings.model_copy(deep=True)
    for name in slow.routes:
        object.__setattr__(slow.routes[name], "rate", 100.0)
        object.__setattr__(slow.routes[name], "unit", "messages")
    audience = write_audience(tmp_path / "a.csv", 3000)
    campaigns = Campaigns(slow, redis_client)
    campaign_id = await launched(campaigns, write_plan(tmp_path / "p.toml"), audience)
    sink = tmp_path / "sink"
    async with running(slow, redis_client):
        await until(lambda: _sent_at_least(sink, 100), 20, "sending under way")
        await campaigns.act(campaign_id, "pause")
        paused = time.time()
        # within a second every batch is held: none ready, none in flight
        await until(lambda: _all_held(campaigns, slow), 1.0, "every batch held")
        paused_at = len(read_sink(sink))
        assert max(line["ts"] for line in read_sink(sink)) <= paused + 1.0
        # held batches come back every HOLD_RETRY_MS: watch one and a half of those
        await asyncio.sleep(HOLD_RETRY_MS / 1000 * 1.5)
        assert len(read_sink(sink)) == paused_at, "nothing left while paused"
        await campaigns.act(campaign_id, "resume")
        await until(lambda: _sent_at_least(sink, paused_at + 50), 20, "sending resumed")
        await campaigns.act(campaign_id, "cancel")
        cancelled = time.time()
        await until(lambda: _all_settled(campaigns, campaign_id), 20, "the rest to be dropped")
    lines = read_sink(sink)
    assert max(line["ts"] for line in lines) <= cancelled + 1.0, "nothing left after the cancel"
    status = await campaigns.status(campaign_id)
    assert status["state"] == "cancelled"
    assert status["sent"] == len(lines) < 3000
    assert status["sent"] + status["cancelled"] == 3000


async def _all_held(campaigns: Campaigns, settings: Settings) -> bool:
    """No batch of any route is ready to take or taken: each waits in its delayed set."""
    shards = [
        keys
        for route, limits in settings.routes.items()
        for keys in shard_keys(settings.namespace, route, limits.shards)
    ]
    backlog = await campaigns.queues.backlog(shards)
    waiting = sum(count for name, count in backlog.items() if name not in ("delayed", "pending"))
    return backlog["pending"] == 0 and 0 < waiting == backlog["delayed"]


async def test_expired_advice_is_never_sent(settings, redis_client, tmp_path):
    plan = write_plan(tmp_path / "p.toml", schedule='[schedule]\nexpires = "1s"')
    campaigns = Campaigns(settings, redis_client)
    campaign_id = await launched(campaigns, plan, write_audience(tmp_path / "a.csv", 120))
    await asyncio.sleep(1.2)
    async with running(settings, redis_client):
        await until(lambda: _all_settled(campaigns, campaign_id), 20, "every message expired")
    status = await campaigns.status(campaign_id)
    assert (status["expired"], status["sent"], status["state"]) == (120, 0, "expired")
    assert read_sink(tmp_path / "sink") == []


def _quiet_now() -> str:
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    return f"{start:%H:%M}-{end:%H:%M}"


@pytest.mark.parametrize(("lane", "held"), [("normal", True), ("emergency", False)])
async def test_quiet_hours_hold_all_but_emergencies(settings, redis_client, tmp_path, lane, held):
    schedule = f'[schedule]\ntimezone = "UTC"\nquiet_hours = "{_quiet_now()}"'
    plan = write_plan(tmp_path / "p.toml", lane=lane, schedule=schedule)
    campaigns = Campaigns(settings, redis_client)
    campaign_id = await launched(campaigns, plan, write_audience(tmp_path / "a.csv", 60))
    async with running(settings, redis_client):
        if held:
            await asyncio.sleep(2.0)
        else:
            await until(lambda: _state(campaigns, campaign_id, "done"), 20, "the emergency")
    sent = len(read_sink(tmp_path / "sink"))
    assert sent == (0 if held else 60)
    status = await campaigns.status(campaign_id)
    if held:
        later = await queued_ids(redis_client, settings)
        assert len(later) == 60, "held, not dropped"
        end = datetime.fromisoformat(status["held_until"])
        assert (status["state"], status["hold"]) == ("running", "quiet hours")
        assert timedelta(minutes=58) < end - datetime.now(UTC) <= timedelta(hours=1)
        row = (await campaigns.list())[0]
        assert (row["hold"], row["held_until"]) == ("quiet hours", status["held_until"])
    else:
        assert (status["state"], status["hold"], status["held_until"]) == ("done", "", None)


async def test_per_recipient_send_times(settings, redis_client, tmp_path):
    soon = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)

    def due(n: int) -> dict[str, str]:
        when = soon if n % 2 else datetime.now(UTC) - timedelta(hours=2)
        return {"due": when.strftime("%Y-%m-%dT%H:%M:%S+00:00")}

    audience = write_audience(tmp_path / "a.csv", 40, extra=due)
    plan = write_plan(tmp_path / "p.toml", schedule='[schedule]\nsend_at = "due"')
    campaigns = Campaigns(settings, redis_client)
    campaign_id = await launched(campaigns, plan, audience)
    await _run_to_done(settings, redis_client, campaigns, campaign_id)
    lines = read_sink(tmp_path / "sink")
    # recipient n is on line n + 2 (after the header): odd recipients, odd lines, are due soon
    late = [line for line in lines if int(line["id"]) % 2 == 1]
    early = [line for line in lines if int(line["id"]) % 2 == 0]
    assert len(late) == len(early) == 20
    assert min(line["ts"] for line in late) >= soon.timestamp() - 0.05, "none before its time"
    assert max(line["ts"] for line in early) < soon.timestamp(), "the past-due went at once"


async def test_frequency_cap_skips_recently_messaged(settings, redis_client, tmp_path):
    campaigns = Campaigns(settings, redis_client)
    first = write_audience(tmp_path / "first.csv", 30)
    first_id = await launched(campaigns, write_plan(tmp_path / "p1.toml"), first)
    second = write_audience(tmp_path / "second.csv", 50)  # the first 30 again, and 20 more
    capped = write_plan(tmp_path / "p2.toml", limits='[limits]\nfrequency_cap = "7d"')
    before = await campaigns.validate(capped, second)
    assert (before.queued, before.capped) == (50, 0), "planned is not messaged"
    await _run_to_done(settings, redis_client, campaigns, first_id)
    report = await campaigns.launch(await _approved(campaigns, capped, second))
    assert (report.queued, report.capped) == (20, 30)


async def test_cancelled_campaigns_that_never_sent_cap_nobody(settings, redis_client, tmp_path):
    campaigns = Campaigns(settings, redis_client)
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    scheduled = write_plan(
        tmp_path / "s.toml", schedule=f'[schedule]\nstart = "{later.isoformat()}"'
    )
    audience = write_audience(tmp_path / "a.csv", 40)
    for _ in range(3):
        campaign_id = await launched(campaigns, scheduled, audience)
        await campaigns.act(campaign_id, "cancel")
    capped = write_plan(tmp_path / "capped.toml", limits='[limits]\nfrequency_cap = "7d"')
    report = await campaigns.validate(capped, audience)
    assert (report.queued, report.capped) == (40, 0)
    # and what a campaign did send caps those people, and only them, when it is cancelled
    slow = settings.model_copy(deep=True)
    for name in slow.routes:
        object.__setattr__(slow.routes[name], "rate", 20.0)
        object.__setattr__(slow.routes[name], "unit", "messages")
    sending = await launched(
        Campaigns(slow, redis_client), write_plan(tmp_path / "p.toml"), audience
    )
    async with running(slow, redis_client):
        await until(lambda: _sent_at_least(tmp_path / "sink", 10), 20, "some sent")
        await campaigns.act(sending, "cancel")
        await until(lambda: _all_settled(campaigns, sending), 20, "the rest dropped")
    sent = (await campaigns.status(sending))["sent"]
    assert 10 <= sent < 40
    report = await campaigns.validate(capped, audience)
    assert (report.queued, report.capped) == (40 - sent, sent)


async def test_opt_out_after_planning_is_honoured_at_send_time(settings, redis_client, tmp_path):
    campaigns = Campaigns(settings, redis_client)
    audience = write_audience(tmp_path / "a.csv", 90)
    campaign_id = await launched(campaigns, write_plan(tmp_path / "p.toml"), audience)
    opted = [f"+84{PREFIXES[n % 3][1:]}{n:07d}" for n in range(0, 90, 9)]
    await redis_client.sadd(suppression_key(settings.namespace), *opted)
    await _run_to_done(settings, redis_client, campaigns, campaign_id)
    status = await campaigns.status(campaign_id)
    assert (status["sent"], status["suppressed"]) == (80, 10)
    assert not {line["to"] for line in read_sink(tmp_path / "sink")} & set(opted)


async def test_failed_report_lists_who_did_not_get_it(make_settings, redis_client, tmp_path):
    settings = make_settings(
        routes={"sms-x": {"adapter": "null", "options": {"fail_ratio": 1.0}}},
        channels={"sms": {"default": "sms-x"}},
    )
    campaigns = Campaigns(settings, redis_client)
    campaign_id = await launched(
        campaigns, write_plan(tmp_path / "p.toml"), write_audience(tmp_path / "a.csv", 12)
    )
    await _run_to_done(settings, redis_client, campaigns, campaign_id)
    out = tmp_path / "failed.csv"
    assert await campaigns.write_failed(campaign_id, out) == 12
    rows = out.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "recipient,route,line,reason"
    assert rows[1].startswith("'+84"), "numbers are text in a spreadsheet, not formulas"
    assert all(row.endswith("injected permanent failure") for row in rows[1:])


async def _run_to_done(
    settings: Settings, client: RedisClient, campaigns: Campaigns, campaign_id: str
) -> None:
    """A worker runs until it has nothing left to do; the campaign clock's next tick then
    finds the campaign done."""
    await run_until_idle(settings, client)
    await CampaignClock(settings).tick(client)
    assert (await campaigns.status(campaign_id))["state"] == "done"


async def _approved(campaigns: Campaigns, plan: Path, audience: Path) -> str:
    campaign = await approved(campaigns, plan, audience)
    return campaign.id


async def _state(campaigns: Campaigns, campaign_id: str, state: str) -> bool:
    return bool((await campaigns.status(campaign_id))["state"] == state)


async def _all_settled(campaigns: Campaigns, campaign_id: str) -> bool:
    status = await campaigns.status(campaign_id)
    return bool(status["finished"] >= status["queued"])  # cancelled ones have ended too


async def _sent_at_least(sink: Path, count: int) -> bool:
    return len(read_sink(sink)) >= count


async def test_campaign_rate_cap_holds_across_routes(settings, redis_client, tmp_path):
    plan = write_plan(tmp_path / "p.toml", limits="[limits]\nrate = 40")
    campaigns = Campaigns(settings, redis_client)
    campaign_id = await launched(campaigns, plan, write_audience(tmp_path / "a.csv", 150))
    await _run_to_done(settings, redis_client, campaigns, campaign_id)
    stamps = sorted(line["ts"] for line in read_sink(tmp_path / "sink"))
    elapsed = stamps[-1] - stamps[0]
    # 150 messages at 40/s over two routes: the first ~2 s of burst aside, about 3.5 s
    assert elapsed >= (150 - 40 * 0.5) / 40 * 0.9, f"sent in {elapsed:.2f}s"


async def test_scheduled_campaign_starts_at_its_time(settings, redis_client, tmp_path):
    start = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    plan = write_plan(tmp_path / "p.toml", schedule=f'[schedule]\nstart = "{start.isoformat()}"')
    campaigns = Campaigns(settings, redis_client)
    campaign_id = await launched(campaigns, plan, write_audience(tmp_path / "a.csv", 30))
    assert (await campaigns.status(campaign_id))["state"] == "scheduled"
    await _run_to_done(settings, redis_client, campaigns, campaign_id)
    stamps = [line["ts"] for line in read_sink(tmp_path / "sink")]
    assert len(stamps) == 30
    assert min(stamps) >= start.timestamp() - 0.05, "nothing before the start"
    by_route = (await campaigns.status(campaign_id))["by_route"]
    assert by_route == {"sms-a": {"accepted": 10}, "sms-b": {"accepted": 20}}


async def test_an_audience_too_large_to_copy_is_pinned_in_place_by_its_digest(
    settings, redis_client, tmp_path
):
    in_place = settings.model_copy(
        update={"planning": settings.planning.model_copy(update={"pin_copy_limit_mb": 0})}
    )
    campaigns = Campaigns(in_place, redis_client)
    plan = write_plan(tmp_path / "p.toml")
    audience = write_audience(tmp_path / "a.csv", 30)
    first = await approved(campaigns, plan, audience)
    assert Path(first.fields["audience"]) == audience.resolve(), "read where it is"
    assert first.fields["audience_copied"] == "0"
    stat = audience.stat()
    # the same size, then the same size and modification time: the digest still tells
    original = audience.read_bytes()
    audience.write_bytes(original.replace(b"Nguyen 1,", b"Nguyen X,"))
    with pytest.raises(CampaignError, match="has changed since the campaign was created"):
        await campaigns.launch(first.id)
    os.utime(audience, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(CampaignError, match="has changed since the campaign was created"):
        await campaigns.launch(first.id)
    audience.write_bytes(original)
    os.utime(audience, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (await campaigns.launch(first.id)).queued == 30, "the approved content goes"
    audience.unlink()
    second = await approved(campaigns, plan, write_audience(tmp_path / "b.csv", 5))
    (tmp_path / "b.csv").unlink()
    with pytest.raises(CampaignError, match="is gone"):
        await campaigns.launch(second.id)


async def test_pinned_copies_are_removed_once_their_campaign_ended_long_enough(
    settings, redis_client, tmp_path
):
    campaigns = Campaigns(settings, redis_client)
    plan = write_plan(tmp_path / "p.toml")
    ended = await approved(campaigns, plan, write_audience(tmp_path / "a.csv", 5))
    running = await approved(campaigns, plan, write_audience(tmp_path / "b.csv", 5))
    await campaigns.act(ended.id, "cancel")
    copies = settings.data_dir / "campaigns"
    assert sorted(p.name for p in copies.iterdir()) == sorted([ended.id, running.id])
    month = int(settings.retention.audiences_days * 86_400_000)
    now = int(time.time() * 1000)
    assert await campaigns.remove_ended_audiences(now) == 0, "not before the retention"
    assert await campaigns.remove_ended_audiences(now + month + 1000) == 1
    assert [p.name for p in copies.iterdir()] == [running.id]
    assert (await campaigns.store.get(ended.id)).fields["audience_removed_ms"]
    assert await campaigns.remove_ended_audiences(now + month + 2000) == 0
async def test_a_campaign_nobody_reads_reaches_done(settings, redis_client, tmp_path):
    campaigns = Campaigns(settings, redis_client)
    audience = write_audience(tmp_path / "a.csv", 200)
    campaign_id = await launched(campaigns, write_plan(tmp_path / "p.toml"), audience)

    async def stored_done() -> bool:
        return (await campaigns.store.get(campaign_id)).state is State.DONE

    async with running(settings, redis_client):
        await until(stored_done, 30, "the campaign to end with nobody reading it")
    assert [(row["id"], row["state"]) for row in await campaigns.list()] == [(campaign_id, "done")]
    assert not await redis_client.sismember(campaigns.store.active_key, campaign_id)


async def test_reading_a_campaign_changes_nothing(settings, redis_client, tmp_path):
    plan = write_plan(tmp_path / "p.toml", schedule='[schedule]\nexpires = "1s"')
    campaigns = Campaigns(settings, redis_client)
    campaign_id = await launched(campaigns, plan, write_audience(tmp_path / "a.csv", 20))
    await asyncio.sleep(1.1)
    key = campaigns.store.key(campaign_id)
    before = await redis_client.hgetall(key)
    assert (await campaigns.status(campaign_id))["state"] == "running"
    assert (await campaigns.list())[0]["state"] == "running"
    assert await redis_client.hgetall(key) == before, "a read wrote nothing"
    assert await CampaignClock(settings).tick(redis_client) == {campaign_id: State.EXPIRED}
    assert (await campaigns.status(campaign_id))["state"] == "expired"


async def test_cancel_drops_what_the_campaign_still_had_queued(settings, redis_client, tmp_path):
    campaigns = Campaigns(settings, redis_client)
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    scheduled_plan = write_plan(
        tmp_path / "later.toml", schedule=f'[schedule]\nstart = "{later.isoformat()}"'
    )
    scheduled = await launched(campaigns, scheduled_plan, write_audience(tmp_path / "s.csv", 90))
    now = await launched(
        campaigns, write_plan(tmp_path / "now.toml"), write_audience(tmp_path / "n.csv", 120)
    )
    # a worker has taken one batch of it: that one stays with the worker, which counts it
    viettel = shard_keys(settings.namespace, "sms-a", 2)[0]
    taken = await campaigns.queues.take(viettel, "a-worker")
    assert taken is not None and taken.batch.campaign == now
    kept = await launched(
        campaigns, write_plan(tmp_path / "kept.toml"), write_audience(tmp_path / "k.csv", 60)
    )
    assert len(await queued_ids(redis_client, settings)) == 90 + 120 + 60
    for campaign_id in (scheduled, now):
        assert await campaigns.act(campaign_id, "cancel") is State.CANCELLED
    assert len(await queued_ids(redis_client, settings)) == 60 + len(taken.batch.messages)
    assert (await campaigns.status(scheduled))["cancelled"] == 90
    assert (await campaigns.status(now))["cancelled"] == 120 - len(taken.batch.messages)
    shards = [
        keys
        for route, limits in settings.routes.items()
        for keys in shard_keys(settings.namespace, route, limits.shards)
    ]
    backlog = await campaigns.queues.backlog(shards)
    # the kept campaign's: one batch per route (two carriers) and region (79 and 01)
    assert (backlog["normal"], backlog["delayed"], backlog["pending"]) == (4, 0, 1), "kept only"
    async with running(settings, redis_client):
        await until(lambda: _state(campaigns, kept, "done"), 30, "the campaign kept")
        await until(lambda: _all_settled(campaigns, now), 30, "the taken batch, claimed")
    assert (await campaigns.status(now))["cancelled"] == 120
    assert len(read_sink(tmp_path / "sink")) == 60


async def test_an_expired_campaign_counts_its_held_messages_at_once(
    settings, redis_client, tmp_path
):
    schedule = f'[schedule]\ntimezone = "UTC"\nquiet_hours = "{_quiet_now()}"\nexpires = "2s"'
    plan = write_plan(tmp_path / "p.toml", schedule=schedule)
    campaigns = Campaigns(settings, redis_client)
    campaign_id = await launched(campaigns, plan, write_audience(tmp_path / "a.csv", 60))

    async def all_expired() -> bool:
        status = await campaigns.status(campaign_id)
        return bool(status["state"] == "expired" and status["expired"] == 60)

    async with running(settings, redis_client):
        await until(all_expired, 15, "every held message counted expired")
    assert await queued_ids(redis_client, settings) == [], "nothing left to come back"
    assert read_sink(tmp_path / "sink") == []


async def test_status_counts_reminders_scheduled_past_due_and_never_sent(
    settings, redis_client, tmp_path
):
    now = datetime.now(UTC).replace(microsecond=0)
    dues = {0: now - timedelta(days=2), 1: now + timedelta(seconds=2), 2: now + timedelta(hours=2)}

    def due(n: int) -> dict[str, str]:
        return {"due": dues[n % 3].isoformat()}

    audience = write_audience(tmp_path / "a.csv", 30, extra=due)
    schedule = '[schedule]\nsend_at = "due"\nexpires = "1h"'
    plan = write_plan(tmp_path / "p.toml", schedule=schedule)
    campaigns = Campaigns(settings, redis_client)
    dry = await campaigns.validate(plan, audience)
    assert (dry.scheduled, dry.past_due, dry.after_expiry, dry.queued) == (10, 10, 10, 20)
    campaign_id = await launched(campaigns, plan, audience)
    status = await campaigns.status(campaign_id)
    counts = {k: status[k] for k in ("total", "queued", "scheduled", "past_due", "after_expiry")}
    assert counts == {
        "total": 30,
        "queued": 20,
        "scheduled": 10,
        "past_due": 10,
        "after_expiry": 10,
    }
    assert len(await queued_ids(redis_client, settings)) == 20, "what would never go is not queued"
    await _run_to_done(settings, redis_client, campaigns, campaign_id)
    # recipient n is on line n + 2: the past-due and the soon due went, the rest never
    sent = sorted((int(line["id"]) - 2) % 3 for line in read_sink(tmp_path / "sink"))
    assert sent == [0] * 10 + [1] * 10


async def test_the_retention_sweep_removes_pinned_copies_past_their_retention(
    settings, redis_client, tmp_path
):
    kept_none = settings.model_copy(
        update={"planning": settings.planning.model_copy(update={"pinned_retention_days": 0})}
    )
    campaigns = Campaigns(kept_none, redis_client)
    ended = await approved(campaigns, write_plan(tmp_path / "p.toml"), write_audience(
        tmp_path / "a.csv", 5))
    await campaigns.act(ended.id, "cancel")
    sweep = RetentionSweep(kept_none)
    assert await sweep.tick(redis_client) is not None
    assert not (settings.data_dir / "campaigns" / ended.id).exists()
    assert await sweep.tick(redis_client) is None, "once an hour, not every second"
