"""The control API over ASGI on the local Redis: roles, two-person rule, audit, hostile input."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import itertools
import multiprocessing
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest
import redis
from fastapi import FastAPI

from helpers import REPO
from loa.access.identity import Role, program
from loa.access.tokens import Tokens
from loa.api import create_app
from loa.api.app import openapi_json
from loa.api.context import ApiContext
from loa.engine.connection import connect
from loa.engine.embedded import free_port
from loa.engine.keys import inbound_key
from loa.settings import Settings

pytestmark = pytest.mark.anyio

ROOT = REPO
EMERGENCY_PLAN = ROOT / "examples" / "emergency-flood.plan.toml"
PLAN = (
    'name = "Khuyến cáo COVID"\nlane = "normal"\nchannels = ["sms"]\nsms_ascii = true\n'
    '[templates]\nsms = "Bộ Y tế: {{ name }} ơi, hãy tiêm vắc-xin."\n'
).encode()
TEST_NUMBERS = [f"09120000{n:02d}" for n in range(1, 11)]
THRESHOLD = 5
UPLOAD_LIMIT_MB = 0.05  # 52 kB
IDENTITIES = ("none", "bad", "revoked", "viewer", "operator", "approver", "admin")
WEBHOOK_SECRET = "push-webhook-secret"
_names = itertools.count()
MINTER = program("test-bootstrap", Role.ADMIN)  # who minted the fixture's tokens


@pytest.fixture
def redis_url(service_url: str) -> str:
    """The API is Redis-agnostic: the local service is enough (the engine tests cover both)."""
    return service_url


def people(count: int, phones: list[str] | None = None) -> bytes:
    """An audience CSV of `count` rows (Vietnamese mobiles unless `phones` are given)."""
    numbers = phones or [f"09{n % 10}{n:07d}" for n in range(count)]
    rows = "".join(f"{phone},Người {n},49,Hội An\n" for n, phone in enumerate(numbers[:count]))
    return ("phone,name,region,district\n" + rows).encode()


def upload(plan: bytes = PLAN, audience: bytes | None = None, name: str = "people.csv") -> Any:
    return {
        "plan": ("advice.plan.toml", plan, "application/toml"),
        "audience": (name, people(3) if audience is None else audience, "text/csv"),
    }


@dataclass
class Api:
    """The client, a token per role, and the app's own services for set-ups."""

    client: httpx.AsyncClient
    app: FastAPI
    ctx: ApiContext
    tokens: dict[str, str]
    tmp: Path

    def auth(self, who: str) -> dict[str, str]:
        if who == "none":
            return {}
        if who == "bad":
            return {"Authorization": "Bearer loa_not-a-token"}
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def token(self, role: Role = Role.VIEWER) -> tuple[str, str]:
        name = f"person-{next(_names)}"
        token, _ = await self.ctx.services.tokens.create(name, role, MINTER)
        return name, token

    async def campaign(self, state: str = "draft", count: int = 3) -> str:
        """A campaign to `count` people made through the service (not the API), moved to
        `state`."""
        plan, audience = self.tmp / "seed.plan.toml", self.tmp / "seed.csv"
        plan.write_bytes(PLAN)
        audience.write_bytes(people(count))
        campaigns = self.ctx.services.campaigns
        campaign = await campaigns.create(plan, audience, program("someone", Role.OPERATOR))
        if state != "draft":
            await campaigns.approve(campaign.id, program("second", Role.APPROVER))
        for action in {"running": ["start"], "paused": ["start", "pause"]}.get(state, []):
            await campaigns.store.apply(campaign.id, action)
        return campaign.id

    async def audit(self, action: str) -> list[dict[str, Any]]:
        response = await self.client.get("/api/v1/audit?limit=1000", headers=self.auth("admin"))
        return [item for item in response.json()["items"] if item["action"] == action]


@pytest.fixture
async def api(make_settings, redis_url, tmp_path) -> AsyncIterator[Api]:
    settings = make_settings(
        routes={
            "sms": {"adapter": "file", "options": {"path": str(tmp_path / "sink.jsonl")}},
            "push": {"adapter": "null"},
        },
        channels={"sms": {"default": "sms"}, "fcm": {"default": "push"}},
        api={
            "approval_threshold": THRESHOLD,
            "test_numbers": TEST_NUMBERS,
            "upload_limit_mb": UPLOAD_LIMIT_MB,
            "webhook_secrets": {"push": WEBHOOK_SECRET},
        },
    )
    async with serving(settings, redis_url, tmp_path) as api:
        yield api


