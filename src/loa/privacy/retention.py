"""Retention: personal data older than `[retention]` allows is deleted by the campaign clock.

Each sweep does a bounded amount of work (`budget` items of each kind) and is idempotent:
trimming a stream, deleting a key or a file twice is harmless, so several clocks (one per
machine) may sweep at once. What a sweep does not reach this time, the next one does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

from loa.appointments.ledger import drive_prefix, drives_key
from loa.campaigns.clock import CampaignClock
from loa.campaigns.service import Campaigns
from loa.engine.connection import RedisClient, text
from loa.engine.events import inbound_key
from loa.engine.keys import shard_keys
from loa.engine.supervisor import Chore
from loa.followups.reminders import Reminders
from loa.inbox.service import inbox_prefix
from loa.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
BUDGET = 500  # items of each kind one sweep deletes at most


@dataclass
class Swept:
    """What one sweep deleted: counts only."""

    inbound: int = 0
    cases: int = 0
    dead_letters: int = 0
    drives: int = 0
    uploads: int = 0

    def total(self) -> int:
        """Everything deleted."""
        return sum(asdict(self).values())

    def to_json(self) -> dict[str, Any]:
        """The counts, for logs and `--json`."""
        return asdict(self)


async def sweep(
    settings: Settings, redis: RedisClient, now_ms: int | None = None, budget: int = BUDGET
) -> Swept:
    """Delete what is past its retention, at most `budget` items of each kind."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    keep = settings.retention
    swept = Swept()
    inbound_cut = now_ms - int(keep.inbound_days * DAY_MS)
    stream = inbound_key(settings.namespace)
    swept.inbound = int(await redis.xtrim(stream, minid=f"{inbound_cut}-0", approximate=False))
    swept.cases = await _old_cases(redis, settings.namespace, inbound_cut, budget)
    dead_cut = f"{now_ms - int(keep.dead_letters_days * DAY_MS)}-0"
    for route, limits in settings.routes.items():
        for keys in shard_keys(settings.namespace, route, limits.shards):
            trimmed = await redis.xtrim(keys.dead, minid=dead_cut, approximate=False)
            swept.dead_letters += int(trimmed)
    swept.drives = await _ended_drives(redis, settings.namespace, now_ms, keep.appointments_days)
    uploads = settings.data_dir / "uploads"
    cut = now_ms / 1000 - keep.uploads_days * 86_400
    swept.uploads = await asyncio.to_thread(_old_files, uploads, cut, budget)
    return swept


async def _old_cases(redis: RedisClient, namespace: str, cut_ms: int, budget: int) -> int:
    """Delete inbox cases whose last change is older than the cut, with their conversations."""
    prefix = inbox_prefix(namespace)
    old: Any = await redis.zrangebyscore(f"{prefix}:cases", "-inf", cut_ms, start=0, num=budget)
    for raw in old:
        case = text(raw)
        phone = text(await redis.hget(f"{prefix}:case:{case}", "phone"))
        pipe = redis.pipeline(transaction=False)
        if phone:
            # only if it still points here: a newer case of that number stays open
            pipe.hget(f"{prefix}:open", phone)
        pipe.delete(f"{prefix}:case:{case}", f"{prefix}:log:{case}")
        pipe.zrem(f"{prefix}:cases", case)
        pipe.zrem(f"{prefix}:active", case)
        replies = await pipe.execute()
        if phone and text(replies[0]) == case:
            await redis.hdel(f"{prefix}:open", phone)
    return len(old)


async def _ended_drives(redis: RedisClient, namespace: str, now_ms: int, days: float) -> int:
    """Delete one appointments drive whose last session day is more than `days` ago."""
    today = date.fromtimestamp(now_ms / 1000)
    for raw in await redis.smembers(drives_key(namespace)):
        drive = text(raw)
        prefix = drive_prefix(namespace, drive)
        last = ""
        async for session, _ in redis.hscan_iter(f"{prefix}:session", count=1000):
            day = text(session).split("|")[1]
            last = max(last, day)
        if not last or (today - date.fromisoformat(last)).days <= days:
            continue
        keys = [text(key) async for key in redis.scan_iter(match=f"{prefix}:*", count=500)]
        for first in range(0, len(keys), 500):
            await redis.delete(*keys[first : first + 500])
        await redis.srem(drives_key(namespace), drive)
        return 1  # one drive a sweep: bounded
    return 0


def _old_files(folder: Path, cut: float, budget: int) -> int:
    """Delete files in `folder` last changed before `cut` (epoch seconds)."""
    removed = 0
    if not folder.is_dir():
        return 0
    for path in folder.iterdir():
        if removed >= budget:
            break
        try:
            if path.is_file() and path.stat().st_mtime < cut:
                path.unlink()
                removed += 1
        except OSError:
            continue  # another sweep took it first
    return removed


SWEEP_SECONDS = 3600.0  # how often personal data is looked at for its retention


class RetentionSweep:
    """A supervisor's chore: hourly (and at start), delete what is kept past its retention."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._next = 0.0  # monotonic time of the next sweep: the first round

    async def tick(self, redis: RedisClient) -> Swept | None:
        """Sweep when an hour has passed since the last sweep; None when it is not time yet."""
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + SWEEP_SECONDS
        removed = await Campaigns(self.settings, redis).remove_ended_audiences()
        if removed:
            log.info("pinned audiences past their retention removed", extra={"count": removed})
        swept = await sweep(self.settings, redis)
        if swept.total():
            log.info("personal data past its retention removed", extra=swept.to_json())
        return swept


def chores(settings: Settings) -> list[Chore]:
    """What every supervisor runs beside its workers: the campaign clock, the retention sweep,
    the follow-up reminders."""
    return [CampaignClock(settings).tick, RetentionSweep(settings).tick, Reminders(settings).tick]
