"""Follow-up questions on real Redis: replies matched once to the open question, counted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from loa.access.identity import local_principal
from loa.campaigns.plan import Plan
from loa.campaigns.service import Campaigns
from loa.engine.connection import RedisClient
from loa.engine.control import DAY_SECONDS, REGION, Controls, asked_key
from loa.engine.events import EventWriter
from loa.engine.metrics import Metrics
from loa.errors import PlanError
from loa.followups.service import Followups
from loa.inbox import Inbox
from loa.message import Inbound, Message
from loa.settings import Settings

pytestmark = pytest.mark.anyio

PLAN = """
name = "Check-in after the shot"
lane = "normal"
channels = ["sms"]
[templates]
sms = "Bo Y te: ban cam thay the nao? 1 binh thuong, 2 dau nhe, 3 sot cao/kho tho"
[followup]
id = "day1"
window = "72h"
options = [
  { code = "1", label = "Binh thuong", keywords = ["binh thuong", "khoe"] },
  { code = "2", label = "Dau nhe", keywords = ["dau nhe"] },
  { code = "3", label = "Sot cao / kho tho", keywords = ["sot cao", "kho tho"], urgent = true },
]
"""


@pytest.fixture
def redis_url(service_or_cluster_url: str) -> str:
    return service_or_cluster_url


@pytest.fixture
def settings(make_settings: Any, tmp_path: Path) -> Settings:
    route = {"adapter": "file", "options": {"path": str(tmp_path / "sink" / "{route}.jsonl")}}
    return make_settings(  # type: ignore[no-any-return]
        routes={"sms": route}, channels={"sms": {"default": "sms"}}
    )


def e164(n: int) -> str:
    return f"+84912{n:06d}"


async def campaign(settings: Settings, client: RedisClient, tmp_path: Path) -> str:
    """A campaign that asks the plan's question, stored as `loa campaign create` stores it."""
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    audience = tmp_path / "people.csv"
    audience.write_text("phone,region\n" + "".join(f"0912{n:06d},{79 if n % 2 else 1:02d}\n"
                                                  for n in range(1, 7)))  # fmt: skip
    created = await Campaigns(settings, client).create(plan, audience, local_principal())
    return created.id


async def reach(settings: Settings, client: RedisClient, campaign_id: str, people: range) -> None:
    """The engine records the provider accepting the campaign's message to `people`."""
    messages = [
        Message(str(n), e164(n), "x", extra={REGION: "79" if n % 2 else "01"}) for n in people
    ]
    controls = Controls(client, settings.namespace)
    await controls.reached(campaign_id, messages, list(range(len(messages))))


async def inbound(settings: Settings, client: RedisClient, replies: list[tuple[int, str]]) -> None:
    """Replies as the SMSC delivers them, through the worker's event writer."""
    writer = EventWriter(client, settings.namespace, settings.events, Metrics())
    for n, text in replies:
        writer.inbound(Inbound(route="sms", sender=f"84912{n:06d}", text=text, recipient="8088"))
    await writer.drained()


async def test_replies_are_matched_once_and_counted_per_option_and_region(
    settings, redis_client, tmp_path
):
    campaign_id = await campaign(settings, redis_client, tmp_path)
    await reach(settings, redis_client, campaign_id, range(1, 7))
    await inbound(
        settings,
        redis_client,
        [
            (1, "1"),
            (2, "Khỏe"),  # diacritics and case do not matter
            (3, "đau nhẹ."),
            (4, "Cho hỏi tiêm mũi 2 khi nào?"),  # kept as unparsed, and a hotline message
            (5, "HUY"),  # an opt-out keyword: never an answer
            (9, "1"),  # nobody asked number 9 anything
        ],
    )
    followups = Followups(settings, redis_client)
    report = await followups.sync()
    assert report.to_json() == {
        "read": 6, "answers": 3, "changed": 0, "unparsed": 1, "urgent": 0, "other": 2,
    }  # fmt: skip
    # read again from the start (a crash before the cursor moved): nothing counted twice
    await redis_client.delete(followups.cursor_key)
    again = await followups.sync()
    assert (again.read, again.answers, again.unparsed) == (6, 0, 0)
    assert (await followups.sync()).read == 0

    summary = await followups.summary(campaign_id)
    assert summary["question"] == "day1"
    assert [(o["code"], o["count"]) for o in summary["options"]] == [("1", 2), ("2", 1), ("3", 0)]
    assert summary["by_region"] == {"01": {"1": 1}, "79": {"1": 1, "2": 1}}
    assert summary["answered"] == 3
    assert summary["unparsed_count"] == 1
    assert summary["unparsed"][0]["text"] == "Cho hỏi tiêm mũi 2 khi nào?"
    assert summary["unparsed"][0]["phone"] != e164(4)  # masked

    # the inbox leaves answers alone, takes the unparsed text and the stranger's "1"
    inbox = await Inbox(settings, redis_client).sync()
    assert (inbox.answers, inbox.messages, inbox.optouts) == (3, 2, 1)


