"""What providers call back with: a route's webhook, verified on its raw bytes, as events.

A webhook format turns one signed callback into receipts and replies. loa's own format
(`LoaWebhook`, for any provider that can be configured to send it) is here; a provider with its
own (Zalo's OA events) keeps it beside its adapter, and the registry finds it by the route's
adapter (`loa.adapters.registry.webhook`). A format raises AuthError for a signature that is
missing, wrong or stale, and InvalidEvent for a body that is not what it should be.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loa.errors import AuthError, LoaError
from loa.message import Inbound, Receipt

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
_SECONDS = re.compile(r"\d{1,12}")
LOA_SIGNATURE = "x-loa-signature"
LOA_TIMESTAMP = "x-loa-timestamp"


class InvalidEvent(LoaError):
    """A verified callback whose body is not what its format says: where and what, per error."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(error.get("msg", "")) for error in errors))
        self.errors = errors


@dataclass
class Events:
    """What one callback brings."""

    receipts: list[Receipt] = field(default_factory=list)
    replies: list[Inbound] = field(default_factory=list)


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


class Webhook(Protocol):
    """One provider's callback format: `events` checks and reads a callback (`headers` have
    lower-case names); `schema` is its body, for the API's description."""

    @property
    def schema(self) -> type[BaseModel]: ...

    def events(
        self,
        route: str,
        body: bytes,
        secret: str,
        headers: Mapping[str, str],
        window: Window,
    ) -> Events: ...


class LoaReceipt(BaseModel):
    """One delivery report, for a message the provider accepted with `id`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    id: str = Field(min_length=1, max_length=256, description="the id in the provider's answer")
    delivered: bool = Field(description="true: reached the person; false: it never will")
    state: str = Field(default="", max_length=32, description="the provider's own final state")
    error: str = Field(default="", max_length=200)


class LoaReceipts(BaseModel):
    """loa's own receipt callback, for any provider that can be configured to send it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    receipts: list[LoaReceipt] = Field(min_length=1, max_length=1000)


class LoaWebhook:
    """loa's receipt batch: HMAC-SHA256 of `timestamp.body` with the route's secret, fresh."""

    schema = LoaReceipts

    def events(
        self,
        route: str,
        body: bytes,
        secret: str,
        headers: Mapping[str, str],
        window: Window,
    ) -> Events:
        """Verify the signature and its time, then read the receipts."""
        signature = headers.get(LOA_SIGNATURE)
        timestamp = headers.get(LOA_TIMESTAMP)
        if not signature:
            raise refuse(route, "missing (X-Loa-Signature)")
        if not timestamp:
            raise refuse(route, "missing its time (X-Loa-Timestamp)")
        stamp = timestamp.strip()
        if not _SECONDS.fullmatch(stamp):
            raise refuse(route, "dated wrong (X-Loa-Timestamp is Unix time in whole seconds)")
        signed = stamp.encode() + b"." + body
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if not same(signature.strip().removeprefix("sha256="), expected):
            raise refuse(route, "wrong")
        window.check(route, int(stamp))
        batch = valid(LoaReceipts, json_object(body))
        receipts = [Receipt(route, r.id, r.delivered, r.state, r.error) for r in batch.receipts]
        return Events(receipts=receipts)


def refuse(route: str, why: str) -> AuthError:
    """A signature refused, logged with its route."""
    log.warning("webhook signature refused", extra={"route": route, "error": why})
    return AuthError(f"the webhook signature is {why}", code="bad_signature")


def same(given: str, expected: str) -> bool:
    """Constant-time comparison of hex digests, whatever the case of the given one."""
    return hmac.compare_digest(given.strip().lower().encode(), expected.encode())


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or InvalidEvent."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid("body", "not JSON text") from None
    if not isinstance(doc, dict):
        raise invalid("body", "not a JSON object")
    return doc


def valid(model: type[M], doc: dict[str, Any]) -> M:
    """The document read as `model`, or InvalidEvent with pydantic's errors."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise InvalidEvent([dict(error) for error in exc.errors()]) from None


def invalid(where: str, what: str) -> InvalidEvent:
    """One problem of the body, at `where`."""
    return InvalidEvent([{"loc": ("body", where), "msg": what}])


def _utc(moment: float) -> str:
    """A Unix time as ISO 8601 UTC, or as the number when no calendar holds it."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
    except (OverflowError, OSError, ValueError):
        return f"{moment:.0f} (Unix time)"
