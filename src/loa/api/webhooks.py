"""Receipt webhooks: providers' delivery callbacks, signed per route, met with their messages.

`POST /api/v1/webhooks/{route}` takes no API token: the provider proves itself with a
signature made with the route's shared secret (`api.webhook_secrets`). Two shapes:

- a route whose adapter is `zalo` takes Zalo's own events. `X-ZEvent-Signature` is the hex
  SHA-256 of app_id + the raw body + timestamp + the OA secret key, where app_id and timestamp
  are the body's fields (Zalo's OA webhook guide; the secret is the OA's, not the app's).
  `user_received_message` (a ZNS reached the phone) is a delivered receipt for `message.msg_id`,
  the id ZNS answered the send with; `user_send_text` is a reply; other events are ignored.
- any other route takes loa's receipt batch, `{"receipts": [{"id", "delivered", "state"}]}`,
  signed as `X-Loa-Signature: sha256=<hex HMAC-SHA256 of the raw body with the secret>`.

A receipt counts once: correlate.lua meets it with its message and keeps the first of
repeats, so a provider retrying a callback (Zalo does, for hours) counts nothing twice. The
answer is 200 only once the receipts are written; a 401 or 5xx makes the provider try again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Header, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loa.api.context import ApiContext, context
from loa.api.models import ErrorBody, Strict
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

Ctx = Annotated[ApiContext, Depends(context)]
RouteName = Annotated[str, PathParam(pattern=ROUTE_PATTERN, description="the route's name")]
ZaloSignature = Annotated[
    str | None,
    Header(alias="X-ZEvent-Signature", description="Zalo routes: sha256(app_id+body+ts+secret)"),
]
LoaSignature = Annotated[
    str | None,
    Header(alias="X-Loa-Signature", description="other routes: sha256=HMAC-SHA256(secret, body)"),
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
        401: {"model": ErrorBody, "description": "no signature, or a wrong one"},
        404: {"model": ErrorBody, "description": "no webhook for this route"},
    },
    openapi_extra=BODY,
)
async def receive(
    route: RouteName,
    request: Request,
    ctx: Ctx,
    zalo_signature: ZaloSignature = None,
    loa_signature: LoaSignature = None,
) -> WebhookResult:
    """Verify the signature, then count each receipt once for the campaign it reports on."""
    secret = _secret(ctx.settings, route)
    body = await request.body()
    if ctx.settings.route(route).adapter == "zalo":
        events = zalo_events(route, body, secret, zalo_signature)
    else:
        events = loa_events(route, body, secret, loa_signature)
    writer = ctx.events()
    for receipt in events.receipts:
        writer.receipt(receipt)
    for reply in events.replies:
        writer.inbound(reply)
    await writer.flush()
    return WebhookResult(receipts=len(events.receipts), inbound=len(events.replies))


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


def zalo_events(route: str, body: bytes, secret: str, signature: str | None) -> Events:
    """Zalo's event, verified: sha256(app_id + body + timestamp + OA secret key), in hex."""
    if not signature:
        raise _refuse(route, "missing (X-ZEvent-Signature)")
    doc = _object(body)
    app_id, stamp = doc.get("app_id"), doc.get("timestamp")
    if not (_scalar(app_id) and _scalar(stamp)):
        raise ApiError("a Zalo event has app_id and timestamp", code="invalid_request", status=422)
    signed = f"{app_id}".encode() + body + f"{stamp}{secret}".encode()
    given = signature.strip().removeprefix("mac=").removeprefix("MAC=")
    if not _same(given, hashlib.sha256(signed).hexdigest()):
        raise _refuse(route, "wrong")
    if doc.get("event_name") not in ZALO_HANDLED:
        return Events()  # follow, seen, ...: Zalo wants a 200, or it retries and disables us
    return _zalo(route, _valid(ZaloEvent, doc))


def _zalo(route: str, event: ZaloEvent) -> Events:
    """The receipt (a ZNS reached the phone) or the reply an event stands for."""
    if event.event_name == ZALO_RECEIVED:
        if event.message is None:
            raise _invalid("message", "a user_received_message event names its message.msg_id")
        receipt = Receipt(route, event.message.msg_id, delivered=True, state="RECEIVED")
        return Events(receipts=[receipt])
    if event.message is None or event.message.text is None or event.sender is None:
        raise _invalid("message", "a user_send_text event has sender.id and message.text")
    recipient = event.recipient.id if event.recipient else ""
    reply = Inbound(route, event.sender.id, event.message.text, "zalo", recipient)
    return Events(replies=[reply])


def loa_events(route: str, body: bytes, secret: str, signature: str | None) -> Events:
    """loa's receipt batch, verified: HMAC-SHA256 of the raw body with the route's secret."""
    if not signature:
        raise _refuse(route, "missing (X-Loa-Signature)")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not _same(signature.strip().removeprefix("sha256="), expected):
        raise _refuse(route, "wrong")
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


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


def _valid(model: type[M], doc: dict[str, Any]) -> M:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _invalid(where: str, what: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", where), "msg": what}])