async def test_a_later_answer_replaces_the_earlier(settings, redis_client, tmp_path):
    campaign_id = await campaign(settings, redis_client, tmp_path)
    await reach(settings, redis_client, campaign_id, range(1, 2))
    followups = Followups(settings, redis_client)
    await inbound(settings, redis_client, [(1, "1")])
    await followups.sync()
    await inbound(settings, redis_client, [(1, "2")])
    report = await followups.sync()
    assert (report.answers, report.changed) == (1, 1)
    summary = await followups.summary(campaign_id)
    assert [o["count"] for o in summary["options"]] == [0, 1, 0]
    assert summary["by_region"] == {"79": {"2": 1}}
    assert summary["answered"] == 1


async def test_an_urgent_answer_opens_an_urgent_case(settings, redis_client, tmp_path):
    campaign_id = await campaign(settings, redis_client, tmp_path)
    await reach(settings, redis_client, campaign_id, range(1, 3))
    await inbound(settings, redis_client, [(1, "2"), (2, "1")])
    followups = Followups(settings, redis_client)
    await followups.sync()
    await inbound(settings, redis_client, [(1, "Khó thở")])
    report = await followups.sync()
    assert report.urgent == 1
    inbox = Inbox(settings, redis_client)
    cases = await inbox.cases()
    assert len(cases) == 1
    case = cases[0]
    assert case.urgent and case.phone == e164(1) and case.state == "open"
    _, log = await inbox.case(case.id)
    assert campaign_id in log[0]["text"] and "Khó thở" in log[0]["text"]
    assert "earlier answer 2" in log[0]["text"]
    # the answer itself does not become a second message of the case
    assert (await inbox.sync()).answers == 3
    assert (await inbox.case(case.id))[0].messages == 1


async def test_answers_after_the_window_closed_are_not_counted(settings, redis_client, tmp_path):
    campaign_id = await campaign(settings, redis_client, tmp_path)
    # asked four days ago, with a 72 h window
    asked = time.time() - 4 * DAY_SECONDS
    at_ms = int(asked * 1000)
    closes_ms = at_ms + 72 * 3600 * 1000
    await redis_client.hset(
        asked_key(settings.namespace, asked), e164(1), f"{campaign_id}|{at_ms}|{closes_ms}|1|79"
    )
    await inbound(settings, redis_client, [(1, "1")])
    report = await Followups(settings, redis_client).sync()
    assert (report.answers, report.other) == (0, 1)
    summary = await Followups(settings, redis_client).summary(campaign_id)
    assert summary["answered"] == 0 and summary["options"][0]["count"] == 0
    assert (await Inbox(settings, redis_client).sync()).messages == 1  # the hotline's now


async def test_a_campaign_without_a_question_opens_none(settings, redis_client, tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.split("[followup]")[0])
    audience = tmp_path / "people.csv"
    audience.write_text("phone\n0912000001\n")
    created = await Campaigns(settings, redis_client).create(plan, audience, local_principal())
    await reach(settings, redis_client, created.id, range(1, 2))
    assert not await redis_client.exists(asked_key(settings.namespace, time.time()))


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ('[{ code = "1", label = "a", keywords = ["Hủy"] }]', "opt-out keyword"),
        ('[{ code = "1", label = "a" }, { code = "2", label = "b", keywords = ["1"] }]',
         "keyword of both"),
        ("[]", "options"),
    ],
)  # fmt: skip
def test_bad_questions_are_refused(options: str, error: str) -> None:
    import tomllib

    text = PLAN.split("options = [")[0] + f"options = {options}\n"
    with pytest.raises(PlanError, match=error):
        Plan.from_mapping(tomllib.loads(text))


def test_replies_match_options_with_or_without_diacritics() -> None:
    import tomllib

    followup = Plan.from_mapping(tomllib.loads(PLAN)).followup
    assert followup is not None
    assert [followup.match(t) for t in ("3", "SỐT CAO!", " kho  tho ")] == [followup.options[2]] * 3
    assert followup.match("sot") is None
    assert followup.match("HUY") is None