@contextlib.asynccontextmanager
async def serving(settings: Settings, redis_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The app on `settings`, a client for it, and a token per role (and a revoked one)."""
    app = create_app(settings, lambda: connect(redis_url))
    async with app.router.lifespan_context(app):
        ctx: ApiContext = app.state.loa
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4567))
        async with httpx.AsyncClient(transport=transport, base_url="http://loa.test") as client:
            tokens = {}
            for role in Role:
                tokens[role.label], _ = await ctx.services.tokens.create(role.label, role, MINTER)
            tokens["revoked"], _ = await ctx.services.tokens.create("gone", Role.ADMIN, MINTER)
            await ctx.services.tokens.revoke("gone")
            yield Api(client, app, ctx, tokens, tmp_path)


def error_of(response: httpx.Response) -> str:
    """The error code, after checking the one error shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"], body
    return str(body["error"]["code"])


# --- who may do what ------------------------------------------------------------------------

Prepare = Callable[[Api], Awaitable[dict[str, Any]]]


@dataclass
class Case:
    method: str
    path: str  # as the app declares it
    role: Role | None  # None: no token needed
    prepare: Prepare
    ok: int = 200


def at(url: str, **extra: Any) -> Prepare:
    async def prepare(api: Api) -> dict[str, Any]:
        return {"url": url, **extra}

    return prepare


def on_campaign(suffix: str, state: str = "draft") -> Prepare:
    async def prepare(api: Api) -> dict[str, Any]:
        return {"url": f"/api/v1/campaigns/{await api.campaign(state)}{suffix}"}

    return prepare


async def new_token(api: Api) -> dict[str, Any]:
    return {"url": "/api/v1/tokens", "json": {"name": f"new-{next(_names)}", "role": "viewer"}}


async def old_token(api: Api) -> dict[str, Any]:
    name, _ = await api.token()
    return {"url": f"/api/v1/tokens/{name}"}


async def files(api: Api) -> dict[str, Any]:
    return {"files": upload()}


def with_files(url: str) -> Prepare:
    async def prepare(api: Api) -> dict[str, Any]:
        return {"url": url, **(await files(api))}

    return prepare


async def signed_receipt(api: Api) -> dict[str, Any]:
    """A receipt callback signed with the route's secret: bearer tokens play no part in it."""
    body = orjson.dumps({"receipts": [{"id": f"id-{next(_names)}", "delivered": True}]})
    stamp = str(int(time.time()))
    signed = stamp.encode() + b"." + body
    signature = hmac.new(WEBHOOK_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return {
        "url": "/api/v1/webhooks/push",
        "content": body,
        "headers": {"X-Loa-Timestamp": stamp, "X-Loa-Signature": f"sha256={signature}"},
    }


def cap_ack(url: str) -> Prepare:
    """A CAP Ack of its own identifier (an alert is taken once): recorded, nothing sent."""

    async def prepare(api: Api) -> dict[str, Any]:
        body = (
            '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
            f"<identifier>ack-{next(_names)}</identifier><sender>test@loa</sender>"
            "<sent>2026-12-04T08:00:00+07:00</sent><status>Actual</status>"
            "<msgType>Ack</msgType><scope>Public</scope></alert>"
        )
        headers = {"Content-Type": "application/cap+xml"}
        return {"url": url, "content": body.encode(), "headers": headers}

    return prepare


NUMBER = {"json": {"addresses": ["0912345678"]}}
SITES = (
    b"site_id,name,province,address,date,start,end,capacity\n"
    b"A,Tram A,79,x,2031-03-03,08:00,11:00,2\n"
)
REGISTRANTS = b"phone,priority_group,registered_at,site_id\n0912000001,1,2030-11-01,A\n"


def appointment_files() -> dict[str, Any]:
    return {
        "files": {
            "sites": ("sites.csv", SITES, "text/csv"),
            "people": ("people.csv", REGISTRANTS, "text/csv"),
        }
    }


async def allocate_files(api: Api) -> dict[str, Any]:
    return {"url": "/api/v1/appointments/drive-1/allocate?from=2031-03-01", **appointment_files()}


def on_drive(suffix: str, **extra: Any) -> Prepare:
    """A drive allocated through the service, then this request on it."""

    async def prepare(api: Api) -> dict[str, Any]:
        from loa.appointments import Appointments

        sites, registrants = api.tmp / "sites.csv", api.tmp / "registrants.csv"
        sites.write_bytes(SITES)
        registrants.write_bytes(REGISTRANTS)
        service = Appointments(api.ctx.settings, api.ctx.services.redis)
        await service.allocate("drive-1", sites, registrants, first=dt.date(2031, 3, 1))
        return {"url": f"/api/v1/appointments/drive-1{suffix}", **extra}

    return prepare


def on_case(suffix: str, **extra: Any) -> Prepare:
    """A case in the inbox (a citizen's message taken in), then this request on it."""

    async def prepare(api: Api) -> dict[str, Any]:
        from loa.inbox import Inbox

        redis = api.ctx.services.redis
        await redis.xadd(
            inbound_key(api.ctx.settings.namespace),
            {"at": 1, "route": "sms", "channel": "sms", "sender": "84912000009", "text": "hi",
             "recipient": "", "optout": 0},
        )  # fmt: skip
        inbox = Inbox(api.ctx.settings, redis)
        await inbox.sync()
        case = (await inbox.cases())[0]
        return {"url": f"/api/v1/inbox/{case.id}{suffix}", **extra}

    return prepare


CASES = [
    Case("GET", "/healthz", None, at("/healthz")),
    Case("GET", "/readyz", None, at("/readyz")),
    # the dashboard page needs no token: it asks for one and sends it with every API call
    Case("GET", "/", None, at("/")),
    Case("GET", "/dashboard", None, at("/dashboard")),
    Case("GET", "/dashboard/{asset}", None, at("/dashboard/dashboard.js")),
    # webhooks: no token, no role; the provider's signature with the route's secret instead
    Case("POST", "/api/v1/webhooks/{route}", None, signed_receipt),
    Case("GET", "/api/v1/routes", Role.VIEWER, at("/api/v1/routes")),
    Case("POST", "/api/v1/campaigns", Role.OPERATOR, with_files("/api/v1/campaigns"), 201),
    Case(
        "POST",
        "/api/v1/campaigns/validate",
        Role.OPERATOR,
        with_files("/api/v1/campaigns/validate"),
    ),
    Case("GET", "/api/v1/campaigns", Role.VIEWER, at("/api/v1/campaigns")),
    Case("GET", "/api/v1/campaigns/{campaign_id}", Role.VIEWER, on_campaign("")),
    Case(
        "POST", "/api/v1/campaigns/{campaign_id}/validate", Role.OPERATOR, on_campaign("/validate")
    ),
    Case("POST", "/api/v1/campaigns/{campaign_id}/approve", Role.APPROVER, on_campaign("/approve")),
    Case("POST", "/api/v1/campaigns/{campaign_id}/launch", Role.OPERATOR, on_campaign("/launch")),
    Case(
        "POST",
        "/api/v1/campaigns/{campaign_id}/pause",
        Role.OPERATOR,
        on_campaign("/pause", "running"),
    ),
    Case(
        "POST",
        "/api/v1/campaigns/{campaign_id}/resume",
        Role.OPERATOR,
        on_campaign("/resume", "paused"),
    ),
    Case("POST", "/api/v1/campaigns/{campaign_id}/cancel", Role.OPERATOR, on_campaign("/cancel")),
    Case("GET", "/api/v1/campaigns/{campaign_id}/failed", Role.OPERATOR, on_campaign("/failed")),
    Case("GET", "/api/v1/campaigns/{campaign_id}/answers", Role.VIEWER, on_campaign("/answers")),
    Case(
        "GET", "/api/v1/campaigns/{campaign_id}/provinces", Role.VIEWER, on_campaign("/provinces")
    ),
    Case("POST", "/api/v1/followups/sync", Role.OPERATOR, at("/api/v1/followups/sync")),
    Case("POST", "/api/v1/cap", Role.OPERATOR, cap_ack("/api/v1/cap")),
    Case("POST", "/api/v1/cap/validate", Role.OPERATOR, cap_ack("/api/v1/cap/validate")),
    Case("GET", "/api/v1/whoami", Role.VIEWER, at("/api/v1/whoami")),
    Case("GET", "/api/v1/inbound", Role.OPERATOR, at("/api/v1/inbound")),
    Case("POST", "/api/v1/suppression/add", Role.OPERATOR, at("/api/v1/suppression/add", **NUMBER)),
    Case(
        "POST",
        "/api/v1/suppression/remove",
        Role.OPERATOR,
        at("/api/v1/suppression/remove", **NUMBER),
    ),
    Case(
        "POST",
        "/api/v1/suppression/check",
        Role.OPERATOR,
        at("/api/v1/suppression/check", **NUMBER),
    ),
    Case("GET", "/api/v1/audit", Role.VIEWER, at("/api/v1/audit")),
    Case("POST", "/api/v1/tokens", Role.ADMIN, new_token, 201),
    Case("GET", "/api/v1/tokens", Role.ADMIN, at("/api/v1/tokens")),
    Case("DELETE", "/api/v1/tokens/{name}", Role.ADMIN, old_token),
    Case("GET", "/api/v1/appointments", Role.VIEWER, at("/api/v1/appointments")),
    Case("POST", "/api/v1/appointments/{drive}/allocate", Role.OPERATOR, allocate_files),
    Case("GET", "/api/v1/appointments/{drive}", Role.VIEWER, on_drive("")),
    Case("GET", "/api/v1/appointments/{drive}/schedule", Role.OPERATOR, on_drive("/schedule")),
    Case("POST", "/api/v1/appointments/{drive}/replies", Role.OPERATOR, on_drive("/replies")),
    Case(
        "POST",
        "/api/v1/appointments/{drive}/changes",
        Role.OPERATOR,
        on_drive("/changes", json={"phone": "0912000001", "action": "confirm"}),
    ),
    Case("GET", "/api/v1/appointments/{drive}/history", Role.OPERATOR, on_drive("/history")),
    Case("GET", "/api/v1/inbox", Role.VIEWER, at("/api/v1/inbox")),
    Case("POST", "/api/v1/inbox/sync", Role.OPERATOR, at("/api/v1/inbox/sync")),
    Case("GET", "/api/v1/inbox/{case_id}", Role.VIEWER, on_case("")),
    Case("POST", "/api/v1/inbox/{case_id}/assign", Role.OPERATOR, on_case("/assign")),
    Case(
        "POST",
        "/api/v1/inbox/{case_id}/reply",
        Role.OPERATOR,
        on_case("/reply", json={"text": "Chào bạn"}),
    ),
    Case("POST", "/api/v1/inbox/{case_id}/close", Role.OPERATOR, on_case("/close")),
]


def expected(case: Case, who: str) -> tuple[int, str | None]:
    """What the role table says: the status and, for refusals, the error code."""
    if case.role is None:
        return case.ok, None
    refusals = {"none": "missing_token", "bad": "invalid_token", "revoked": "revoked_token"}
    if who in refusals:
        return 401, refusals[who]
    if Role[who.upper()] < case.role:
        return 403, "forbidden"
    return case.ok, None


async def test_every_route_is_in_the_role_table(api):
    declared = {
        (method.upper(), path)
        for path, operations in api.app.openapi()["paths"].items()
        for method in operations
    }
    assert declared == {(case.method, case.path) for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.path}")
async def test_role_table(api, case):
    for who in IDENTITIES:
        request = await case.prepare(api)
        headers = {**api.auth(who), **request.pop("headers", {})}
        response = await api.client.request(case.method, headers=headers, **request)
        status, code = expected(case, who)
        assert response.status_code == status, (who, response.text)
        if code is not None:
            assert error_of(response) == code, who
        if status == 401:
            assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_a_refused_change_is_audited_but_a_refused_read_is_not(api):
    campaign = await api.campaign()
    refused = await api.client.post(
        f"/api/v1/campaigns/{campaign}/cancel", headers=api.auth("viewer")
    )
    assert refused.status_code == 403
    await api.client.get("/api/v1/tokens", headers=api.auth("viewer"))
    [entry] = await api.audit("campaign.cancel")
    assert (entry["who"], entry["role"], entry["campaign"], entry["outcome"]) == (
        "viewer",
        "viewer",
        campaign,
        "forbidden",
    )
    assert await api.audit("token.list") == []


async def test_a_flood_of_refusals_is_folded_in_the_audit_log(api):
    campaign = await api.campaign()
    for _ in range(300):
        refused = await api.client.post(
            f"/api/v1/campaigns/{campaign}/cancel", headers=api.auth("viewer")
        )
        assert refused.status_code == 403
    entries = await api.audit("campaign.cancel")
    assert [(e["who"], e["outcome"]) for e in entries] == [("viewer", "forbidden")]
    # the next window's first entry says how many were folded into the last one
    redis = api.ctx.services.redis
    gates = [key async for key in redis.scan_iter(f"{api.ctx.settings.namespace}:audit:repeat:*")]
    await redis.delete(*gates)
    await api.client.post(f"/api/v1/campaigns/{campaign}/cancel", headers=api.auth("viewer"))
    newest = (await api.audit("campaign.cancel"))[0]
    assert newest["detail"] == "299 more like this before"


async def test_bad_tokens_are_audited_and_an_address_that_keeps_trying_gets_429(api):
    limit = api.ctx.settings.api.auth_failures_per_minute
    codes = []
    for n in range(limit + 5):
        response = await api.client.get(
            "/api/v1/whoami", headers={"Authorization": f"Bearer loa_guess-{n}"}
        )
        codes.append(response.status_code)
    assert codes == [401] * limit + [429] * 5
    good = await api.client.get("/api/v1/whoami", headers=api.auth("admin"))
    assert (good.status_code, error_of(good)) == (429, "too_many_failures"), "even a good one"
    entries = [e for e in await api.ctx.services.audit.read(1000) if e.action == "whoami"]
    assert [(e.outcome, e.ip) for e in entries] == [("invalid_token", "10.1.2.3")], "folded"


async def test_tokens_expire(api):
    tokens = Tokens(api.ctx.services.redis, api.ctx.settings.namespace, max_days=30)
    token, record = await tokens.create("temp", Role.VIEWER, MINTER, days=90)
    month = record.expires_ms - record.created_ms
    assert month == 30 * 86_400_000, "never beyond the configured maximum"
    mine = {"Authorization": f"Bearer {token}"}
    assert (await api.client.get("/api/v1/whoami", headers=mine)).status_code == 200
    key = f"{api.ctx.settings.namespace}:api:tokens"
    digest = hashlib.sha256(token.encode()).hexdigest()
    stored = orjson.loads(await api.ctx.services.redis.hget(key, digest))
    stored["expires_ms"] = int(time.time() * 1000) - 1  # a month later
    await api.ctx.services.redis.hset(key, digest, orjson.dumps(stored))
    late = await api.client.get("/api/v1/whoami", headers=mine)
    assert (late.status_code, error_of(late)) == (401, "expired_token")
    made = await api.client.post(
        "/api/v1/tokens",
        json={"name": "short", "role": "viewer", "days": 0.5},
        headers=api.auth("admin"),
    )
    assert made.status_code == 201, made.text
    assert made.json()["expires_ms"] - made.json()["created_ms"] == 43_200_000


# --- the two-person rule --------------------------------------------------------------------


async def test_the_creator_cannot_approve_and_a_second_approver_can(api):
    alice, alice_token = await api.token(Role.APPROVER)
    bob, bob_token = await api.token(Role.APPROVER)
    as_alice = {"Authorization": f"Bearer {alice_token}"}
    as_bob = {"Authorization": f"Bearer {bob_token}"}
    rows = people(THRESHOLD + 3)
    created = await api.client.post(
        "/api/v1/campaigns", files=upload(audience=rows), headers=as_alice
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["approval"] == {
        "required": True,
        "reason": f"more than {THRESHOLD} recipients",
        "creator": alice,
        "approved_by": "",
        "plan_sha256": hashlib.sha256(PLAN).hexdigest(),
        "audience_sha256": hashlib.sha256(rows).hexdigest(),
    }
    campaign = body["id"]
    early = await api.client.post(f"/api/v1/campaigns/{campaign}/launch", headers=as_alice)
    assert (early.status_code, error_of(early)) == (409, "approval_required")
    own = await api.client.post(f"/api/v1/campaigns/{campaign}/approve", headers=as_alice)
    assert (own.status_code, error_of(own)) == (403, "same_person")
    second = await api.client.post(f"/api/v1/campaigns/{campaign}/approve", headers=as_bob)
    assert second.json() == {"id": campaign, "state": "approved"}
    launched = await api.client.post(f"/api/v1/campaigns/{campaign}/launch", headers=as_alice)
    assert launched.status_code == 200, launched.text
    assert launched.json()["state"] == "running"
    assert launched.json()["report"]["queued"] == THRESHOLD + 3
    status = await api.client.get(f"/api/v1/campaigns/{campaign}", headers=as_alice)
    assert status.json()["approval"]["approved_by"] == bob
    outcomes = [(e["who"], e["outcome"]) for e in await api.audit("campaign.approve")]
    assert outcomes == [(bob, "ok"), (alice, "same_person")]


async def test_a_token_minted_by_the_creator_counts_as_the_creator(api):
    # an admin creates a campaign, mints an approver token for herself under another name
    admin = api.auth("admin")
    created = await api.client.post(
        "/api/v1/campaigns", files=upload(audience=people(THRESHOLD + 3)), headers=admin
    )
    campaign = created.json()["id"]
    minted = await api.client.post(
        "/api/v1/tokens", json={"name": "alice.2", "role": "approver"}, headers=admin
    )
    assert minted.json()["lineage"] == ["admin", "test-bootstrap"]
    second = {"Authorization": f"Bearer {minted.json()['token']}"}
    refused = await api.client.post(f"/api/v1/campaigns/{campaign}/approve", headers=second)
    assert (refused.status_code, error_of(refused)) == (403, "same_person")
    assert "minted by admin" in refused.json()["error"]["message"]
    # and the other way round: a campaign created with a token she minted, approved by her
    other = await api.client.post(
        "/api/v1/tokens",
        json={"name": "carol-desk", "person": "carol", "role": "operator"},
        headers=admin,
    )
    as_carol = {"Authorization": f"Bearer {other.json()['token']}"}
    made = await api.client.post(
        "/api/v1/campaigns", files=upload(audience=people(THRESHOLD + 3)), headers=as_carol
    )
    assert made.json()["approval"]["creator"] == "carol"
    own = await api.client.post(f"/api/v1/campaigns/{made.json()['id']}/approve", headers=admin)
    assert (own.status_code, error_of(own)) == (403, "same_person")
    state = await api.client.get(f"/api/v1/campaigns/{campaign}", headers=admin)
    assert state.json()["state"] == "draft"


async def test_two_tokens_of_one_person_are_one_person(api):
    minter = program("security-office", Role.ADMIN)
    tokens = api.ctx.services.tokens
    desk, _ = await tokens.create("dung-desk", Role.OPERATOR, minter, "dung")
    phone, _ = await tokens.create("dung-phone", Role.APPROVER, minter, "dung")
    other, _ = await tokens.create("lan", Role.APPROVER, minter)
    created = await api.client.post(
        "/api/v1/campaigns",
        files=upload(audience=people(THRESHOLD + 3)),
        headers={"Authorization": f"Bearer {desk}"},
    )
    campaign = created.json()["id"]
    url = f"/api/v1/campaigns/{campaign}/approve"
    same = await api.client.post(url, headers={"Authorization": f"Bearer {phone}"})
    assert (same.status_code, error_of(same)) == (403, "same_person")
    ok = await api.client.post(url, headers={"Authorization": f"Bearer {other}"})
    assert ok.status_code == 200, ok.text
    [entry] = [e for e in await api.audit("campaign.approve") if e["outcome"] == "ok"]
    assert (entry["who"], entry["token"]) == ("lan", "lan")


async def test_the_approvers_dry_run_is_of_the_pinned_content(api):
    created = await api.client.post(
        "/api/v1/campaigns", files=upload(audience=people(4)), headers=api.auth("operator")
    )
    campaign = created.json()["id"]
    fields = (await api.ctx.services.campaigns.store.get(campaign)).fields
    pinned = Path(fields["audience"])
    assert pinned.is_relative_to(api.ctx.settings.data_dir / "campaigns" / campaign)
    assert pinned.stat().st_mode & 0o777 == 0o400
    assert not any(api.ctx.uploads.iterdir()), "the upload is gone once pinned"
    dry = await api.client.post(
        f"/api/v1/campaigns/{campaign}/validate", headers=api.auth("approver")
    )
    assert dry.json()["queued"] == 4
    pinned.chmod(0o600)
    pinned.write_bytes(people(40))
    changed = await api.client.post(
        f"/api/v1/campaigns/{campaign}/validate", headers=api.auth("approver")
    )
    assert (changed.status_code, error_of(changed)) == (409, "illegal_transition")
    assert "has changed since the campaign was created" in changed.json()["error"]["message"]


async def test_a_dry_run_shows_the_first_messages_with_numbers_masked(api):
    plan = PLAN.replace(b"{{ name }} \xc6\xa1i", b"{{ name }} ({{ phone }}) \xc6\xa1i, 19009095")
    assert plan != PLAN
    dry = await api.client.post(
        "/api/v1/campaigns/validate", files=upload(plan, people(5)), headers=api.auth("operator")
    )
    assert dry.status_code == 200, dry.text
    samples = dry.json()["samples"]
    assert list(samples) == ["sms/vi"]
    # the recipient's number is masked in the text as well; a hotline's short number is not
    assert samples["sms/vi"]["body"] == "Bo Y te: Nguoi 0 (***000) oi, 19009095, hay tiem vac-xin."
    assert "0900000000" not in dry.text and "84900000000" not in dry.text


async def test_a_campaign_per_province(api):
    from loa.engine.keys import campaign_key, region_field, regions_key, shard_keys

    operator = api.auth("operator")
    regions = ["79", "49", "1", "Hà Nội", "XX", ""]
    rows = "".join(f"09{n:08d},Người {n},{region},X\n" for n, region in enumerate(regions))
    audience = ("phone,name,region,district\n" + rows).encode()
    created = await api.client.post(
        "/api/v1/campaigns", files=upload(PLAN, audience), headers=operator
    )
    campaign = str(created.json()["id"])
    await api.client.post(f"/api/v1/campaigns/{campaign}/approve", headers=api.auth("approver"))
    launch = await api.client.post(f"/api/v1/campaigns/{campaign}/launch", headers=operator)
    assert launch.status_code == 200, launch.text

    async def provinces() -> dict[str, Any]:
        got = await api.client.get(
            f"/api/v1/campaigns/{campaign}/provinces", headers=api.auth("viewer")
        )
        assert got.status_code == 200, got.text
        return dict(got.json())

    before = await provinces()
    assert before["counted"] is True  # its batches were planned one region each
    table = [
        (r["code"], r["name"], r["province"], r["queued"], r["sent"]) for r in before["provinces"]
    ]
    # by province code (1, "Hà Nội" are Ha Noi; 49 is part of Da Nang since 2025), then the rest
    assert table == [
        ("01", "Hà Nội", True, 2, 0),
        ("48", "Đà Nẵng", True, 1, 0),
        ("79", "TP. Hồ Chí Minh", True, 1, 0),
        ("XX", "", False, 1, 0),
        ("?", "", False, 1, 0),
    ]
    assert before["provinces"][0]["regions"] == ["1", "HÀ NỘI"]

    # a campaign whose batches are of one region each: what workers count as they settle them
    # (per shard, per region) and what receipts count by their message's batch
    redis_client, namespace = api.ctx.services.redis, api.ctx.settings.namespace
    fields = await redis_client.hgetall(campaign_key(namespace, campaign))
    assert fields[b"regions_batched"] == b"1"
    shards = shard_keys(namespace, "sms", api.ctx.settings.routes["sms"].shards)
    for n, region in enumerate(["79", "49", "1", "HÀ NỘI"]):
        field = region_field(campaign, region, "accepted")
        await redis_client.hincrby(shards[n % len(shards)].campaign_stats, field, 1)
    await redis_client.hincrby(shards[0].campaign_stats, f"{campaign}:accepted", 6)
    await redis_client.hset(
        regions_key(namespace, campaign), mapping={"79:delivered": 1, "49:undelivered": 1}
    )
    after = await provinces()
    assert after["counted"] is True
    table = [(r["code"], r["sent"], r["delivered"], r["undelivered"]) for r in after["provinces"]]
    # XX was not sent yet; the one without a region is what the total has beyond the regions
    assert table == [
        ("01", 2, 0, 0),
        ("48", 1, 0, 1),
        ("79", 1, 1, 0),
        ("XX", 0, 0, 0),
        ("?", 2, 0, 0),
    ]
    missing = await api.client.get("/api/v1/campaigns/nope/provinces", headers=api.auth("viewer"))
    assert (missing.status_code, error_of(missing)) == (404, "campaign_not_found")


async def test_an_emergency_campaign_always_needs_approval(api):
    # even when it goes only to the test list, and to a single number
    plan = EMERGENCY_PLAN.read_bytes()
    created = await api.client.post(
        "/api/v1/campaigns",
        files=upload(plan=plan, audience=people(1, TEST_NUMBERS)),
        headers=api.auth("approver"),
    )
    assert created.status_code == 201, created.text
    assert created.json()["lane"] == "emergency"
    assert created.json()["approval"]["reason"] == "emergency lane"
    campaign = created.json()["id"]
    refused = await api.client.post(
        f"/api/v1/campaigns/{campaign}/launch", headers=api.auth("approver")
    )
    assert (refused.status_code, error_of(refused)) == (409, "approval_required")
    approved = await api.client.post(
        f"/api/v1/campaigns/{campaign}/approve", headers=api.auth("admin")
    )
    assert approved.status_code == 200
    launched = await api.client.post(
        f"/api/v1/campaigns/{campaign}/launch", headers=api.auth("approver")
    )
    assert launched.status_code == 200, launched.text


async def test_a_test_list_campaign_skips_approval_however_large(api):
    rows = people(len(TEST_NUMBERS), TEST_NUMBERS)  # over the threshold, all test numbers
    created = await api.client.post(
        "/api/v1/campaigns", files=upload(audience=rows), headers=api.auth("operator")
    )
    assert created.json()["approval"]["required"] is False
    assert created.json()["approval"]["reason"] == "test list"
    campaign = created.json()["id"]
    launched = await api.client.post(
        f"/api/v1/campaigns/{campaign}/launch", headers=api.auth("operator")
    )
    assert launched.status_code == 200, launched.text
    assert launched.json()["state"] == "running"
    [auto] = await api.audit("campaign.approve")
    assert (auto["who"], auto["campaign"], auto["detail"]) == (
        "operator",
        campaign,
        "automatic: test list",
    )


async def test_one_number_off_the_test_list_makes_it_a_real_campaign(api):
    rows = people(len(TEST_NUMBERS), [*TEST_NUMBERS[:-1], "0987654321"])
    created = await api.client.post(
        "/api/v1/campaigns", files=upload(audience=rows), headers=api.auth("operator")
    )
    assert created.json()["approval"]["required"] is True


# --- the whole flow and the audit trail -----------------------------------------------------


async def test_create_validate_approve_launch_pause_resume_cancel(api):
    operator, approver = api.auth("operator"), api.auth("approver")
    created = await api.client.post(
        "/api/v1/campaigns", files=upload(audience=people(4) + b"abc,Bad,49,X\n"), headers=operator
    )
    assert created.status_code == 201, created.text
    campaign = created.json()["id"]
    assert created.json()["state"] == "draft"
    base = f"/api/v1/campaigns/{campaign}"
    dry = (await api.client.post(f"{base}/validate", headers=operator)).json()
    assert (dry["total"], dry["queued"], dry["invalid"]) == (5, 4, 1)
    assert dry["errors"] == [{"line": 6, "reason": "phone: letters in number"}]

    async def state() -> str:
        return str((await api.client.get(base, headers=api.auth("viewer"))).json()["state"])

    assert await state() == "draft"
    assert (await api.client.post(f"{base}/approve", headers=approver)).status_code == 200
    assert await state() == "approved"
    launched = await api.client.post(f"{base}/launch", headers=operator)
    assert launched.json()["planning"] == "done"
    assert await state() == "running"
    again = await api.client.post(f"{base}/launch", headers=operator)
    assert (again.status_code, error_of(again)) == (409, "illegal_transition")
    for action, after in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        response = await api.client.post(f"{base}/{action}", headers=operator)
        assert response.json() == {"id": campaign, "state": after}
        assert await state() == after
    late = await api.client.post(f"{base}/resume", headers=operator)
    assert (late.status_code, error_of(late)) == (409, "illegal_transition")
    status = (await api.client.get(base, headers=operator)).json()
    assert (status["total"], status["queued"], status["invalid"]) == (5, 4, 1)
    listed = (await api.client.get("/api/v1/campaigns", headers=operator)).json()
    assert [row["id"] for row in listed] == [campaign]
    report = await api.client.get(f"{base}/failed", headers=operator)
    assert report.headers["content-type"].startswith("text/csv")
    assert report.text.splitlines() == ["recipient,route,line,reason"]

    entries = (await api.client.get("/api/v1/audit", headers=api.auth("viewer"))).json()["items"]
    trail = [(e["action"], e["who"], e["outcome"]) for e in reversed(entries)]
    assert trail == [
        ("campaign.create", "operator", "ok"),
        ("campaign.validate", "operator", "ok"),
        ("campaign.approve", "approver", "ok"),
        ("campaign.launch", "operator", "ok"),
        ("campaign.launch", "operator", "illegal_transition"),
        ("campaign.pause", "operator", "ok"),
        ("campaign.resume", "operator", "ok"),
        ("campaign.cancel", "operator", "ok"),
        ("campaign.resume", "operator", "illegal_transition"),
        ("campaign.failed_report", "operator", "ok"),
    ]
    for entry in entries:
        assert entry["campaign"] == campaign
        assert entry["ip"] == "10.1.2.3"
        assert entry["role"] == entry["who"]  # the fixture names each token after its role
        assert entry["at"] > 0


async def test_launch_answers_202_while_a_big_audience_is_planned(api):
    api.ctx.settings = api.ctx.settings.model_copy(
        update={"api": api.ctx.settings.api.model_copy(update={"launch_wait": 0.0})}
    )
    campaign = await api.campaign("approved")
    launched = await api.client.post(
        f"/api/v1/campaigns/{campaign}/launch", headers=api.auth("operator")
    )
    assert launched.status_code == 202
    assert launched.json()["planning"] == "running"
    assert launched.json()["report"] is None
    task = api.ctx.planning.get(campaign)
    if task is not None:
        await task
    status = await api.client.get(f"/api/v1/campaigns/{campaign}", headers=api.auth("viewer"))
    assert status.json()["queued"] == 3


@pytest.fixture
async def partitioned(make_settings, redis_url, tmp_path) -> AsyncIterator[Api]:
    """An API whose launches plan every partitionable audience in two partition processes."""
    settings = make_settings(
        routes={"sms": {"adapter": "null"}},
        channels={"sms": {"default": "sms"}},
        planning={"partitions": 2, "partition_min_mb": 0},
    )
    async with serving(settings, redis_url, tmp_path) as api:
        yield api


async def test_a_launch_plans_a_large_audience_in_partition_processes(partitioned):
    api = partitioned
    campaign = await api.campaign("approved", count=400)
    launched = await api.client.post(
        f"/api/v1/campaigns/{campaign}/launch", headers=api.auth("operator")
    )
    assert launched.status_code in (200, 202), launched.text
    task = api.ctx.planning.get(campaign)
    if task is not None:
        await task
    record = await api.ctx.services.campaigns.store.get(campaign)
    assert record.fields["partitions"] == "2"
    shares = [
        orjson.loads(record.fields[f"checkpoint:{k}/2"])["report"]["queued"] for k in range(2)
    ]
    assert min(shares) > 100 and sum(shares) == 400, "each process planned its share"
    status = await api.client.get(f"/api/v1/campaigns/{campaign}", headers=api.auth("operator"))
    assert (status.json()["total"], status.json()["queued"]) == (400, 400)
    assert multiprocessing.active_children() == []


async def test_a_server_stopping_stops_its_partition_processes_and_a_launch_resumes(partitioned):
    api = partitioned
    api.ctx.settings = api.ctx.settings.model_copy(
        update={"api": api.ctx.settings.api.model_copy(update={"launch_wait": 0.0})}
    )
    campaign = await api.campaign("approved", count=400)
    launched = await api.client.post(
        f"/api/v1/campaigns/{campaign}/launch", headers=api.auth("operator")
    )
    assert launched.status_code == 202, launched.text
    for _ in range(200):  # the background task starts them once the launch is recorded
        if len(multiprocessing.active_children()) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(multiprocessing.active_children()) == 2
    await api.ctx.close()  # what the server does as it stops
    assert multiprocessing.active_children() == []
    resumed = await api.client.post(
        f"/api/v1/campaigns/{campaign}/launch", headers=api.auth("operator")
    )
    task = api.ctx.planning.get(campaign)
    if task is not None:
        await task
    assert resumed.status_code in (200, 202), resumed.text
    status = await api.client.get(f"/api/v1/campaigns/{campaign}", headers=api.auth("operator"))
    assert (status.json()["total"], status.json()["queued"]) == (400, 400)


async def test_suppression_changes_are_audited_without_numbers(api):
    operator = api.auth("operator")
    numbers = ["+84 912 345 678", "0987654321"]
    added = await api.client.post(
        "/api/v1/suppression/add", json={"addresses": numbers}, headers=operator
    )
    assert added.json() == {"changed": 2}
    checked = await api.client.post(
        "/api/v1/suppression/check",
        json={"addresses": ["0912345678", "0911111111"]},
        headers=operator,
    )
    assert [r["suppressed"] for r in checked.json()["results"]] == [True, False]
    removed = await api.client.post(
        "/api/v1/suppression/remove", json={"addresses": ["0987654321"]}, headers=operator
    )
    assert removed.json() == {"changed": 1}
    bad = await api.client.post(
        "/api/v1/suppression/add", json={"addresses": ["12"]}, headers=operator
    )
    assert (bad.status_code, error_of(bad)) == (422, "invalid_address")
    log = (await api.client.get("/api/v1/audit", headers=operator)).json()["items"]
    assert [(e["action"], e["outcome"], e["detail"]) for e in reversed(log)] == [
        ("suppression.add", "ok", "2 given, 2 new"),
        ("suppression.check", "ok", "2 checked"),
        ("suppression.remove", "ok", "1 given, 1 removed"),
        ("suppression.add", "invalid_address", ""),
    ]
    # the numbers themselves, in any spelling; timestamps and ids may hold any digits
    raw = str([{k: v for k, v in e.items() if k not in ("at", "id", "ms")} for e in log])
    for spelled in ("912345678", "912 345 678", "987654321", "911111111"):
        assert spelled not in raw


async def test_tokens_are_shown_once_and_stored_hashed(api):
    admin = api.auth("admin")
    made = await api.client.post(
        "/api/v1/tokens", json={"name": "lan.nguyen@moh.gov.vn", "role": "approver"}, headers=admin
    )
    assert made.status_code == 201
    token = made.json()["token"]
    assert token.startswith("loa_")
    assert made.json()["creator"] == "admin"
    redis = api.ctx.services.redis
    stored = await redis.hgetall(f"{api.ctx.settings.namespace}:api:tokens")
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored
    assert token.encode() not in b"".join([*stored.keys(), *stored.values()])
    listed = (await api.client.get("/api/v1/tokens", headers=admin)).json()
    assert "token" not in str(listed)
    mine = {"Authorization": f"Bearer {token}"}
    who = await api.client.get("/api/v1/whoami", headers=mine)
    assert who.json() == {
        "name": "lan.nguyen@moh.gov.vn",
        "token": "lan.nguyen@moh.gov.vn",
        "role": "approver",
        "lineage": ["admin", "test-bootstrap"],
    }
    taken = await api.client.post(
        "/api/v1/tokens", json={"name": "lan.nguyen@moh.gov.vn", "role": "viewer"}, headers=admin
    )
    assert (taken.status_code, error_of(taken)) == (409, "name_taken")
    revoked = await api.client.delete("/api/v1/tokens/lan.nguyen@moh.gov.vn", headers=admin)
    assert revoked.json()["revoked_ms"] > 0
    refused = await api.client.get("/api/v1/whoami", headers=mine)
    assert (refused.status_code, error_of(refused)) == (401, "revoked_token")
    unknown = await api.client.delete("/api/v1/tokens/nobody", headers=admin)
    assert (unknown.status_code, error_of(unknown)) == (404, "token_not_found")
    trail = [(e["outcome"], e["detail"]) for e in await api.audit("token.create")]
    assert trail == [
        ("name_taken", "lan.nguyen@moh.gov.vn as viewer"),
        ("ok", "lan.nguyen@moh.gov.vn as approver"),
    ]
    assert [e["outcome"] for e in await api.audit("token.revoke")] == ["token_not_found", "ok"]


async def test_inbound_replies_page_by_cursor(api):
    key = inbound_key(api.ctx.settings.namespace)
    for text in ("Da nhan", "STOP", "Cam on"):
        await api.ctx.services.redis.xadd(
            key, {"at": 1, "route": "sms", "sender": "+84912345678", "text": text, "optout": 0}
        )
    first = (await api.client.get("/api/v1/inbound?limit=2", headers=api.auth("operator"))).json()
    assert [m["text"] for m in first["items"]] == ["Da nhan", "STOP"]
    after = first["next_after"]
    rest = (
        await api.client.get(f"/api/v1/inbound?after={after}", headers=api.auth("operator"))
    ).json()
    assert [m["text"] for m in rest["items"]] == ["Cam on"]
    assert rest["items"][0]["optout"] is False
    bad = await api.client.get("/api/v1/inbound?after=evil", headers=api.auth("operator"))
    assert (bad.status_code, error_of(bad)) == (422, "invalid_request")


# --- hostile payloads -----------------------------------------------------------------------


def multipart(parts: list[tuple[str, str, bytes]], boundary: str = "b0undary") -> bytes:
    body = b""
    for name, filename, content in parts:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + content
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode()


MULTIPART = {"Content-Type": "multipart/form-data; boundary=b0undary"}


@pytest.mark.parametrize(
    ("files", "status", "code", "says"),
    [
        (upload(audience=b"phone\n" + b"0912345678\n" * 6000), 413, "too_large", "bytes"),
        (upload(plan=b"\xff\xfe\x00n\x00a"), 422, "invalid_plan", "UTF-8"),
        (upload(plan=b"name = [unclosed"), 422, "invalid_plan", "not valid TOML"),
        (upload(plan=b'name = "x"\nlane = "urgent"\n'), 422, "invalid_plan", "lane"),
        (upload(audience=b"name,region\nA,79\n"), 422, "invalid_audience", "phone"),
        (upload(audience=b""), 422, "invalid_audience", "empty"),
        (upload(name="../../etc/passwd"), 422, "bad_file_name", "plain name"),
        (upload(name="..\\..\\boot.ini"), 422, "bad_file_name", "plain name"),
        ({"plan": ("p.toml", PLAN)}, 422, "missing_field", "audience"),
        ({**upload(), "evil": ("x", b"x")}, 422, "unknown_field", "evil"),
    ],
    ids=[
        "oversized",
        "plan-not-utf8",
        "plan-not-toml",
        "plan-wrong",
        "no-phone-column",
        "empty-audience",
        "dotdot-name",
        "backslash-name",
        "missing-part",
        "unknown-part",
    ],
)
async def test_bad_uploads_get_clear_4xx(api, files, status, code, says):
    response = await api.client.post("/api/v1/campaigns", files=files, headers=api.auth("operator"))
    assert response.status_code == status, response.text
    assert error_of(response) == code
    message = response.json()["error"]["message"]
    assert says in message
    assert str(api.tmp) not in message, "the server's paths stay on the server"
    uploads = api.ctx.uploads
    assert not uploads.exists() or list(uploads.iterdir()) == [], "refused uploads are removed"
    assert [e["outcome"] for e in await api.audit("campaign.create")] == [code]


def with_api(api: Api, **values: Any) -> None:
    """Change the API's settings for this test (uploads' storage is rebuilt from them)."""
    api.ctx.settings = api.ctx.settings.model_copy(
        update={"api": api.ctx.settings.api.model_copy(update=values)}
    )
    api.ctx._storage = None


async def test_uploads_and_pinned_audiences_have_a_total_and_leave_free_disk(api):
    with_api(api, uploads_total_mb=0.06)  # 62,914 bytes
    rows = people(400)  # about 14 kB a copy
    for _ in range(4):
        made = await api.client.post(
            "/api/v1/campaigns", files=upload(audience=rows), headers=api.auth("operator")
        )
        assert made.status_code == 201, made.text
    full = await api.client.post(
        "/api/v1/campaigns", files=upload(audience=rows), headers=api.auth("operator")
    )
    assert (full.status_code, error_of(full)) == (507, "insufficient_storage")
    with_api(api, min_free_disk_mb=1e12)
    no_disk = await api.client.post(
        "/api/v1/campaigns/validate", files=upload(), headers=api.auth("operator")
    )
    assert (no_disk.status_code, error_of(no_disk)) == (507, "insufficient_storage")


async def test_uploads_at_once_are_limited(api):
    with_api(api, concurrent_uploads=1)
    opened, release = asyncio.Event(), asyncio.Event()
    boundary = "loa-test-boundary"

    async def slow_body() -> AsyncIterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="plan"; '.encode()
        opened.set()
        await release.wait()
        yield b'filename="p.toml"\r\n\r\n' + PLAN + f"\r\n--{boundary}\r\n".encode()
        yield b'Content-Disposition: form-data; name="audience"; filename="a.csv"\r\n\r\n'
        yield people(3) + f"\r\n--{boundary}--\r\n".encode()

    headers = {**api.auth("operator"), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    first = asyncio.create_task(
        api.client.post("/api/v1/campaigns/validate", content=slow_body(), headers=headers)
    )
    await asyncio.wait_for(opened.wait(), 10)
    busy = await api.client.post(
        "/api/v1/campaigns/validate", files=upload(), headers=api.auth("operator")
    )
    assert (busy.status_code, error_of(busy)) == (429, "too_many_uploads")
    release.set()
    assert (await asyncio.wait_for(first, 10)).status_code == 200
    after = await api.client.post(
        "/api/v1/campaigns/validate", files=upload(), headers=api.auth("operator")
    )
    assert after.status_code == 200


async def test_an_upload_without_a_length_is_cut_off_at_the_limit(api):
    body = multipart([("plan", "p.toml", PLAN), ("audience", "a.csv", b"x" * 200_000)])

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = await api.client.post(
        "/api/v1/campaigns", content=chunks(), headers={**MULTIPART, **api.auth("operator")}
    )
    assert (response.status_code, error_of(response)) == (413, "too_large")
    assert list(api.ctx.uploads.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"plan": 1}', {"Content-Type": "application/json"}, 415, "unsupported_media_type"),
        (b"--b0undary\r\nContent-Disp", MULTIPART, 422, "truncated_upload"),
        (
            multipart([("plan", "p.toml", PLAN), ("plan", "q.toml", PLAN)]),
            MULTIPART,
            422,
            "duplicate_field",
        ),
        (multipart([("plan", "p\x01.toml", PLAN)]), MULTIPART, 422, "bad_file_name"),
    ],
    ids=["json", "truncated", "twice", "control-char-name"],
)
async def test_malformed_multipart(api, body, headers, status, code):
    response = await api.client.post(
        "/api/v1/campaigns/validate", content=body, headers={**headers, **api.auth("operator")}
    )
    assert (response.status_code, error_of(response)) == (status, code)


@pytest.mark.parametrize(
    ("method", "url", "payload", "status", "code"),
    [
        ("POST", "/api/v1/suppression/add", {"addresses": "0912345678"}, 422, "invalid_request"),
        ("POST", "/api/v1/suppression/add", {"addresses": [1, 2]}, 422, "invalid_request"),
        ("POST", "/api/v1/suppression/add", {"addresses": []}, 422, "invalid_request"),
        ("POST", "/api/v1/suppression/add", {"addresses": ["1"], "x": 1}, 422, "invalid_request"),
        ("POST", "/api/v1/suppression/check", [], 422, "invalid_request"),
        ("POST", "/api/v1/tokens", {"name": 5, "role": "god"}, 422, "invalid_request"),
        ("POST", "/api/v1/tokens", {"name": "../x", "role": "admin"}, 422, "invalid_request"),
        ("POST", "/api/v1/tokens", {"name": "x", "role": "admin", "is": 1}, 422, "invalid_request"),
        ("GET", "/api/v1/campaigns/bad$id!", None, 422, "invalid_request"),
        ("GET", "/api/v1/campaigns/..%2F..%2Fetc%2Fpasswd", None, 404, "not_found"),
        ("GET", "/api/v1/campaigns/20260101-abcdef", None, 404, "campaign_not_found"),
        ("POST", "/api/v1/campaigns/20260101-abcdef/pause", None, 404, "campaign_not_found"),
        ("GET", "/api/v1/campaigns?limit=0", None, 422, "invalid_request"),
        ("GET", "/api/v1/campaigns?limit=ten", None, 422, "invalid_request"),
        ("GET", "/api/v1/audit?before=9999999999999999999999-1", None, 422, "invalid_request"),
        ("GET", "/api/v1/nowhere", None, 404, "not_found"),
        ("PUT", "/api/v1/campaigns", None, 405, "method_not_allowed"),
        ("POST", "/api/v1/tokens", "x" * (3 << 20), 413, "too_large"),
    ],
)
async def test_bad_json_and_paths_get_clear_4xx(api, method, url, payload, status, code):
    response = await api.client.request(method, url, json=payload, headers=api.auth("admin"))
    assert (response.status_code, error_of(response)) == (status, code)


async def test_malformed_json_and_a_lying_length(api):
    headers = {"Content-Type": "application/json", **api.auth("admin")}
    broken = await api.client.post("/api/v1/suppression/add", content=b"{", headers=headers)
    assert (broken.status_code, error_of(broken)) == (422, "invalid_request")
    lying = await api.client.post(
        "/api/v1/suppression/add", content=b"{}", headers={**headers, "Content-Length": "x"}
    )
    assert (lying.status_code, error_of(lying)) == (400, "bad_content_length")


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests arrays or tables too deeply"),
        (
            PLAN + b'[schedule]\nstart = 9999-12-31T23:59:59+14:00\nexpires = "48h"\n',
            "schedule.expires: falls after the year 9999",
        ),
    ],
    ids=["nested", "year-9999"],
)
async def test_plans_that_once_were_500s_are_one_clear_error(api, plan, expected):
    for url in ("/api/v1/campaigns/validate", "/api/v1/campaigns"):
        response = await api.client.post(url, files=upload(plan), headers=api.auth("operator"))
        assert (response.status_code, error_of(response)) == (422, "invalid_plan"), url
        message = response.json()["error"]["message"]
        assert expected in message and "\n" not in message, message


