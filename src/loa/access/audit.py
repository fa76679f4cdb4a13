"""The audit log: an append-only Redis stream of who did what, to which campaign, from where.

Both faces write to it the same way: the API with the caller's address, the command line with
`local`. Every change is recorded when it is done, with `ok` or the stable code it failed with.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields, replace
from typing import Any

from loa.access.identity import Principal
from loa.engine.connection import RedisClient, text
from loa.engine.envelope import now_ms
from loa.engine.keys import audit_key
from loa.errors import LoaError
from loa.settings import Settings

# a stream id; the bound on digits keeps Redis from refusing it as out of range
STREAM_ID = r"^[0-9]{1,19}-[0-9]{1,19}$"
LOCAL = "local"  # where a command-line action comes from


REPEAT_WINDOW = 60  # seconds: one entry per (who, where, what, outcome) refused in a window
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log. Never a phone number: suppression changes are counted."""

    who: str  # the person
    role: str
    action: str
    campaign: str = ""
    ip: str = ""
    outcome: str = "ok"
    detail: str = ""
    token: str = ""  # the token's name, or `cli` for the OS user at the command line
    at: int = 0  # epoch ms
    id: str = ""  # the stream id, once written


class AuditLog:
    """Appends to and reads the audit stream."""

    @classmethod
    def of(cls, redis: RedisClient, settings: Settings) -> AuditLog:
        """The audit log of these settings (namespace and retention)."""
        return cls(redis, settings.namespace, settings.api.audit_retention_days)

    def __init__(self, redis: RedisClient, namespace: str, retention_days: float = 3650) -> None:
        self.redis = redis
        self.key = audit_key(namespace)
        self.retention_ms = int(retention_days * DAY_MS)

    async def append(self, entry: AuditEntry) -> str:
        """Write an entry, trimming what is older than the retention; returns its id."""
        values: dict[Any, Any] = {
            f.name: getattr(entry, f.name) for f in fields(entry) if f.name not in ("id", "at")
        }
        now = now_ms()
        values["at"] = entry.at or now
        oldest = max(0, now - self.retention_ms)
        return text(
            await self.redis.xadd(self.key, values, minid=f"{oldest}-0", approximate=True)
        )

    async def refusal(self, entry: AuditEntry) -> str:
        """Record a refused request, folding repeats so that a flood cannot grow the log.

        The first refusal of a kind (who, where from, what, why) in a minute is written; later
        ones in that minute are only counted, and the next entry of that kind says how many.
        """
        kind = hashlib.sha256(
            "\x00".join((entry.who, entry.ip, entry.action, entry.outcome)).encode()
        ).hexdigest()[:32]
        gate, folded = f"{self.key}:repeat:{kind}", f"{self.key}:folded:{kind}"
        if not await self.redis.set(gate, 1, nx=True, ex=REPEAT_WINDOW):
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(folded)
            pipe.expire(folded, 7 * 86_400)
            await pipe.execute()
            return ""
        before = int(await self.redis.getdel(folded) or 0)
        if before:
            more = f"{before} more like this before"
            entry = replace(entry, detail=f"{entry.detail}; {more}" if entry.detail else more)
        return await self.append(entry)

    async def record(
        self,
        who: Principal,
        action: str,
        campaign: str = "",
        *,
        ip: str = LOCAL,
        outcome: str = "ok",
        detail: str = "",
    ) -> str:
        """Append what `who` did."""
        entry = AuditEntry(
            who=who.person,
            role=who.role.label,
            action=action,
            campaign=campaign,
            ip=ip,
            outcome=outcome,
            detail=detail,
            token=who.token,
        )
        return await self.append(entry)

    async def read(self, limit: int = 50, before: str | None = None) -> list[AuditEntry]:
        """The newest entries first, starting before stream id `before` (None: the newest)."""
        if before is not None and before.replace("0", "") == "-":
            return []  # nothing comes before 0-0 (and Redis refuses "(0-0" as an end)
        top = f"({before}" if before else "+"
        raw: Any = await self.redis.xrevrange(self.key, max=top, min="-", count=limit)
        return [_entry(entry_id, values) for entry_id, values in raw]


@dataclass
class Note:
    """What an audited action adds to its entry while it runs."""

    campaign: str = ""
    detail: str = ""


@contextlib.asynccontextmanager
async def audited(
    log: AuditLog, who: Principal, action: str, campaign: str = "", *, ip: str = LOCAL
) -> AsyncIterator[Note]:
    """Record `action` once it is done: `ok`, or the code of the LoaError it failed with."""
    note = Note(campaign=campaign)
    try:
        yield note
    except LoaError as exc:
        await log.record(who, action, note.campaign, ip=ip, outcome=exc.code, detail=note.detail)
        raise
    await log.record(who, action, note.campaign, ip=ip, detail=note.detail)


def _entry(entry_id: bytes, values: dict[bytes, bytes]) -> AuditEntry:
    data = {text(k): text(v) for k, v in values.items()}
    known = {f.name for f in fields(AuditEntry)} - {"id", "at"}
    return AuditEntry(
        **{k: v for k, v in data.items() if k in known},
        at=int(data.get("at", "0") or 0),
        id=text(entry_id),
    )
