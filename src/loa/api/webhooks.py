"""Receipt webhooks: providers' delivery callbacks, signed per route, met with their messages.

`POST /api/v1/webhooks/{route}` takes no API token: the provider proves itself with a
signature made with the route's shared secret (`api.webhook_secrets`), and the signature is
checked on the raw bytes before the body is parsed. Two shapes:

- a route whose adapter declares a format of its own takes its provider's events, checked and
  read by that adapter's package: Zalo's OA events (`adapters/zalo/webhook.py`, signed with
  `X-ZEvent-Signature`).
- any other route takes loa's receipt batch (`adapters/inbound.py`),
  `{"receipts": [{"id", "delivered", "state"}]}`, with
  `X-Loa-Timestamp: <Unix time in whole seconds>` and
  `X-Loa-Signature: sha256=<hex HMAC-SHA256 with the secret of: timestamp "." raw body>`.
The API finds a route's format through the adapter registry (`registry.webhook`).

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
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from loa.adapters.inbound import InvalidEvent, Window
from loa.adapters.registry import webhook, webhook_formats
from loa.api.context import ApiContext, context
from loa.api.models import ErrorBody
from loa.engine.events import WRITE_TIMEOUT
from loa.errors import ApiError, ConfigError
from loa.settings import ROUTE_NAME, Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

ROUTE_PATTERN = ROUTE_NAME.pattern.replace(r"\Z", "$")

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
            "application/json": {
                "schema": {"oneOf": [inlined(f.schema) for f in webhook_formats().values()]}
            }
        },
    }
}


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
    # the signature headers are declared above for the API's description only: the route's
    # format (found through the adapter registry) reads them from the request
    secret = _secret(ctx.settings, route)
    body = await request.body()
    window = Window(time.time(), ctx.settings.api.webhook_window)
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        events = webhook(ctx.settings.route(route).adapter).events(
            route, body, secret, headers, window
        )
    except InvalidEvent as exc:
        raise RequestValidationError(exc.errors) from None
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
