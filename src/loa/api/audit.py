"""The audit log: an append-only Redis stream of who did what, to which campaign, from where."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

from loa.engine.connection import RedisClient, text

# a stream id; the bound on digits keeps Redis from refusing it as out of range
STREAM_ID = r"^[0-9]{1,19}-[0-9]{1,19}$"


def audit_key(namespace: str) -> str:
    """The audit stream (never trimmed: nothing in loa deletes from it)."""
    return f"{namespace}:audit"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log. Never a phone number: suppression changes are counted."""

    who: str
    role: str
    action: str
    campaign: str = ""
    ip: str = ""
    outcome: str = "ok"
    detail: str = ""
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

    async def read(self, limit: int = 50, before: str | None = None) -> list[AuditEntry]:
        """The newest entries first, starting before stream id `before` (None: the newest)."""
        if before is not None and before.replace("0", "") == "-":
            return []  # nothing comes before 0-0 (and Redis refuses "(0-0" as an end)
        top = f"({before}" if before else "+"
        raw: Any = await self.redis.xrevrange(self.key, max=top, min="-", count=limit)
        return [_entry(entry_id, values) for entry_id, values in raw]


def _entry(entry_id: bytes, values: dict[bytes, bytes]) -> AuditEntry:
    data = {text(k): text(v) for k, v in values.items()}
    known = {f.name for f in fields(AuditEntry)} - {"id", "at"}
    return AuditEntry(
        **{k: v for k, v in data.items() if k in known},
        at=int(data.get("at", "0") or 0),
        id=text(entry_id),
    )
