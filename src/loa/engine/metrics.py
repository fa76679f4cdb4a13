"""Prometheus metrics: per-process counters, and queue depth read from Redis at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from loa.engine.keys import LANES, limiter_key, shard_keys
from loa.engine.queue import GROUP

SEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The counters a worker process updates: one `inc(n)` per chunk, never one per message."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else CollectorRegistry()
        self.registry = reg
        self.messages = Counter(
            "loa_messages",
            "Messages by route, lane and outcome "
            "(accepted, failed, dead, expired, retried, throttled, redelivered, fallback_timeout, "
            "fallback_failed).",
            ["route", "lane", "outcome"],
            registry=reg,
        )
        self.batches = Counter("loa_batches", "Batches settled.", ["route", "lane"], registry=reg)
        self.dead_letters = Counter(
            "loa_dead_letters", "Messages moved to dead letters.", ["route"], registry=reg
        )
        self.send_seconds = Histogram(
            "loa_send_seconds",
            "Duration of one adapter send call (one chunk).",
            ["route"],
            buckets=SEND_BUCKETS,
            registry=reg,
        )
        self.ratelimit_wait = Counter(
            "loa_ratelimit_wait_seconds",
            "Time spent waiting for the route's rate limit.",
            ["route"],
            registry=reg,
        )
        self.throttle_events = Counter(
            "loa_throttle_events",
            "Send calls the provider answered with throttling.",
            ["route"],
            registry=reg,
        )
        self.lane_yields = Counter(
            "loa_lane_yields",
            "Batches whose rest went back to their queue because a higher lane had work.",
            ["route", "lane"],
            registry=reg,
        )
        self.receipts = Counter(
            "loa_receipts",
            "Delivery receipts by route and what they said (delivered, undelivered), or "
            "waiting: no sent message known for the id yet, or duplicate: a repeat of one "
            "already counted.",
            ["route", "outcome"],
            registry=reg,
        )
        self.inbound = Counter(
            "loa_inbound",
            "Inbound messages (replies) by route and channel, and whether they opted out.",
            ["route", "channel", "optout"],
            registry=reg,
        )
        self.route_binds = Gauge(
            "loa_route_binds",
            "Connections a route's provider delivers on (SMPP transceiver and receiver binds), "
            "by state: up, or down (being bound again with back-off). Summed over live workers.",
            ["route", "state"],
            multiprocess_mode="livesum",
            registry=reg,
        )


class QueueCollector(Collector):
    """Reads queue depth, age, retries in waiting and rate factors from Redis on each scrape."""

    def __init__(self, redis: Any, namespace: str, routes: dict[str, int]) -> None:
        self.redis = redis  # a synchronous redis.Redis or redis.RedisCluster
        self.namespace = namespace
        self.routes = routes  # route -> shard count

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "loa_queue_batches", "Batches waiting in the queue.", labels=["route", "lane"]
        )
        age = GaugeMetricFamily(
            "loa_queue_oldest_seconds", "Age of the oldest waiting batch.", labels=["route", "lane"]
        )
        delayed = GaugeMetricFamily(
            "loa_queue_delayed_batches", "Retry batches waiting for their time.", labels=["route"]
        )
        factor = GaugeMetricFamily(
            "loa_route_rate_factor",
            "Share of the configured rate in force (throttling).",
            labels=["route"],
        )
        now_ms = time.time() * 1000
        for route, shards in self.routes.items():
            for lane in LANES:
                streams = [k.stream(lane) for k in shard_keys(self.namespace, route, shards)]
                count, oldest = self._depth(streams)
                depth.add_metric([route, lane.label], count)
                age.add_metric(
                    [route, lane.label], max(0.0, (now_ms - oldest) / 1000) if oldest else 0
                )
            later = [
                k.delayed(lane) for k in shard_keys(self.namespace, route, shards) for lane in LANES
            ]
            delayed.add_metric([route], sum(int(self.redis.zcard(key)) for key in later))
            raw = self.redis.hget(limiter_key(self.namespace, route), "factor")
            factor.add_metric([route], float(raw) if raw else 1.0)
        yield from (depth, age, delayed, factor)

    def _depth(self, streams: Iterable[str]) -> tuple[int, float]:
        """Batches waiting (not in flight) and the time stamp of the oldest, in ms."""
        total, oldest = 0, 0.0
        for stream in streams:
            in_flight = self._in_flight(stream)
            total += max(0, int(self.redis.xlen(stream)) - in_flight)
            first = self.redis.xrange(stream, count=1)
            if first:
                stamp = float(first[0][0].split(b"-")[0])
                oldest = stamp if not oldest else min(oldest, stamp)
        return total, oldest

    def _in_flight(self, stream: str) -> int:
        try:
            return int(self.redis.xpending(stream, GROUP)["pending"])
        except redis.ResponseError:
            return 0  # no group yet: no worker has served this route
