"""Connecting to Redis: a single server (TCP, TLS or unix socket) or a Redis Cluster."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis, RedisCluster

from loa.errors import ConfigError

CLUSTER_SCHEME = "redis+cluster://"

RedisClient = Redis | RedisCluster


def connect(url: str, **options: Any) -> RedisClient:
    """A redis.asyncio client for `url`; `redis+cluster://host:port` means a Redis Cluster."""
    options.setdefault("decode_responses", False)
    options.setdefault("health_check_interval", 30)
    try:
        if url.startswith(CLUSTER_SCHEME):
            return RedisCluster.from_url("redis://" + url[len(CLUSTER_SCHEME) :], **options)
        return Redis.from_url(url, **options)
    except ValueError as exc:
        raise ConfigError(f"redis_url {url!r} is not usable: {exc}") from None


def is_cluster(client: RedisClient) -> bool:
    """True when the client talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)