async def test_illegal_transition_is_409(api):
    campaign = await api.campaign("draft")
    response = await api.client.post(
        f"/api/v1/campaigns/{campaign}/resume", headers=api.auth("operator")
    )
    assert (response.status_code, error_of(response)) == (409, "illegal_transition")
    assert "draft" in response.json()["error"]["message"]


# --- health, readiness, the spec ------------------------------------------------------------


def sms_plan(template: str) -> bytes:
    """A plan whose SMS template is `template` (a TOML literal string: no escapes)."""
    head = 'name = "t"\nlane = "normal"\nchannels = ["sms"]\n[templates]\n'
    return f"{head}sms = '''{template}'''\n".encode()


async def validating_with_health(api: Api, plan: bytes, count: int) -> tuple[httpx.Response, int]:
    """Validate `plan` on `count` people while asking /healthz again and again; the answer,
    and how many health checks were answered while the dry run went on."""
    validating = asyncio.create_task(
        api.client.post(
            "/api/v1/campaigns/validate",
            files=upload(plan, people(count)),
            headers=api.auth("operator"),
        )
    )
    answered = 0
    while not validating.done():
        health = await api.client.get("/healthz")
        assert health.json() == {"status": "ok"}
        answered += 1
        await asyncio.sleep(0.002)  # an in-process request never suspends: let others run
    return await validating, answered


