"""API tokens and roles: who may do what through the control API.

A token is shown once, when it is made; Redis keeps only its SHA-256 hash, with the token's
name (unique), the person it belongs to (a person may hold several tokens), role, the person who
minted it and that token's lineage (see loa.access.identity), and its creation time. Roles are
ordered (viewer < operator < approver < admin), each one may do all the ones before it may:

| what                                               | view | oper | appr | admin |
|----------------------------------------------------|------|------|------|-------|
| GET /healthz, /readyz (no token needed)            | yes  | yes  | yes  | yes   |
| GET /, /dashboard and its files (no token needed;  | yes  | yes  | yes  | yes   |
|   the page asks for one and calls the API with it) |      |      |      |       |
| whoami, list campaigns, campaign status, audit log | yes  | yes  | yes  | yes   |
| routes: adapters, channels, queue depth, counters  | yes  | yes  | yes  | yes   |
| create, validate, launch, pause, resume, cancel    | no   | yes  | yes  | yes   |
| failed-recipients report, inbound (phone numbers)  | no   | yes  | yes  | yes   |
| suppression add / remove / check                   | no   | yes  | yes  | yes   |
| approve (never one's own campaign: two persons)    | no   | no   | yes  | yes   |
| tokens: create, list, revoke                       | no   | no   | no   | yes   |
| POST /api/v1/webhooks/{route}: no token, no role:  | -    | -    | -    | -     |
|   the provider signs each callback with the        |      |      |      |       |
|   route's secret (see loa.api.webhooks)            |      |      |      |       |

Viewers are observers (a minister's office, an auditor): they see progress and who did what,
but never a citizen's number, which only the failed report, replies and suppression checks hold.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import orjson

from loa.access.identity import Principal, Role, lineage_of
from loa.engine.connection import RedisClient, text
from loa.engine.keys import token_names_key, tokens_key
from loa.errors import ApiError, AuthError

TOKEN_PREFIX = "loa_"
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
TOKEN_NAME_PATTERN = TOKEN_NAME.pattern.replace(r"\Z", "$")  # the same rule, as JSON Schema says it


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token as stored (without the token itself)."""

    name: str
    role: str
    creator: str  # the person who minted it
    created_ms: int
    revoked_ms: int = 0
    person: str = ""  # whose it is; records from before persons existed: the name
    lineage: tuple[str, ...] = ()  # who could have kept a copy: the minter, the minter's minter
    expires_ms: int = 0  # 0: valid until revoked

    @classmethod
    def load(cls, raw: bytes | str) -> TokenRecord:
        """A record as stored (JSON)."""
        data = orjson.loads(raw)
        data["lineage"] = tuple(data.get("lineage") or (data.get("creator", ""),))
        data["person"] = data.get("person") or data["name"]
        return cls(**data)

    def principal(self) -> Principal:
        """Who holds this token."""
        return Principal(self.person, Role.parse(self.role), self.name, self.lineage)


def digest(token: str) -> str:
    """The SHA-256 hex digest that stands for a token in Redis."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def minting(name: str, person: str, role: str) -> str:
    """How the audit log describes a token being made."""
    return f"{name} as {role}" if person == name else f"{name} for {person} as {role}"


class Tokens:
    """Creates, looks up, lists and revokes API tokens in Redis."""

    def __init__(
        self,
        redis: RedisClient,
        namespace: str,
        max_days: float = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.max_days = max_days  # every token expires within this many days (0: no limit)
        self.clock = clock  # epoch seconds, for creation, expiry and revocation times
        self.by_digest = tokens_key(namespace)  # digest -> JSON record
        self.by_name = token_names_key(namespace)  # name -> digest: names are unique

    async def create(
        self,
        name: str,
        role: Role,
        minter: Principal,
        person: str | None = None,
        days: float | None = None,
    ) -> tuple[str, TokenRecord]:
        """A new token for `person` (default: the name), minted by `minter`; shown once.

        It expires after `days` (at most the configured maximum; none: that maximum, if any).
        """
        person = name if person is None else person
        for what, value in (("token name", name), ("person", person)):
            if not TOKEN_NAME.fullmatch(value):
                raise ApiError(
                    f"a {what} is 1-64 letters, digits, '.', '_', '@' or '-'",
                    code="invalid_name",
                )
        if role > minter.role:
            raise ApiError(
                f"a {minter.role.label} cannot mint a token with the {role.label} role",
                code="forbidden",
                status=403,
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        key = digest(token)
        if not await self.redis.hsetnx(self.by_name, name, key):
            raise ApiError(f"a token named {name!r} exists already", code="name_taken", status=409)
        now = self._now_ms()
        expires = self._expiry(now, days)
        record = TokenRecord(
            name, role.label, minter.person, now, 0, person, lineage_of(minter), expires
        )
        await self.redis.hset(self.by_digest, key, orjson.dumps(asdict(record)))
        return token, record

    async def principal(self, token: str) -> Principal:
        """Who holds this token; AuthError (401) when it is unknown or revoked."""
        raw = await self.redis.hget(self.by_digest, digest(token))
        if raw is None:
            raise AuthError("unknown API token", code="invalid_token")
        record = TokenRecord.load(raw)
        if record.revoked_ms:
            raise AuthError("this API token was revoked", code="revoked_token")
        if record.expires_ms and record.expires_ms <= self._now_ms():
            raise AuthError("this API token expired: ask for another", code="expired_token")
        return record.principal()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _expiry(self, now_ms: int, days: float | None) -> int:
        """When a token made now expires (epoch ms; 0: never)."""
        if days is not None and not 0 < days <= 36_500:
            raise ApiError("a token's lifetime is 0-36500 days, more than 0", code="invalid_days")
        limits = [d for d in (days, self.max_days) if d]
        return now_ms + int(min(limits) * 86_400_000) if limits else 0

    async def list(self) -> list[TokenRecord]:
        """Every token ever made, revoked ones too, oldest first."""
        raw = await self.redis.hvals(self.by_digest)
        records = [TokenRecord.load(value) for value in raw]
        return sorted(records, key=lambda r: (r.created_ms, r.name))

    async def revoke(self, name: str) -> TokenRecord:
        """Revoke the named token (again is harmless); ApiError 404 when there is none."""
        key = await self.redis.hget(self.by_name, name)
        raw = await self.redis.hget(self.by_digest, text(key)) if key else None
        if key is None or raw is None:
            raise ApiError(f"no token named {name!r}", code="token_not_found", status=404)
        record = TokenRecord.load(raw)
        if not record.revoked_ms:
            record = TokenRecord(**{**asdict(record), "revoked_ms": self._now_ms()})
            await self.redis.hset(self.by_digest, text(key), orjson.dumps(asdict(record)))
        return record
