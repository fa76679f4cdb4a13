"""Follow-up reminders on real Redis: sent once to whoever has not answered, counted exactly."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_followups import PLAN, e164, inbound

from helpers import read_sink, running, until
from loa.access.identity import Role, local_principal, program
from loa.api import create_app
from loa.campaigns.plan import Plan
from loa.campaigns.service import Campaigns
from loa.engine.connection import RedisClient, connect
from loa.engine.control import DAY_SECONDS, REGION, Controls, reminders_key, reminding_key
from loa.engine.envelope import unpack
from loa.engine.keys import shard_keys
from loa.engine.queue import FIELD
from loa.errors import PlanError
from loa.followups.reminders import Reminders, reminder_id
from loa.followups.service import Followups
from loa.message import Lane, Message
from loa.privacy.retention import chores
from loa.settings import Settings

pytestmark = pytest.mark.anyio

REMINDER = 'remind_after = "24h"\nreminder = "Bo Y te: ban chua tra loi. Soan 1, 2 hoac 3."\n'
REMINDING = PLAN.replace('window = "72h"\n', 'window = "72h"\n' + REMINDER)
HOUR_MS = 3_600_000


@pytest.fixture
def redis_url(service_or_cluster_url: str) -> str:
    return service_or_cluster_url


@pytest.fixture
def settings(make_settings: Any, tmp_path: Path) -> Settings:
    route = {"adapter": "file", "options": {"path": str(tmp_path / "sink" / "{route}.jsonl")}}
    return make_settings(  # type: ignore[no-any-return]
        routes={"sms": route}, channels={"sms": {"default": "sms"}}
    )


async def reminding_campaign(settings: Settings, client: RedisClient, tmp_path: Path) -> str:
    plan = tmp_path / "plan.toml"
    plan.write_text(REMINDING)
    audience = tmp_path / "people.csv"
    audience.write_text("phone,region\n" + "".join(f"0912{n:06d},79\n" for n in range(1, 9)))
    return (await Campaigns(settings, client).create(plan, audience, local_principal())).id


async def reach(settings: Settings, client: RedisClient, campaign_id: str, people: range) -> None:
    messages = [Message(str(n), e164(n), "x", extra={REGION: "79"}) for n in people]
    await Controls(client, settings.namespace).reached(
        campaign_id, messages, list(range(len(messages)))
    )


async def queued(settings: Settings, client: RedisClient) -> list[Message]:
    """Every message waiting in the SMS route's normal lane."""
    found: list[Message] = []
    for keys in shard_keys(settings.namespace, "sms", settings.route("sms").shards):
        entries: Any = await client.xrange(keys.stream(Lane.NORMAL))
        for _, fields in entries:
            found += unpack(fields[FIELD]).messages
    return found


async def test_whoever_has_not_answered_is_reminded_once(
    settings, redis_client, redis_url, tmp_path
):
    campaign_id = await reminding_campaign(settings, redis_client, tmp_path)
    await reach(settings, redis_client, campaign_id, range(1, 7))
    due: Any = await redis_client.zrange(reminders_key(settings.namespace, campaign_id), 0, -1)
    assert len(due) == 6
    assert campaign_id.encode() in await redis_client.smembers(reminding_key(settings.namespace))
    # 1 and 2 answer, 3 writes something that is no answer (it still counts as not answered),
    # 8 (reached too) opts out: no reminder for them
    await reach(settings, redis_client, campaign_id, range(8, 9))
    await inbound(settings, redis_client, [(1, "1"), (3, "bao gio tiem?"), (8, "STOP")])
    await Followups(settings, redis_client).sync()
    # 2 answers after the last sync: the reminders store it before they look
    await inbound(settings, redis_client, [(2, "Khỏe")])

    reminders = Reminders(settings)
    now = int(time.time() * 1000)
    assert (await reminders.tick(redis_client, now + HOUR_MS)).to_json() == {
        "sent": 0, "skipped": 0,
    }  # fmt: skip
    assert await queued(settings, redis_client) == []
    done = await reminders.tick(redis_client, now + 25 * HOUR_MS)
    assert (done.sent, done.skipped) == (4, 3)
    sent = await queued(settings, redis_client)
    assert sorted(m.to for m in sent) == [e164(n) for n in range(3, 7)]
    assert {m.body for m in sent} == {"Bo Y te: ban chua tra loi. Soan 1, 2 hoac 3."}
    assert (await reminders.tick(redis_client, now + 26 * HOUR_MS)).sent == 0, "once each"

    # a crash after the reminder was queued and before it was counted: queued once, counted once
    await reach(settings, redis_client, campaign_id, range(7, 8))
    reminders._bind(redis_client)
    await reminders._queue(campaign_id, e164(7), "Bo Y te: ban chua tra loi. Soan 1, 2 hoac 3.")
    again = await Reminders(settings).tick(redis_client, now + 30 * HOUR_MS)
    assert (again.sent, again.skipped) == (1, 0)
    sent = await queued(settings, redis_client)
    assert [m.id for m in sent].count(reminder_id(campaign_id, e164(7))) == 1
    assert len(sent) == 5 and all(e164(7) not in m.id for m in sent), "no number in an id"

    summary = await Followups(settings, redis_client).summary(campaign_id)
    assert summary["reminder"] == {"after": "1d", "sent": 5, "skipped": 3}
    assert await shown_by_the_api(settings, redis_url, campaign_id) == summary["reminder"]


