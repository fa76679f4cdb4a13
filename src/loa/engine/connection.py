"""Connecting to Redis: a single server (TCP, TLS or unix socket) or a Redis Cluster."""

from __future__ import annotations

from typing import Any

import redis
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

from loa.errors import ConfigError
from loa.log import hide_userinfo

CLUSTER_SCHEME = "redis+cluster://"

RedisClient = Redis | RedisCluster


def connect(url: str, max_connections: int | None = None, **options: Any) -> RedisClient:
    """A redis.asyncio client for `url`; `redis+cluster://host:port` means a Redis Cluster.

    With `max_connections`, a caller that needs one more connection waits for one instead of
    failing: a worker sizes it to its senders, each of which may hold one in a blocking read.
    """
    options.setdefault("decode_responses", False)
    options.setdefault("health_check_interval", 30)
    try:
        if url.startswith(CLUSTER_SCHEME):
            if max_connections:
                options["max_connections"] = max_connections
            return RedisCluster.from_url("redis://" + url[len(CLUSTER_SCHEME) :], **options)
        if max_connections:
            pool = BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=None, **options
            )
            return Redis.from_pool(pool)
        return Redis.from_url(url, **options)
    except ValueError as exc:
        shown = hide_userinfo(url)
        raise ConfigError(f"redis_url {shown!r} is not usable: {hide_userinfo(str(exc))}") from None


def connect_sync(url: str, **options: Any) -> redis.Redis | redis.RedisCluster:
    """A synchronous client for `url` (for threads and commands outside an event loop)."""
    try:
        if url.startswith(CLUSTER_SCHEME):
            return redis.RedisCluster.from_url("redis://" + url[len(CLUSTER_SCHEME) :], **options)
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise ConfigError(f"redis_url {url!r} is not usable: {exc}") from None


def is_cluster(client: RedisClient) -> bool:
    """True when the client talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def text(value: bytes | str | None) -> str:
    """A reply value as text (replies are bytes: clients run without decode_responses)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
