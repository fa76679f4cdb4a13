"""The audit log: an append-only Redis stream of who did what, to which campaign, from where.

Both faces write to it the same way: the API with the caller's address, the command line with
`local`. Every change is recorded when it is done, with `ok` or the stable code it failed with.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from typing import Any

from loa.access.identity import Principal
from loa.engine.connection import RedisClient, text
from loa.errors import LoaError

# a stream id; the bound on digits keeps Redis from refusing it as out of range
STREAM_ID = r"^[0-9]{1,19}-[0-9]{1,19}$"
LOCAL = "local"  # where a command-line action comes from


def audit_key(namespace: str) -> str:
    """The audit stream (never trimmed: nothing in loa deletes from it)."""
    return f"{namespace}:audit"


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

    def __init__(self, redis: RedisClient, namespace: str) -> None:
        self.redis = redis
        self.key = audit_key(namespace)

    async def append(self, entry: AuditEntry) -> str:
        """Write an entry; returns its id."""
        values: dict[Any, Any] = {
            f.name: getattr(entry, f.name) for f in fields(entry) if f.name not in ("id", "at")
        }
        values["at"] = entry.at or int(time.time() * 1000)
        return text(await self.redis.xadd(self.key, values))

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
