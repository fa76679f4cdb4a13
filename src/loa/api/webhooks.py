"""Receipt webhooks: providers' delivery callbacks, signed per route, met with their messages.

`POST /api/v1/webhooks/{route}` takes no API token: the provider proves itself with a
signature made with the route's shared secret (`api.webhook_secrets`), and the signature is
checked on the raw bytes before the body is parsed. Two shapes:

- a route whose adapter is `zalo` takes Zalo's own events. `X-ZEvent-Signature` is the hex
  SHA-256 of app_id + the raw body + timestamp + the OA secret key, where app_id and timestamp
  are the body's fields (Zalo's OA webhook guide; the secret is the OA's, not the app's); they
  are read from the raw bytes to check the signature. `user_received_message` (a ZNS reached
  the phone) is a delivered receipt for `message.msg_id`, the id ZNS answered the send with;
  `user_send_text` is a reply, kept once per `message.msg_id`; other events are ignored.
- any other route takes loa's receipt batch, `{"receipts": [{"id", "delivered", "state"}]}`,
  with `X-Loa-Timestamp: <Unix time in whole seconds>` and
  `X-Loa-Signature: sha256=<hex HMAC-SHA256 with the secret of: timestamp "." raw body>`.

Replays are refused: the signed timestamp (Zalo's is in milliseconds) must be within
`api.webhook_window` seconds (default 300) of this server's clock, either way (401
`stale_timestamp` otherwise), and within the window every receipt and reply is kept once by its
provider id (for `events.dedupe_ttl`), so a provider retrying a callback (Zalo does, for hours)
stores and counts nothing twice and a replayed STOP opts nobody out again. The answer is 200
only once the events are written (a repeat is taken and reported as a duplicate); a 401, 503
or other 5xx makes the provider try again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Header, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from loa.api.context import ApiContext, context
from loa.api.models import ErrorBody, Strict
from loa.engine.events import WRITE_TIMEOUT
from loa.errors import ApiError, AuthError, ConfigError
from loa.message import Inbound, Receipt
from loa.settings import ROUTE_NAME, Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

ZALO_RECEIVED = "user_received_message"
ZALO_TEXT = "user_send_text"
ZALO_HANDLED = frozenset({ZALO_RECEIVED, ZALO_TEXT})
ROUTE_PATTERN = ROUTE_NAME.pattern.replace(r"\Z", "$")
M = TypeVar("M", bound=BaseModel)
# Zalo's signed fields, read from the raw body: a string without escapes, or a number
_APP_ID = re.compile(rb'"app_id"\s*:\s*(?:"([^"\\]{1,64})"|(\d{1,20}))')
_ZALO_STAMP = re.compile(rb'"timestamp"\s*:\s*(?:"(\d{1,20})"|(\d{1,20}))')
_CANDIDATES = 3  # of each field tried: a nested "timestamp" may come before Zalo's own
_SECONDS = re.compile(r"\d{1,12}")

Ctx = Annotated[ApiContext, Depends(context)]
RouteName = Annotated[str, PathParam(pattern=ROUTE_PATTERN, description="the route's name")]
ZaloSignature = Annotated[
    str | None,
    Header(alias="X-ZEvent-Signature", description="Zalo routes: sha256(app_id+body+ts+secret)"),
]
LoaSignature = Annotated[
    str | None,
    Header(
        alias="X-Loa-Signature",
        description="other routes: sha256=HMAC-SHA256(secret, timestamp + '.' + body), in hex",
    ),
]
LoaTimestamp = Annotated[
    str | None,
    Header(
        alias="X-Loa-Timestamp",
        description="other routes: when it was signed, Unix time in whole seconds",
    ),
]


class ZaloUser(BaseModel):
    """A Zalo user or official account."""

    model_config = ConfigDict(extra="allow")  # Zalo adds fields; the ones we read are checked

    id: str = Field(min_length=1, max_length=64)


class ZaloMessage(BaseModel):
    """The message an event is about."""

    model_config = ConfigDict(extra="allow")

    msg_id: str = Field(min_length=1, max_length=128)
    text: str | None = Field(default=None, max_length=4000)
    delivery_time: str | int | None = None
    tracking_id: str | None = None


class ZaloEvent(BaseModel):
    """One event of Zalo's webhook (ZNS and official account)."""

    model_config = ConfigDict(extra="allow")

    app_id: str | int
    event_name: str = Field(min_length=1, max_length=64)
    timestamp: str | int
    sender: ZaloUser | None = None
    recipient: ZaloUser | None = None
    message: ZaloMessage | None = None


