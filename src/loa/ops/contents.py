"""What a snapshot holds, read from a server that loaded it: keys, campaigns, work in flight.

The in-flight count is the bound on duplicates a restore can add by itself: batches that a
worker held at the snapshot are claimed again after a restore and resume from their last
checkpoint, so the messages they held without a recorded result may be sent a second time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from loa.engine.connection import text
from loa.engine.control import campaign_key
from loa.engine.envelope import unpack
from loa.engine.progress import Progress
from loa.engine.queue import FIELD, GROUP
from loa.errors import EnvelopeError
from loa.message import FINAL
from loa.ops.scratch import keys_of

PENDING_PAGE = 1000


@dataclass(slots=True)
class CampaignCount:
    """One campaign at the snapshot: its state, results recorded, and messages in flight."""

    state: str = ""
    recorded: int = 0  # messages with a final result counted, or checkpointed in a batch
    in_flight: int = 0  # messages of held batches with no result recorded


@dataclass(slots=True)
class Contents:
    """The counts a manifest records for one snapshot (or the sum of a cluster's)."""

    keys: int = 0  # every key in every database of the snapshot
    namespace_keys: int = 0
    types: dict[str, int] = field(default_factory=dict)  # the namespace's keys by type
    memory: int = 0  # bytes the server used holding it
    batches_waiting: int = 0
    batches_in_flight: int = 0
    in_flight: int = 0  # messages: the most a restore can send twice by itself
    campaigns: dict[str, CampaignCount] = field(default_factory=dict)

    def add(self, other: Contents) -> None:
        """Add the counts of another node's snapshot."""
        self.keys += other.keys
        self.namespace_keys += other.namespace_keys
        self.types = dict(Counter(self.types) + Counter(other.types))
        self.memory += other.memory
        self.batches_waiting += other.batches_waiting
        self.batches_in_flight += other.batches_in_flight
        self.in_flight += other.in_flight
        for name, count in other.campaigns.items():
            mine = self.campaigns.setdefault(name, CampaignCount())
            mine.state = mine.state or count.state
            mine.recorded += count.recorded
            mine.in_flight += count.in_flight

    def to_json(self) -> dict[str, Any]:
        """As the manifest stores it."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Contents:
        """As the manifest stored it."""
        values = dict(data)
        values["campaigns"] = {
            name: CampaignCount(**count) for name, count in data.get("campaigns", {}).items()
        }
        return cls(**values)


def count(client: redis.Redis, namespace: str) -> Contents:
    """Count what the server `client` talks to holds (a scratch server with a snapshot)."""
    found = Contents()
    keyspace: dict[str, Any] = client.info("keyspace")
    found.keys = sum(int(db.get("keys", 0)) for db in keyspace.values() if isinstance(db, dict))
    found.memory = int(client.info("memory").get("used_memory", 0))
    types: Counter[str] = Counter()
    streams: list[str] = []
    cstats: list[str] = []
    for keys in _batches(keys_of(client, namespace)):
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
        for key, raw_kind in zip(keys, pipe.execute(), strict=True):
            kind, name = text(raw_kind), text(key)
            types[kind] += 1
            if kind == "stream" and ":q:" in name:
                streams.append(name)
            elif kind == "hash" and name.endswith(":cstats"):
                cstats.append(name)
    found.types = dict(types)
    found.namespace_keys = sum(types.values())
    for stream in streams:
        _count_stream(client, stream, found)
    for name in cstats:
        _count_results(client, name, found)
    _campaign_states(client, namespace, found)
    return found


def _batches(keys: Iterator[bytes], size: int = 1000) -> Iterator[list[bytes]]:
    """Keys in lists of `size`, one round trip each."""
    batch: list[bytes] = []
    for key in keys:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _count_stream(client: redis.Redis, stream: str, found: Contents) -> None:
    length = int(client.xlen(stream))
    try:
        held = int(client.xpending(stream, GROUP)["pending"])
    except redis.ResponseError:
        held = 0  # no group: no worker took from it yet
    found.batches_waiting += max(0, length - held)
    found.batches_in_flight += held
    if not held:
        return
    progress_key = stream[: stream.index("}:") + 2] + "progress"
    start = "-"
    while True:
        page: Any = client.xpending_range(stream, GROUP, start, "+", PENDING_PAGE)
        for entry in page:
            _count_held(client, stream, progress_key, text(entry["message_id"]), found)
        if len(page) < PENDING_PAGE:
            return
        start = "(" + text(page[-1]["message_id"])


def _count_held(
    client: redis.Redis, stream: str, progress_key: str, entry_id: str, found: Contents
) -> None:
    entries: Any = client.xrange(stream, entry_id, entry_id)
    if not entries:
        return
    try:
        batch = unpack(entries[0][1].get(FIELD, b""))
    except EnvelopeError:
        return  # unreadable: a worker quarantines it, it is never sent
    saved: Any = client.hget(progress_key, entry_id)
    done = 0
    if saved is not None:
        try:
            done = Progress.unpack(saved).done
        except EnvelopeError:
            done = 0
    open_count = max(0, len(batch.messages) - done)
    found.in_flight += open_count
    if batch.campaign:
        mine = found.campaigns.setdefault(batch.campaign, CampaignCount())
        mine.in_flight += open_count
        mine.recorded += done


def _count_results(client: redis.Redis, key: str, found: Contents) -> None:
    finals = {str(outcome) for outcome in FINAL}
    counters: Any = client.hgetall(key)
    for raw_field, value in counters.items():
        campaign, _, outcome = text(raw_field).rpartition(":")
        # a campaign id has no colon: `campaign:region:R:outcome` counts a region's share again
        if campaign and ":" not in campaign and outcome in finals:
            found.campaigns.setdefault(campaign, CampaignCount()).recorded += int(value)


def _campaign_states(client: redis.Redis, namespace: str, found: Contents) -> None:
    ids: Any = client.zrange(f"{namespace}:campaigns", 0, -1)
    for raw in ids:
        campaign = text(raw)
        state = client.hget(campaign_key(namespace, campaign), "state")
        found.campaigns.setdefault(campaign, CampaignCount()).state = text(state)
