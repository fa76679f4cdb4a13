"""Redis key names: every key one script touches shares the hash tag {route:shard}."""

from __future__ import annotations

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


def limiter_key(namespace: str, route: str) -> str:
    """The shared rate-limiter state of a route (a hash: tat, factor, updated, cut)."""
    return f"{namespace}:{{rl:{route}}}"


def region_field(campaign: str, region: str, outcome: str) -> str:
    """The per-campaign counter of `outcome` for recipients of `region` (a shard's cstats)."""
    return f"{campaign}:region:{region}:{outcome}"