class LoaReceipt(Strict):
    """One delivery report, for a message the provider accepted with `id`."""

    id: str = Field(min_length=1, max_length=256, description="the id in the provider's answer")
    delivered: bool = Field(description="true: reached the person; false: it never will")
    state: str = Field(default="", max_length=32, description="the provider's own final state")
    error: str = Field(default="", max_length=200)


class LoaReceipts(Strict):
    """loa's own receipt callback, for any provider that can be configured to send it."""

    receipts: list[LoaReceipt] = Field(min_length=1, max_length=1000)


class WebhookResult(BaseModel):
    """What a callback carried: receipts and replies taken in (a repeat is taken, not counted)."""

    receipts: int
    inbound: int
    duplicates: int = Field(default=0, description="of those, repeats of events kept before")


def inlined(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema with its $defs put in place, so the spec has no loose refs."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def expand(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return expand(defs[ref.removeprefix("#/$defs/")])
            return {key: expand(value) for key, value in node.items()}
        if isinstance(node, list):
            return [expand(value) for value in node]
        return node

    return dict(expand(schema))


# the body is read raw (the signature covers its bytes), so its schema is declared by hand
BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": [inlined(ZaloEvent), inlined(LoaReceipts)]}}
        },
    }
}


@dataclass
class Events:
    """What one callback brings."""

    receipts: list[Receipt] = field(default_factory=list)
    replies: list[Inbound] = field(default_factory=list)


@router.post(
    "/{route}",
    name="webhook.receipt",
    summary="A provider's delivery receipts (signed with the route's secret, no token)",
    responses={
        401: {"model": ErrorBody, "description": "no signature, a wrong one, or a stale one"},
        404: {"model": ErrorBody, "description": "no webhook for this route"},
        503: {"model": ErrorBody, "description": "not written: send it again"},
    },
    openapi_extra=BODY,
)
async def receive(
    route: RouteName,
    request: Request,
    ctx: Ctx,
    zalo_signature: ZaloSignature = None,
    loa_signature: LoaSignature = None,
    loa_timestamp: LoaTimestamp = None,
) -> WebhookResult:
    """Verify the signature and its time, then keep each receipt and reply once."""
    secret = _secret(ctx.settings, route)
    body = await request.body()
    window = Window(time.time(), ctx.settings.api.webhook_window)
    if ctx.settings.route(route).adapter == "zalo":
        events = zalo_events(route, body, secret, zalo_signature, window)
    else:
        events = loa_events(route, body, secret, loa_signature, loa_timestamp, window)
    try:
        async with asyncio.timeout(WRITE_TIMEOUT):
            written = await ctx.events().store(events.receipts, events.replies)
    except (RedisError, OSError, TimeoutError) as exc:
        error = type(exc).__name__
        log.warning("webhook events not written", extra={"route": route, "error": error})
        raise ApiError(
            "the events were not written; send them again", code="redis_unavailable", status=503
        ) from None
    return WebhookResult(
        receipts=len(events.receipts), inbound=len(events.replies), duplicates=written.duplicates
    )


@dataclass(frozen=True)
class Window:
    """Now, and how far from it a signed timestamp may be (seconds)."""

    now: float
    seconds: float

    def check(self, route: str, signed_at: float) -> None:
        """Refuse a timestamp outside the window: a replay, or a clock far off."""
        if abs(signed_at - self.now) <= self.seconds:
            return
        when = _utc(signed_at)
        log.warning("webhook timestamp refused", extra={"route": route, "signed_at": when})
        raise AuthError(
            f"the webhook was signed at {when}, {abs(signed_at - self.now):,.0f} s from this "
            f"server's clock; only {self.seconds:g} s either way are taken (a replay?)",
            code="stale_timestamp",
        )


def _utc(moment: float) -> str:
    """A Unix time as ISO 8601 UTC, or as the number when no calendar holds it."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
    except (OverflowError, OSError, ValueError):
        return f"{moment:.0f} (Unix time)"


def _secret(settings: Settings, route: str) -> str:
    """The route's webhook secret; 404 for a route without one (or no such route)."""
    secret = settings.api.webhook_secrets.get(route)
    if secret is None or route not in settings.routes:
        raise ApiError(f"no webhook for route {route!r}", code="route_not_found", status=404)
    return secret.get_secret_value()