HOSTILE_TEMPLATES = {
    "percent width": "{{ '%0200000000d' % 1 }}{{ name }}",
    "percent padding": "{{ '%900000000s' % 'x' }}{{ name }}",
    "concatenation": "{% set a = 'x' * 10000 %}" + "{% set a = a ~ a %}" * 14 + "{{ a }}{{ name }}",
    "replace": "{{ ('x' * 10000)|replace('x', 'x' * 10000) }}{{ name }}",
}


@pytest.mark.parametrize("template", HOSTILE_TEMPLATES.values(), ids=HOSTILE_TEMPLATES.keys())
async def test_a_hostile_template_gets_one_clear_error_and_health_answers(api, template):
    response, _ = await validating_with_health(api, sms_plan(template), 200)
    assert (response.status_code, error_of(response)) == (422, "invalid_template")
    message = response.json()["error"]["message"]
    assert message.startswith("templates.sms: refused by the sandbox: "), message
    assert message.endswith("(audience line 2)") and "\n" not in message


async def test_health_answers_while_a_slow_plan_validates(api):
    # about 40,000 loop turns a message: allowed, and slow enough to take seconds for 120 rows,
    # which ran on the event loop in one go (the API answered nothing meanwhile)
    slow = "{% for a in 'x' * 200 %}{% for b in 'x' * 200 %}{% endfor %}{% endfor %}{{ name }}"
    response, answered = await validating_with_health(api, sms_plan(slow), 120)
    assert response.status_code == 200, response.text
    assert (response.json()["queued"], response.json()["invalid"]) == (120, 0)
    assert answered >= 20, f"{answered} health checks answered while the plan was validated"


