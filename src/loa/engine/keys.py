"""Every Redis key name of loa, built here and nowhere else.

Every key starts with the namespace (`loa` by default). Keys one script touches together share
a hash tag, so the script runs on Redis Cluster: a route's shard `{route:shard}` (its fallback
timers too, in shard 0), a campaign `{camp:ID}`, a receipt `{rcpt:ROUTE:ID}`, the inbox
`{inbox}`, a drive `{appt:NAME}`, a campaign's answers `{fu:ID}`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from loa.message import Lane

LANES: tuple[Lane, ...] = tuple(Lane)  # highest priority first


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """The keys of one (route, shard): a stream and a retry set per lane, dead letters, counters."""

    namespace: str
    route: str
    shard: int

    @property
    def tag(self) -> str:
        """The common prefix, hash tag included."""
        return f"{self.namespace}:{{{self.route}:{self.shard}}}"

    def stream(self, lane: Lane) -> str:
        """The stream of batches waiting in `lane`."""
        return f"{self.tag}:q:{lane.label}"

    def delayed(self, lane: Lane) -> str:
        """The sorted set of retry batches of `lane`, scored by due time in milliseconds."""
        return f"{self.tag}:later:{lane.label}"

    @property
    def dead(self) -> str:
        """The stream of messages that gave up, one entry each, with the reason."""
        return f"{self.tag}:dead"

    @property
    def stats(self) -> str:
        """A hash of counters, fields named `lane:outcome`."""
        return f"{self.tag}:stats"

    @property
    def planned(self) -> str:
        """A hash of the ids of batches queued by planners, so none is queued twice."""
        return f"{self.tag}:planned"

    @property
    def campaign_stats(self) -> str:
        """A hash of per-campaign counters, fields named `campaign:outcome` (and, per region of
        the audience, `campaign:region:REGION:outcome`, see region_field)."""
        return f"{self.tag}:cstats"

    @property
    def progress(self) -> str:
        """A hash from stream entry id to the progress of a batch being sent."""
        return f"{self.tag}:progress"

    def streams(self) -> list[str]:
        """Every lane's stream, highest priority first."""
        return [self.stream(lane) for lane in LANES]

    def delayed_sets(self) -> list[str]:
        """Every lane's retry set, highest priority first."""
        return [self.delayed(lane) for lane in LANES]


def shard_keys(namespace: str, route: str, shards: int) -> list[ShardKeys]:
    """The keys of every shard of a route."""
    return [ShardKeys(namespace, route, shard) for shard in range(shards)]


@dataclass(frozen=True, slots=True)
class TimerKeys:
    """A route's timers: waiting (by due time), being fired (by lease end), what they fire."""

    shard: ShardKeys  # the route's shard 0, whose hash slot the timers share

    @property
    def waiting(self) -> str:
        """The sorted set of armed timers, scored by due time (ms)."""
        return f"{self.shard.tag}:silent"

    @property
    def firing(self) -> str:
        """The sorted set of timers a sweep claimed, scored by the end of its lease (ms)."""
        return f"{self.shard.tag}:silent:firing"

    @property
    def fired(self) -> str:
        """The sorted set of timers fired lately, scored by when (ms)."""
        return f"{self.shard.tag}:silent:fired"

    @property
    def payloads(self) -> str:
        """The hash member -> packed [lane, created ms, expires ms, message row, region]."""
        return f"{self.shard.tag}:silent:m"


def timer_keys(namespace: str, route: str) -> TimerKeys:
    """The keys of one route's timers."""
    return TimerKeys(ShardKeys(namespace, route, 0))


def limiter_key(namespace: str, route: str) -> str:
    """The shared rate-limiter state of a route (a hash: tat, factor, updated, cut)."""
    return f"{namespace}:{{rl:{route}}}"


def campaign_key(namespace: str, campaign: str) -> str:
    """The hash that holds one campaign's state and settings."""
    return f"{namespace}:{{camp:{campaign}}}"


def campaign_seen_key(namespace: str, campaign: str) -> str:
    """The people a campaign's planner has queued already (seen.lua), so none is queued twice."""
    return f"{campaign_key(namespace, campaign)}:seen"


def campaign_seen_numbers_key(namespace: str, campaign: str) -> str:
    """The columnar planner's seen numbers of a campaign: a hash of bitmap deltas, fields
    `k/P:n` (partition, delta number)."""
    return f"{campaign_key(namespace, campaign)}:seen-numbers"


def campaigns_key(namespace: str) -> str:
    """A sorted set of campaign ids by creation time."""
    return f"{namespace}:campaigns"


def active_campaigns_key(namespace: str) -> str:
    """A set of the ids of campaigns that may be active (scheduled, running or paused)."""
    return f"{campaigns_key(namespace)}:active"


def suppression_key(namespace: str) -> str:
    """The set of opted-out addresses (E.164 numbers, e-mail addresses, OTT ids)."""
    return f"{namespace}:suppressed"


