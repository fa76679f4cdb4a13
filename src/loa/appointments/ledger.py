"""The capacity ledger of one vaccination drive, in Redis: sites, sessions, places and who waits.

Every change runs in a Lua script of `lua/` (keys and arguments documented at the top of each;
`common.lua`, put in front of each, lists the keys), so two allocations, replies giving places
back and operators' changes may all run at once and no session is ever over its capacity: a
place is taken by the script that checks there is room. All keys of a drive share the hash tag
`{appt:DRIVE}`, so the same code runs on Redis Cluster.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from loa.appointments.inputs import Session, Site
from loa.engine.connection import RedisClient, text
from loa.engine.keys import drive_prefix, drives_key
from loa.engine.scripts import scripts
from loa.errors import AppointmentError

DRIVE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
BATCH = 500  # people (or sites and sessions) per script call: a few ms of the server's time
PIPELINE = 8  # script calls per round trip
STATES = ("placed", "confirmed", "waiting", "cancelled")
REASONS = {
    "no_session": "no session left",
    "no_site": "no site in province",
    "unknown_site": "no such site",
}


def check_drive(name: str) -> str:
    """`name` if it can name a drive (lower-case letters, digits, '-' and '_'), else refused."""
    if not DRIVE.fullmatch(name):
        raise AppointmentError(
            f"drive {name[:70]!r} is not a drive name: use lower-case letters, digits, '-' "
            "and '_', at most 63 characters, e.g. 'hcm-2026-12'"
        )
    return name


@dataclass(frozen=True, slots=True)
class Person:
    """One person as the ledger holds them."""

    phone: str
    state: str  # placed, confirmed, waiting or cancelled
    reason: str  # why someone waits: no_session, no_site, unknown_site
    session: str
    run: str  # the allocation run that placed them last, or `reply`
    order: str  # group, registered_at and first line, fixed width: people sort by it
    kind: str  # s: a site, p: a province
    preference: str

    @classmethod
    def parse(cls, phone: str, raw: str) -> Person:
        """A person from their ledger record."""
        state, session, run, order, kind, preference = raw.split("\t")
        state, _, reason = state.partition(":")
        return cls(phone, state, reason, session, run, order, kind, preference)

    @property
    def group(self) -> int:
        """The priority group (1 is first)."""
        return int(self.order[:3])

    @property
    def registered_ms(self) -> int:
        """When they registered, in ms since 1970."""
        return int(self.order[3:18])

    @property
    def holds(self) -> bool:
        """Whether they hold a place."""
        return self.state in ("placed", "confirmed")


@dataclass(frozen=True, slots=True)
class SessionState:
    """A session's capacity and places taken."""

    id: str
    site: str
    province: str
    day: str  # YYYY-MM-DD
    start: str  # HH:MM
    end: str
    capacity: int
    booked: int

    @property
    def free(self) -> int:
        """Places left."""
        return max(0, self.capacity - self.booked)


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """A site as the ledger holds it."""

    id: str
    province: str
    name: str
    address: str


@dataclass(frozen=True, slots=True)
class Change:
    """What one change did: the outcome, the session before and after, and who was placed
    from the wait in a place it freed (with that place)."""

    outcome: str
    before: str = ""
    after: str = ""
    waiter: str = ""
    given: str = ""


_OUTCOMES = {b"P": "placed", b"K": "kept", b"C": "cancelled"}


def order_key(group: int, registered_ms: int, run: int, line: int) -> str:
    """The fixed-width key people are placed by: group, then registered_at, run and line."""
    return f"{group:03d}{registered_ms:015d}{run:06d}{line:010d}"


class _Script:
    """A script of lua/ whose only key is the drive's prefix."""

    def __init__(self, redis: RedisClient, name: str) -> None:
        self.script = scripts(redis, "loa.appointments")[name]

    async def run(self, prefix: str, args: list[Any]) -> Any:
        """One call."""
        return (await self.run_many(prefix, [args]))[0]

    async def run_many(self, prefix: str, calls: list[list[Any]]) -> list[Any]:
        """Several calls in one round trip, in order (a call is atomic, the batch is not)."""
        return await self.script.run_many([([prefix], args) for args in calls])