def check_secrets(settings: Settings) -> None:
    """Refuse a secret for a route that does not exist: a typo would silently drop receipts."""
    unknown = sorted(set(settings.api.webhook_secrets) - set(settings.routes))
    if unknown:
        known = ", ".join(sorted(settings.routes)) or "none"
        raise ConfigError(
            f"api.webhook_secrets names no route: {', '.join(unknown)} (routes: {known})"
        )


def _refuse(route: str, why: str) -> AuthError:
    log.warning("webhook signature refused", extra={"route": route, "error": why})
    return AuthError(f"the webhook signature is {why}", code="bad_signature")


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of hex digests, whatever the case of the given one."""
    return hmac.compare_digest(given.strip().lower().encode(), expected.encode())


def zalo_events(
    route: str, body: bytes, secret: str, signature: str | None, window: Window
) -> Events:
    """Zalo's event, verified on its raw bytes, fresh, then parsed."""
    if not signature:
        raise _refuse(route, "missing (X-ZEvent-Signature)")
    given = signature.strip().removeprefix("mac=").removeprefix("MAC=")
    stamp = _zalo_signed_stamp(route, body, secret, given)
    window.check(route, stamp / 1000)  # Zalo's timestamps are in milliseconds
    doc = _object(body)
    if doc.get("event_name") not in ZALO_HANDLED:
        return Events()  # follow, seen, ...: Zalo wants a 200, or it retries and disables us
    return _zalo(route, _valid(ZaloEvent, doc))


def _zalo_signed_stamp(route: str, body: bytes, secret: str, given: str) -> int:
    """The timestamp Zalo signed the body with: sha256(app_id + body + timestamp + secret).

    app_id and timestamp are fields of the body; they are found in its raw bytes, and the
    first few of each are tried, so nothing of the body is parsed before it is verified.
    """
    app_ids, stamps = _first_values(_APP_ID, body), _first_values(_ZALO_STAMP, body)
    if not (app_ids and stamps):
        raise ApiError("a Zalo event has app_id and timestamp", code="invalid_request", status=422)
    for app_id in app_ids:
        prefix = hashlib.sha256(app_id + body)
        for stamp in stamps:
            digest = prefix.copy()
            digest.update(stamp + secret.encode())
            if _same(given, digest.hexdigest()):
                return int(stamp)
    raise _refuse(route, "wrong")


def _zalo(route: str, event: ZaloEvent) -> Events:
    """The receipt (a ZNS reached the phone) or the reply an event stands for."""
    if event.event_name == ZALO_RECEIVED:
        if event.message is None:
            raise _invalid("message", "a user_received_message event names its message.msg_id")
        receipt = Receipt(route, event.message.msg_id, delivered=True, state="RECEIVED")
        return Events(receipts=[receipt])
    message = event.message
    if message is None or message.text is None or event.sender is None:
        raise _invalid("message", "a user_send_text event has sender.id and message.text")
    recipient = event.recipient.id if event.recipient else ""
    reply = Inbound(route, event.sender.id, message.text, "zalo", recipient, message.msg_id)
    return Events(replies=[reply])


def loa_events(
    route: str,
    body: bytes,
    secret: str,
    signature: str | None,
    timestamp: str | None,
    window: Window,
) -> Events:
    """loa's receipt batch: HMAC-SHA256 of `timestamp.body` with the route's secret, fresh."""
    if not signature:
        raise _refuse(route, "missing (X-Loa-Signature)")
    if not timestamp:
        raise _refuse(route, "missing its time (X-Loa-Timestamp)")
    stamp = timestamp.strip()
    if not _SECONDS.fullmatch(stamp):
        raise _refuse(route, "dated wrong (X-Loa-Timestamp is Unix time in whole seconds)")
    signed = stamp.encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not _same(signature.strip().removeprefix("sha256="), expected):
        raise _refuse(route, "wrong")
    window.check(route, int(stamp))
    batch = _valid(LoaReceipts, _object(body))
    receipts = [Receipt(route, r.id, r.delivered, r.state, r.error) for r in batch.receipts]
    return Events(receipts=receipts)


def _object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or 422."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _invalid("body", "not JSON text") from None
    if not isinstance(doc, dict):
        raise _invalid("body", "not a JSON object")
    return doc


def _first_values(field: re.Pattern[bytes], body: bytes) -> list[bytes]:
    """The values of the first few matches of a field in the raw body."""
    found = itertools.islice(field.finditer(body), _CANDIDATES)
    return [match.group(1) or match.group(2) for match in found]


def _valid(model: type[M], doc: dict[str, Any]) -> M:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _invalid(where: str, what: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", where), "msg": what}])
