"""Channel fallback: what the planner gives each message for its next channels, on real Redis,
and `next_message`, which the engine calls when a channel cannot reach the person."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import approved
from loa.campaigns.service import Campaigns
from loa.engine.envelope import unpack
from loa.engine.keys import shard_keys
from loa.fallback import AFTER, ON_FAILURE, next_message
from loa.message import Message
from loa.settings import Settings

pytestmark = pytest.mark.anyio

PLAN = """
name = "fallback"
lane = "high"
channels = ["zalo", "email", "sms"]
sms_ascii = true
[templates]
sms = "Chào {{ name }}: tiêm vắc-xin"
zalo = { template_id = "4321", data = { name = "{{ name }}" } }
email = { subject = "Lịch tiêm", body = "Chào {{ name }}" }
"""

AUDIENCE = """phone,name,zalo_id,email
0961111111,Hoa,z1,hoa@example.org
0912222222,Lan,z2,
0903333333,An,,an@example.org
0964444444,Bình,,
0965555555,,z5,x@example.org
0966666666,Mai, ,\x20
"""

SMS_ROUTES = {"viettel": "sms-a"}


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    route = {"adapter": "null", "shards": 2}
    return make_settings(
        routes={name: route for name in ("sms-a", "sms-b", "zalo-r", "email-r")},
        channels={
            "sms": {"default": "sms-b", "carriers": SMS_ROUTES},
            "zalo": {"default": "zalo-r"},
            "email": {"default": "email-r"},
        },
    )


async def planned(
    settings: Settings, client: Any, tmp_path: Path, plan: str
) -> tuple[Any, dict[str, Message]]:
    """Launch `plan` over AUDIENCE; the report and every queued message by its id."""
    (tmp_path / "p.toml").write_text(plan, encoding="utf-8")
    (tmp_path / "a.csv").write_text(AUDIENCE, encoding="utf-8")
    campaigns = Campaigns(settings, client)
    campaign = await approved(campaigns, tmp_path / "p.toml", tmp_path / "a.csv")
    report = await campaigns.launch(campaign.id)
    found: dict[str, Message] = {}
    for route, limits in settings.routes.items():
        for keys in shard_keys(settings.namespace, route, limits.shards):
            for stream in keys.streams():
                for _, fields in await client.xrange(stream):
                    batch = unpack(fields[b"b"])
                    for message in batch.messages:
                        assert message.id not in found
                        found[message.id] = message
                        message.extra = {**(message.extra or {}), "@route": route}
    return report, found


def route_of(message: Message) -> str:
    assert message.extra is not None
    return str(message.extra.pop("@route"))


EMAIL_HOA = {"channel": "email", "subject": "Lịch tiêm"}
HOA = {"person": "+84961111111"}  # an e-mail names the person's phone for the frequency memory


async def test_each_message_carries_its_remaining_channels(settings, redis_client, tmp_path):
    report, messages = await planned(settings, redis_client, tmp_path, PLAN)
    assert (report.total, report.queued, report.invalid) == (6, 5, 1)
    reason = "templates.zalo.data.name: field 'name' is missing or empty for this recipient"
    assert report.errors == [(6, reason)]
    assert report.by_channel == {"zalo": 2, "email": 1, "sms": 2}
    assert report.by_route == {"zalo-r": 2, "email-r": 1, "sms-a": 2}

    hoa = messages["2"]
    assert route_of(hoa) == "zalo-r"
    assert hoa.to == "+84961111111", "Zalo ZNS addresses people by phone"
    assert hoa.extra == {
        "channel": "zalo",
        "template_id": "4321",
        "data": {"name": "Hoa"},
        "next": [
            ["email", "email-r", "hoa@example.org", "Chào Hoa", 1, {**EMAIL_HOA, **HOA}],
            ["sms", "sms-a", "+84961111111", "Chao Hoa: tiem vac-xin", 1, None],
        ],
    }
    lan = messages["3"]
    assert route_of(lan) == "zalo-r"
    assert lan.extra is not None
    assert lan.extra["next"] == [
        ["sms", "sms-b", "+84912222222", "Chao Lan: tiem vac-xin", 1, None]
    ], "Vinaphone has no route of its own: the SMS default; no email address, no email"
    an = messages["4"]
    assert route_of(an) == "email-r"
    assert (an.to, an.body, an.extra) == (
        "an@example.org",
        "Chào An",
        {
            **EMAIL_HOA,
            "person": "+84903333333",  # the frequency memory knows people by phone
            "next": [["sms", "sms-b", "+84903333333", "Chao An: tiem vac-xin", 1, None]],
        },
    )
    for line, name in (("5", "Binh"), ("7", "Mai")):  # the last channel: nothing further
        message = messages[line]
        assert route_of(message) == "sms-a"
        assert (message.body, message.extra) == (f"Chao {name}: tiem vac-xin", {})


async def test_next_message_walks_the_channels_in_plan_order(settings, redis_client, tmp_path):
    _, messages = await planned(settings, redis_client, tmp_path, PLAN)
    hoa = messages["2"]
    route_of(hoa)
    step = next_message(hoa)
    assert step is not None
    route, email = step
    assert route == "email-r"
    assert email == Message(
        "2",
        "hoa@example.org",
        "Chào Hoa",
        1,
        {
            **EMAIL_HOA,
            **HOA,
            "next": [["sms", "sms-a", "+84961111111", "Chao Hoa: tiem vac-xin", 1, None]],
        },
    )
    step = next_message(email)
    assert step == ("sms-a", Message("2", "+84961111111", "Chao Hoa: tiem vac-xin", 1, None))
    assert next_message(step[1]) is None
    assert hoa.extra is not None and len(hoa.extra["next"]) == 2, "the original is unchanged"


async def test_single_channel_plans_carry_nothing_extra(settings, redis_client, tmp_path):
    plan = PLAN.replace('["zalo", "email", "sms"]', '["sms"]').split("zalo =")[0]
    report, messages = await planned(settings, redis_client, tmp_path, plan)
    assert report.queued == 5, "the row without a name is invalid for the SMS template too"
    for message in messages.values():
        assert route_of(message) in ("sms-a", "sms-b")
        assert message.extra == {}
        assert next_message(message) is None


@pytest.mark.parametrize(
    "extra",
    [
        None,
        {},
        {"next": []},
        {"next": "sms"},
        {"next": [["sms", "sms-a", "+84961111111", "text"]]},  # too short
        {"next": [["sms", "", "+84961111111", "text", 1, None]]},  # no route
        {"next": [["sms", "sms-a", "", "text", 1, None]]},  # nobody to send to
        {"next": [["sms", "sms-a", "+84961111111", None, 1, None]]},
        {"next": [["sms", "sms-a", "+84961111111", "text", "1", None]]},
    ],
)
def test_no_next_channel_or_a_malformed_one_is_none(extra: dict[str, Any] | None) -> None:
    assert next_message(Message("2", "+84961111111", "x", 1, extra)) is None


def test_next_message_keeps_the_entry_extra_and_the_rest() -> None:
    rest = [["sms", "sms-a", "+84961111111", "text", 2, None]]
    message = Message(
        "9",
        "+84961111111",
        "",
        1,
        {
            "channel": "zalo",
            "next": [
                ["fcm", "push", "token-1", "body", 1, {"channel": "fcm", "title": "T"}],
                *rest,
            ],
        },
    )
    assert next_message(message) == (
        "push",
        Message("9", "token-1", "body", 1, {"channel": "fcm", "title": "T", "next": rest}),
    )


async def test_email_campaigns_deduplicate_by_email_address(settings, redis_client, tmp_path):
    # a family, or an office, shares one phone number: each address still gets the message
    plan = (
        'name = "e-mail"\nlane = "normal"\nchannels = ["email"]\n'
        '[templates]\nemail = { subject = "Lịch tiêm", body = "Chào {{ name }}" }\n'
    )
    rows = [f"0961111111,Người {n},,person{n}@example.org" for n in range(40)]
    rows += ["0962222222,Lại,,Person3@Example.org", "0963333333,Khác,,other@example.org"]
    (tmp_path / "p.toml").write_text(plan, encoding="utf-8")
    (tmp_path / "a.csv").write_text("phone,name,zalo_id,email\n" + "\n".join(rows) + "\n")
    campaigns = Campaigns(settings, redis_client)
    report = await campaigns.validate(tmp_path / "p.toml", tmp_path / "a.csv")
    assert (report.total, report.queued, report.duplicate) == (42, 41, 1)
    assert report.by_channel == {"email": 41}


async def test_the_plan_fallback_policy_rides_with_every_channel_but_the_last(
    settings, redis_client, tmp_path
):
    plan = PLAN.replace(
        "sms_ascii = true\n",
        'sms_ascii = true\nfallback_after = { zalo = "10m" }\nfallback_on_failure = false\n',
    )
    _, messages = await planned(settings, redis_client, tmp_path, plan)
    hoa = messages["2"]
    assert hoa.extra is not None
    assert (hoa.extra[AFTER], hoa.extra[ON_FAILURE]) == (600_000, False)
    email, sms = hoa.extra["next"]
    assert email[5] == {**EMAIL_HOA, **HOA, ON_FAILURE: False}, "email waits for no receipt"
    assert sms[5] is None, "the last channel has nothing to fall back to"
    lan = messages["3"]
    assert lan.extra is not None and lan.extra[AFTER] == 600_000
    assert lan.extra["next"][0][5] is None
    step = next_message(hoa)
    assert step is not None and step[1].extra is not None
    assert AFTER not in step[1].extra and step[1].extra[ON_FAILURE] is False
    for line in ("5", "7"):  # SMS only: no next channel, no policy
        message = messages[line]
        route_of(message)
        assert message.extra == {}