def optout_salt_key(namespace: str) -> str:
    """The salt of the opt-out list's digests; absent until a number is first erased."""
    return f"{suppression_key(namespace)}:salt"


def reached_key(namespace: str, epoch: float) -> str:
    """Whom campaigns reached on one UTC day: a list, an entry a chunk (`campaigns.reached`).

    One list a day, not one key a person: a chunk is one RPUSH of its packed numbers, and a
    planner reads only the entries appended since its last look.
    """
    return f"{namespace}:reached:{time.strftime('%Y%m%d', time.gmtime(epoch))}"


def legacy_frequency_key(namespace: str, epoch: float) -> str:
    """Whom campaigns reached on one UTC day as loa kept it before the packed lists: a hash,
    person -> `campaign@epoch`. Never written now; read for one frequency window after an
    upgrade, so a cap holds across it, and gone by itself when its expiry comes."""
    return f"{namespace}:freq:{time.strftime('%Y%m%d', time.gmtime(epoch))}"


def asked_key(namespace: str, epoch: float) -> str:
    """The questions campaigns opened on one UTC day: a hash, person -> the question (ask.lua)."""
    return f"{namespace}:asked:{time.strftime('%Y%m%d', time.gmtime(epoch))}"


def receipt_key(namespace: str, route: str, provider_id: str) -> str:
    """The key that meets a message and its receipt."""
    return f"{namespace}:{{rcpt:{route}:{provider_id}}}"


def receipt_pattern(namespace: str) -> str:
    """A SCAN pattern that matches every receipt key."""
    return f"{namespace}:{{rcpt:*"


def receipts_key(namespace: str, campaign: str) -> str:
    """A campaign's receipt counters: fields `ROUTE:delivered` and `ROUTE:undelivered`."""
    return f"{campaign_key(namespace, campaign)}:receipts"


def inbound_key(namespace: str) -> str:
    """The stream of replies and other inbound messages."""
    return f"{namespace}:inbound"


def seen_key(namespace: str, route: str, provider_id: str) -> str:
    """Marks a reply as stored, by its provider id; in the inbound stream's hash slot."""
    return f"{{{inbound_key(namespace)}}}:seen:{route}:{provider_id}"


def binds_key(namespace: str, route: str) -> str:
    """The hash of a route's bind states, one field per worker process."""
    return f"{namespace}:binds:{route}"


def audit_key(namespace: str) -> str:
    """The audit stream: entries older than the retention are trimmed, nothing else deletes."""
    return f"{namespace}:audit"


def tokens_key(namespace: str) -> str:
    """The API tokens: a hash, digest -> JSON record."""
    return f"{namespace}:api:tokens"


def token_names_key(namespace: str) -> str:
    """The API tokens' names: a hash, name -> digest (names are unique)."""
    return f"{namespace}:api:token-names"


def auth_failures_key(namespace: str, client: str) -> str:
    """The failed API logins of one client address, counted for its lock-out."""
    return f"{namespace}:api:auth-failures:{client}"


def inbox_prefix(namespace: str) -> str:
    """Every inbox key starts with this; the hash tag keeps them in one slot."""
    return f"{namespace}:{{inbox}}"


def drive_prefix(namespace: str, drive: str) -> str:
    """Every key of a drive starts with this; its hash tag keeps them in one slot."""
    return f"{namespace}:{{appt:{drive}}}"


def drives_key(namespace: str) -> str:
    """The set of drive names."""
    return f"{namespace}:appointments"


def followup_prefix(namespace: str, campaign: str) -> str:
    """Every key of one campaign's answers starts with this; the hash tag keeps them together."""
    return f"{namespace}:{{fu:{campaign}}}"


def reminders_key(namespace: str, campaign: str) -> str:
    """A campaign's reminders to come: person -> when it is due (epoch ms). It shares the
    hash tag of the campaign's answers (loa.followups), so one script reads both."""
    return f"{followup_prefix(namespace, campaign)}:remind"


def reminding_key(namespace: str) -> str:
    """The campaigns with reminders to send: a set."""
    return f"{namespace}:{{followups}}:reminding"


def followups_cursor_key(namespace: str) -> str:
    """How far the follow-ups have read the inbound stream."""
    return f"{namespace}:{{followups}}:cursor"


def cap_index_key(namespace: str) -> str:
    """The hash from CAP message key to campaign id."""
    return f"{namespace}:cap:alerts"


def regions_key(namespace: str, campaign: str) -> str:
    """A campaign's receipt counters per region of its audience: `REGION:delivered` and
    `REGION:undelivered` (the region travels with the message, see Correlator.sent)."""
    return f"{campaign_key(namespace, campaign)}:regions"


def region_field(campaign: str, region: str, outcome: str) -> str:
    """The per-campaign counter of `outcome` for recipients of `region` (a shard's cstats)."""
    return f"{campaign}:region:{region}:{outcome}"