async def shown_by_the_api(settings: Settings, redis_url: str, campaign_id: str) -> Any:
    """The reminder's counts as a viewer reads them from the API."""
    app = create_app(settings, lambda: connect(redis_url))
    async with app.router.lifespan_context(app):
        services = app.state.loa.services
        minter = program("boss", Role.ADMIN)
        token = (await services.tokens.create("viewer-1", Role.VIEWER, minter))[0]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://loa.test") as client:
            answer = await client.get(
                f"/api/v1/campaigns/{campaign_id}/answers",
                headers={"Authorization": f"Bearer {token}"},
            )
    assert answer.status_code == 200, answer.text
    return answer.json()["reminder"]


async def test_no_reminder_after_the_window_or_for_a_cancelled_campaign(
    settings, redis_client, tmp_path
):
    campaign_id = await reminding_campaign(settings, redis_client, tmp_path)
    await reach(settings, redis_client, campaign_id, range(1, 3))
    now = int(time.time() * 1000)
    # the chore was stopped for four days: the 72 h window has closed, nobody is reminded
    late = await Reminders(settings).tick(redis_client, now + 4 * DAY_SECONDS * 1000)
    assert (late.sent, late.skipped) == (0, 2)
    assert await queued(settings, redis_client) == []

    # someone reached by a Zalo id that is no number: no SMS can remind them
    zalo = Message("z", "zalo-user-17", "x", extra={REGION: "79"})
    await Controls(redis_client, settings.namespace).reached(campaign_id, [zalo], [0])
    ids = await Reminders(settings).tick(redis_client, now + 25 * HOUR_MS)
    assert (ids.sent, ids.skipped) == (0, 1)
    assert await queued(settings, redis_client) == []

    other = await reminding_campaign(settings, redis_client, tmp_path / "..")
    await reach(settings, redis_client, other, range(5, 7))
    await Campaigns(settings, redis_client).store.update(other, {"state": "cancelled"})
    done = await Reminders(settings).tick(redis_client, now + 25 * HOUR_MS)
    assert (done.sent, done.skipped) == (0, 0)
    assert not await redis_client.exists(reminders_key(settings.namespace, other))
    assert other.encode() not in await redis_client.smembers(reminding_key(settings.namespace))


def test_the_supervisor_runs_the_reminders(settings) -> None:
    owners = [type(getattr(chore, "__self__", None)) for chore in chores(settings)]
    assert Reminders in owners


@pytest.mark.parametrize(
    ("reminder", "error"),
    [
        ('remind_after = "24h"\n', "go together"),
        ('reminder = "Tra loi nhe"\n', "go together"),
        ('remind_after = "72h"\nreminder = "Tra loi nhe"\n', "must end before the window"),
        ('remind_after = "0s"\nreminder = "Tra loi nhe"\n', "is zero"),
        ('remind_after = "1h"\nreminder = "{{ name }} oi, tra loi nhe"\n', "cannot use"),
    ],
)
def test_bad_reminders_are_refused(reminder: str, error: str) -> None:
    text = PLAN.replace('window = "72h"\n', 'window = "72h"\n' + reminder)
    with pytest.raises(PlanError, match=error):
        Plan.from_mapping(tomllib.loads(text))


async def test_a_worker_sends_the_reminders(settings, redis_client, tmp_path):
    campaign_id = await reminding_campaign(settings, redis_client, tmp_path)
    await reach(settings, redis_client, campaign_id, range(1, 3))
    now = int(time.time() * 1000)
    assert (await Reminders(settings).tick(redis_client, now + 25 * HOUR_MS)).sent == 2
    sink = tmp_path / "sink"
    async with running(settings, redis_client):
        await until(lambda_async(lambda: len(read_sink(sink)) >= 2), 30, "the reminders sent")
    lines = read_sink(sink)
    assert sorted(line["to"] for line in lines) == [e164(1), e164(2)]
    assert {line["id"] for line in lines} == {reminder_id(campaign_id, e164(n)) for n in (1, 2)}


def lambda_async(check: Any) -> Any:
    async def wrapped() -> bool:
        return bool(check())

    return wrapped