class Ledger:
    """One drive's ledger."""

    def __init__(self, redis: RedisClient, namespace: str, drive: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self.drive = check_drive(drive)
        self.prefix = drive_prefix(namespace, drive)
        self._sites = _Script(redis, "sites")
        self._allocate = _Script(redis, "allocate")
        self._change = _Script(redis, "change")
        self._fields = _Script(redis, "fields")

    def key(self, suffix: str) -> str:
        """One of the drive's keys."""
        return f"{self.prefix}:{suffix}"

    async def exists(self) -> bool:
        """Whether the drive has had a run (or has sites)."""
        return bool(await self.redis.sismember(drives_key(self.namespace), self.drive))

    async def require(self) -> None:
        """Refuse a drive nobody has allocated yet."""
        if not await self.exists():
            raise AppointmentError(f"no appointments drive {self.drive!r}")

    async def next_run(self) -> int:
        """Number a new allocation run (and list the drive)."""
        await self.redis.sadd(drives_key(self.namespace), self.drive)
        return int(await self.redis.incr(self.key("runs")))

    async def record_sites(
        self, sites: Sequence[Site], sessions: Sequence[Session]
    ) -> tuple[list[str], list[str]]:
        """Store sites, then sessions; one outcome word per site and per session (sites.lua)."""
        site_words: list[str] = []
        for first in range(0, len(sites), BATCH):
            args: list[Any] = [len(sites[first : first + BATCH])]
            for site in sites[first : first + BATCH]:
                details = orjson.dumps({"name": site.name, "address": site.address}).decode()
                args += [site.id, site.province, details]
            site_words += [text(word) for word in await self._sites.run(self.prefix, args)]
        session_words: list[str] = []
        for first in range(0, len(sessions), BATCH):
            args = [0]
            for session in sessions[first : first + BATCH]:
                args += [session.id, session.score, f"{session.end:%H:%M}", session.capacity]
            session_words += [text(word) for word in await self._sites.run(self.prefix, args)]
        return site_words, session_words

    async def allocate(
        self, candidates: Sequence[str], first: int, last: int | None, run: int
    ) -> Counter[str]:
        """Place `candidates` (`order<TAB>phone<TAB>kind<TAB>preference`, in order).

        Counts what became of them: placed, kept, cancelled, and `waiting:REASON`.
        """
        outcomes: Counter[str] = Counter()
        bounds = [first, "+inf" if last is None else last, run]
        for start in range(0, len(candidates), BATCH * PIPELINE):
            calls = [
                [*bounds, "\n".join(candidates[batch : batch + BATCH])]
                for batch in range(start, min(len(candidates), start + BATCH * PIPELINE), BATCH)
            ]
            for reply in await self._allocate.run_many(self.prefix, calls):
                for word in reply:
                    kind = word[:1]
                    outcomes["waiting:" + text(word[1:]) if kind == b"W" else _OUTCOMES[kind]] += 1
        return outcomes

    async def change(self, action: str, phone: str, reference: str, now: int, by: str) -> Change:
        """Apply one person's change (change.lua): confirm, release, move, or none."""
        reply = await self._change.run(self.prefix, [action, phone, reference, now, by])
        return Change(*(text(part) for part in reply))

    async def people(self, phones: Sequence[str]) -> list[Person | None]:
        """The ledger records of `phones` (None: not known)."""
        found: list[Person | None] = []
        for first in range(0, len(phones), 5000):
            chunk = phones[first : first + 5000]
            raw: list[Any] = await self.redis.hmget(self.key("people"), chunk)
            found += [
                Person.parse(phone, text(value)) if value is not None else None
                for phone, value in zip(chunk, raw, strict=True)
            ]
        return found

    async def waiting(self) -> list[str]:
        """Everyone waiting, as `order|phone`, first in order first."""
        found: list[str] = []
        start = 0
        while True:
            page: list[Any] = await self.redis.zrange(self.key("waiting"), start, start + 9999)
            found += [text(member) for member in page]
            if len(page) < 10000:
                return found
            start += 10000

    async def orders(self) -> list[str]:
        """Everyone the drive knows, as `order|phone`, in order."""
        found: list[str] = []
        cursor: Any = 0
        while True:
            reply: Any = await self.redis.hscan(self.key("people"), cursor, count=5000)
            cursor, page = reply
            for phone, raw in page.items():
                found.append(f"{text(raw).split(chr(9), 4)[3]}|{text(phone)}")
            if not cursor:
                break
        found.sort()
        return found

    async def store_fields(self, fields: dict[str, dict[str, str]]) -> None:
        """Keep each person's other columns for the messages (the newest file's win)."""
        if fields:
            lines = "\n".join(
                f"{phone}\t{orjson.dumps(values).decode()}" for phone, values in fields.items()
            )
            await self._fields.run(self.prefix, [lines])

    async def fields(self, phones: Sequence[str]) -> list[dict[str, str]]:
        """The other columns of `phones` ({} for none)."""
        raw: list[Any] = await self.redis.hmget(self.key("fields"), list(phones))
        return [orjson.loads(value) if value else {} for value in raw]

    async def add_columns(self, columns: Sequence[str]) -> list[str]:
        """Remember the registrants' other columns, in the order first seen; all of them."""
        known = await self.columns()
        added = [column for column in columns if column not in known]
        if added:
            await self.redis.hset(self.key("meta"), "columns", orjson.dumps(known + added))
        return known + added

    async def columns(self) -> list[str]:
        """The registrants' other columns, as `add_columns` remembered them."""
        raw = await self.redis.hget(self.key("meta"), "columns")
        return list(orjson.loads(raw)) if raw else []

    async def sites(self) -> dict[str, SiteInfo]:
        """Every site."""
        raw: dict[Any, Any] = await self.redis.hgetall(self.key("site"))
        found = {}
        for site_id, value in raw.items():
            province, _, details = text(value).partition("\t")
            info = orjson.loads(details)
            found[text(site_id)] = SiteInfo(text(site_id), province, info["name"], info["address"])
        return found

    async def sessions(self) -> list[SessionState]:
        """Every session with its capacity and places taken, by site and time."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.key("session"))
        pipe.hgetall(self.key("cap"))
        pipe.hgetall(self.key("booked"))
        info, caps, booked = await pipe.execute()
        found = []
        for raw_id, value in info.items():
            session_id = text(raw_id)
            _, province, end = text(value).split("\t")
            site, day, start = session_id.split("|")
            found.append(
                SessionState(
                    session_id,
                    site,
                    province,
                    day,
                    start,
                    end,
                    int(caps.get(raw_id, 0)),
                    int(booked.get(raw_id, 0)),
                )
            )
        found.sort(key=lambda s: (s.site, s.day, s.start))
        return found

    async def counts(self) -> dict[int, dict[str, int]]:
        """Per priority group: placed (confirmed among them), confirmed, waiting, cancelled."""
        raw: dict[Any, Any] = await self.redis.hgetall(self.key("count"))
        groups: dict[int, dict[str, int]] = {}
        for field, value in raw.items():
            state, _, group = text(field).partition(":")
            counts = groups.setdefault(int(group), dict.fromkeys(STATES, 0))
            counts[state] = int(value)
        return dict(sorted(groups.items()))

    async def history(self, after: str = "-", count: int = 1000) -> list[dict[str, str]]:
        """Changes in the order they happened, after stream id `after` ("-": from the first)."""
        start = after if after == "-" else f"({after}"
        entries: Any = await self.redis.xrange(self.key("history"), min=start, count=count)
        return [
            {"id": text(entry_id), **{text(k): text(v) for k, v in values.items()}}
            for entry_id, values in entries
        ]

    async def cursor(self) -> str:
        """The last inbound reply applied ("" if none)."""
        return text(await self.redis.get(self.key("cursor")))