async def test_the_command_line(settings, redis_client, redis_url, namespace, tmp_path):
    import asyncio
    import os
    import subprocess
    import sys

    import orjson

    campaign_id = await campaign(settings, redis_client, tmp_path)
    await reach(settings, redis_client, campaign_id, range(1, 4))
    await inbound(settings, redis_client, [(1, "1"), (2, "sốt cao"), (3, "?")])
    config = tmp_path / "loa.toml"
    config.write_text(
        f'redis_url = "{redis_url}"\nnamespace = "{namespace}"\ndata_dir = "{tmp_path}/data"\n'
        f'[routes.sms]\nadapter = "file"\noptions = {{ path = "{tmp_path}/sink.jsonl" }}\n'
        '[channels.sms]\ndefault = "sms"\n',
        encoding="utf-8",
    )

    def loa(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
        return subprocess.run(
            [sys.executable, "-m", "loa.cli", *args, "-c", str(config)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    synced = await asyncio.to_thread(loa, "followups", "sync", "--json")
    assert synced.returncode == 0, synced.stderr
    assert orjson.loads(synced.stdout)["urgent"] == 1
    shown = await asyncio.to_thread(loa, "campaign", "answers", campaign_id, "--json")
    assert shown.returncode == 0, shown.stderr
    summary = orjson.loads(shown.stdout)
    assert [o["count"] for o in summary["options"]] == [1, 0, 1]
    assert summary["unparsed_count"] == 1
    table = await asyncio.to_thread(loa, "campaign", "answers", campaign_id, "--csv")
    assert "79,1,Binh thuong,1" in table.stdout and "01,3,Sot cao / kho tho,1" in table.stdout


async def test_the_api_summarises_answers_and_masks_numbers_for_viewers(
    settings, redis_url, tmp_path
):
    import httpx

    from loa.access.identity import Role, program
    from loa.api import create_app
    from loa.engine.connection import connect

    app = create_app(settings, lambda: connect(redis_url))
    async with app.router.lifespan_context(app):
        ctx = app.state.loa
        redis = ctx.services.redis
        minter = program("boss", Role.ADMIN)
        tokens = {
            role: (await ctx.services.tokens.create(f"{role.label}-1", role, minter))[0]
            for role in (Role.VIEWER, Role.OPERATOR)
        }

        def auth(role: Role) -> dict[str, str]:
            return {"Authorization": f"Bearer {tokens[role]}"}

        campaign_id = await campaign(settings, redis, tmp_path)
        await reach(settings, redis, campaign_id, range(1, 3))
        await inbound(settings, redis, [(1, "2"), (2, "mấy giờ?")])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://loa.test") as client:
            refused = await client.post("/api/v1/followups/sync", headers=auth(Role.VIEWER))
            assert refused.status_code == 403
            synced = await client.post("/api/v1/followups/sync", headers=auth(Role.OPERATOR))
            assert (synced.json()["answers"], synced.json()["unparsed"]) == (1, 1)
            url = f"/api/v1/campaigns/{campaign_id}/answers"
            seen = (await client.get(url, headers=auth(Role.VIEWER))).json()
            assert [o["count"] for o in seen["options"]] == [0, 1, 0]
            assert seen["by_region"] == {"79": {"2": 1}}
            assert seen["unparsed"][0]["phone"] == "+84******002"
            full = (await client.get(url, headers=auth(Role.OPERATOR))).json()
            assert full["unparsed"][0]["phone"] == e164(2)
            missing = await client.get("/api/v1/campaigns/20260101-abcdef/answers",
                                       headers=auth(Role.VIEWER))  # fmt: skip
            assert missing.status_code == 404


async def test_a_reply_faster_than_the_providers_answer_is_still_an_answer(
    settings, redis_client, tmp_path
):
    """The question counts as asked when the chunk was sent: a citizen who answers before the
    worker has read the provider's acceptance is answering it all the same."""
    campaign_id = await campaign(settings, redis_client, tmp_path)
    sent_at = time.time() - 2  # the chunk went out two seconds ago; the provider was slow
    await inbound(settings, redis_client, [(1, "1")])  # the reply came meanwhile
    message = Message("1", e164(1), "x", extra={REGION: "79"})
    await Controls(redis_client, settings.namespace).reached(campaign_id, [message], [0], sent_at)
    report = await Followups(settings, redis_client).sync()
    assert (report.answers, report.other) == (1, 0)
