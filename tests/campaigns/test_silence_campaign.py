"""A bilingual Zalo-then-SMS campaign with `fallback_after`, from plan file to status: the silent
share goes on by SMS in each person's language, and campaign status, `loa status --wide` and the
per-route counters say how many went on for silence."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from helpers import api_server, approved, read_sink, running, until
from loa.campaigns.service import Campaigns
from loa.cli.status import print_status
from loa.engine.connection import RedisClient
from loa.engine.silence import pending
from loa.settings import Settings
from loa.sim.http import HttpSimulator

pytestmark = pytest.mark.anyio

OA_SECRET = "oa-secret-for-tests"

PLAN = """\
name = "Cảnh báo lũ / Flood warning"
lane = "emergency"
channels = ["zalo", "sms"]
language = "vi"
fallback_after = { zalo = "3s" }

[templates.vi]
sms = "Canh bao lu: {{ name }} di chuyen len cao ngay."
zalo = { template_id = "248613", data = { name = "{{ name }}" } }

[templates.en]
sms = "Flood warning: {{ name }}, move to high ground now."
zalo = { template_id = "248614", data = { name = "{{ name }}" } }
"""


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


async def test_the_silent_share_goes_on_by_sms_in_each_language_and_is_counted(
    make_settings: Any,
    redis_url: str,
    redis_client: RedisClient,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink = tmp_path / "sms"
    options = {"seed": 3, "zalo_silent_ratio": 0.3, "zalo_oa_secret": OA_SECRET}
    async with HttpSimulator(options) as sim:
        settings: Settings = make_settings(
            routes={
                "zalo-zns": {
                    "adapter": "zalo",
                    "shards": 2,
                    "chunk": 20,
                    "options": {"base_url": sim.url, "access_token": "sim-zalo-token"},
                },
                "sms-x": {"adapter": "file", "options": {"path": str(sink / "{pid}.jsonl")}},
            },
            channels={"zalo": {"default": "zalo-zns"}, "sms": {"default": "sms-x"}},
            api={"webhook_secrets": {"zalo-zns": OA_SECRET}},
        )
        people = 60
        lang = ["en" if i % 3 == 0 else "vi" for i in range(people)]
        rows = [f"+849120{i:05d},Người {i},79,z{i},{lang[i]}" for i in range(people)]
        silent = {f"+849120{i:05d}" for i in range(people) if sim.silent(f"+849120{i:05d}")}
        english = {f"+849120{i:05d}" for i in range(0, people, 3)}
        assert 5 < len(silent) < 35 and silent & english and silent - english
        (tmp_path / "plan.toml").write_text(PLAN, encoding="utf-8")
        (tmp_path / "people.csv").write_text(
            "phone,name,region,zalo_id,lang\n" + "\n".join(rows) + "\n", encoding="utf-8"
        )
        async with api_server(settings, redis_url, "zalo-zns") as webhook:
            sim.configure(zalo_webhook=webhook)
            campaigns = Campaigns(settings, redis_client)
            campaign = await approved(campaigns, tmp_path / "plan.toml", tmp_path / "people.csv")
            await campaigns.launch(campaign.id)

            async def settled() -> bool:
                status = await campaigns.status(campaign.id)
                timers = await pending(redis_client, settings.namespace, "zalo-zns")
                # a campaign done too early would hold its fallbacks forever: this waits for both
                done = status["state"] == "done" and status["finished"] >= people + len(silent)
                return done and timers == 0

            async with running(settings, redis_client):
                await until(settled, 60, "every message and fallback settled")
            status = await campaigns.status(campaign.id)
    lines = read_sink(sink)
    assert Counter(line["to"] for line in lines) == dict.fromkeys(silent, 1)
    for line in lines:
        start = "Flood warning: " if line["to"] in english else "Canh bao lu: "
        assert line["body"].startswith(start), line["body"]
    assert (status["fallback_timeout"], status["fallback_failed"]) == (len(silent), 0)
    assert status["delivered"] == people - len(silent)
    assert status["by_route"]["zalo-zns"]["fallback_timeout"] == len(silent)
    assert status["by_route"]["sms-x"]["accepted"] == len(silent)
    capsys.readouterr()
    await print_status(settings, as_json=False, wide=True)
    assert "fb timeout" in capsys.readouterr().out
    await print_status(settings, as_json=True)
    rows = {row["route"]: row for row in orjson.loads(capsys.readouterr().out)}
    assert rows["zalo-zns"]["fallback_timeout"] == len(silent)


async def test_the_dry_run_warns_when_a_route_would_wait_for_receipts_it_never_gets(
    make_settings: Any, redis_client: RedisClient, tmp_path: Any
) -> None:
    routes = {"zalo-zns": {"adapter": "null"}, "sms-x": {"adapter": "null"}}
    channels = {"zalo": {"default": "zalo-zns"}, "sms": {"default": "sms-x"}}
    (tmp_path / "plan.toml").write_text(PLAN, encoding="utf-8")
    (tmp_path / "people.csv").write_text(
        "phone,name,region,zalo_id,lang\n+84912000001,An,79,z1,vi\n+84912000002,Bo,79,z2,en\n",
        encoding="utf-8",
    )
    without = make_settings(routes=routes, channels=channels)
    report = await Campaigns(without, redis_client).validate(
        tmp_path / "plan.toml", tmp_path / "people.csv"
    )
    assert report.warnings == [
        "fallback_after.zalo: route zalo-zns gets no delivery receipts (no api.webhook_secrets "
        "entry): its messages will not fall back for silence"
    ]
    with_secret = make_settings(
        routes=routes, channels=channels, api={"webhook_secrets": {"zalo-zns": OA_SECRET}}
    )
    report = await Campaigns(with_secret, redis_client).validate(
        tmp_path / "plan.toml", tmp_path / "people.csv"
    )
    assert report.warnings == []