async def test_readiness_follows_redis(make_settings):
    app = create_app(make_settings(), lambda: connect("redis://127.0.0.1:1/0"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://loa.test") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert (ready.status_code, error_of(ready)) == (503, "redis_unavailable")
            down = await client.get("/api/v1/whoami", headers={"Authorization": "Bearer x"})
            assert (down.status_code, error_of(down)) == (503, "redis_unavailable")


async def test_the_committed_spec_is_the_apps(api):
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_json(), "regenerate: loa api --print-openapi > docs/openapi.json"
    served = await api.client.get("/openapi.json")
    assert served.json() == orjson.loads(committed)


async def test_edge_inputs_that_once_were_500s(api):
    # found by fuzzing: Redis refuses "(0-0" as the end of a range; non-UTF-8 JSON
    first = await api.client.get("/api/v1/audit?before=0-0", headers=api.auth("viewer"))
    assert first.json() == {"items": [], "next_before": None}
    headers = {"Content-Type": "application/json", **api.auth("admin")}
    binary = await api.client.post("/api/v1/tokens", content=b"\xc8Z", headers=headers)
    assert (binary.status_code, error_of(binary)) == (422, "invalid_request")


# --- the commands: bootstrap token, audit, `loa api`, `loa server` ---------------------------


def loa(*args: str | Path, namespace: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loa.cli", *map(str, args)],
        env={**clean_env(namespace), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def clean_env(namespace: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    return {**env, "LOA_NAMESPACE": namespace, "LOA_LOG_LEVEL": "warning"}


def test_bootstrap_token_and_audit_from_the_command_line(redis_url, namespace):
    # the OS user comes from the uid: a name in the environment is no identity
    made = loa(
        "api",
        "token",
        "create",
        "--name",
        "root",
        "--role",
        "admin",
        "--redis",
        redis_url,
        namespace=namespace,
        LOGNAME="minister",
        USER="minister",
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("loa_")
    assert "not be shown again" in made.stderr
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        stored = client.hgetall(f"{namespace}:api:tokens")
    assert list(stored) == [hashlib.sha256(token.encode()).hexdigest().encode()]
    log = loa("audit", "--json", "--limit", "5", "--redis", redis_url, namespace=namespace)
    assert log.returncode == 0, log.stderr
    [entry] = orjson.loads(log.stdout)
    assert (entry["who"], entry["token"]) == (pwd.getpwuid(os.getuid()).pw_name, "cli")
    assert (entry["action"], entry["detail"], entry["ip"]) == (
        "token.create",
        "root as admin",
        "local",
    )
    table = loa("audit", "--redis", redis_url, namespace=namespace, COLUMNS="200")
    assert "token.create" in table.stdout


def make_token(url: str, namespace: str) -> str:
    async def make() -> str:
        client = connect(url)
        try:
            token, _ = await Tokens(client, namespace).create("ops", Role.ADMIN, MINTER)
            return token
        finally:
            await client.aclose()

    return asyncio.run(make())


def wait_ready(base: str, process: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError("the API did not become ready")


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=60)
    return process.returncode, errors


def test_loa_api_serves_until_sigterm(redis_url, namespace):
    token = make_token(redis_url, namespace)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "loa.cli", "api", "--port", str(port), "--redis", redis_url],
        env={
            **clean_env(namespace),
            "LOA_API__UPLOAD_LIMIT_MB": "1",
            "LOA_API__HEADER_TIMEOUT": "1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        who = httpx.get(f"{base}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert (who.json()["name"], who.json()["role"]) == ("ops", "admin")
        big = httpx.post(
            f"{base}/api/v1/campaigns/validate",
            files={"plan": ("p.toml", PLAN), "audience": ("a.csv", b"x" * (2 << 20))},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert (big.status_code, error_of(big)) == (413, "too_large")
        # X-Forwarded-For from an untrusted peer is not believed (no proxy is trusted by default)
        forged = httpx.post(
            f"{base}/api/v1/suppression/check",
            json={"addresses": ["0912345678"]},
            headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": "10.9.8.7"},
        )
        assert forged.status_code == 200
        assert httpx.get(f"{base}/docs").status_code == 404, "no page that loads a CDN's script"
        assert half_a_request_is_cut_off(port)
    finally:
        code, errors = stop(process)
    assert code == 0, errors
    assert token not in errors, "tokens never reach the logs"
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        entries = client.xrange(f"{namespace}:audit")
    checks = [f for _, f in entries if f[b"action"] == b"suppression.check"]
    assert [f[b"ip"] for f in checks] == [b"127.0.0.1"]


def half_a_request_is_cut_off(port: int) -> bool:
    """A client that never finishes its headers is disconnected after api.header_timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: loa\r\n")  # and never the empty line
        return conn.recv(1024) == b""  # the server closed it (the header timeout is 1 s here)


def test_loa_server_runs_api_workers_and_redis_and_stops_them_all(tmp_path):
    sink = tmp_path / "sink.jsonl"
    config = tmp_path / "loa.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nnamespace = "srv"\n'
        "[worker]\nmetrics_port = 0\nprocesses = 1\n"
        f'[routes.sms]\nadapter = "file"\noptions = {{ path = "{sink}" }}\n'
        '[channels.sms]\ndefault = "sms"\n',
        encoding="utf-8",
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "loa.cli", "server", "--port", str(port), "-c", str(config)],
        env=clean_env("srv"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        embedded = (tmp_path / "data" / "redis" / "url").read_text()
        headers = {"Authorization": f"Bearer {make_token(embedded, 'srv')}"}
        tree = psutil.Process(process.pid).children(recursive=True)
        assert len(tree) >= 2, "a worker and the embedded Redis"
        created = httpx.post(f"{base}/api/v1/campaigns", files=upload(), headers=headers)
        assert created.status_code == 201, created.text
        campaign = created.json()["id"]
        launched = httpx.post(f"{base}/api/v1/campaigns/{campaign}/launch", headers=headers)
        assert launched.status_code == 200, launched.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            sink.exists() and len(sink.read_text().splitlines()) == 3
        ):
            time.sleep(0.1)
        assert len(sink.read_text().splitlines()) == 3, "the workers delivered all three"
    finally:
        code, errors = stop(process)
    assert code == 0, errors
    gone = psutil.wait_procs(tree, timeout=10)[1]
    assert gone == [], "SIGTERM stops the whole tree"
