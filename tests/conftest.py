"""Shared fixtures: real Redis servers (the local service and loa's embedded one), both loops."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from test_cluster import SERVER_BINARY
from test_cluster import cluster as cluster  # a three-node Redis Cluster, started per module

from loa.engine.connection import RedisClient, connect
from loa.engine.embedded import EmbeddedRedis, answers
from loa.settings import Settings

SERVICE_URL = "redis://127.0.0.1:6379/0"


# `make test` runs the whole matrix: both event loops, both Redis servers. `make unit` sets
# LOA_TEST_MATRIX=quick for a developer's run on uvloop and the local Redis service alone.
QUICK = os.environ.get("LOA_TEST_MATRIX") == "quick"
LOOPS = [
    pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
]
SERVERS = ["service", "embedded"]


@pytest.fixture(params=LOOPS[1:] if QUICK else LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every async test runs on the default event loop and on uvloop."""
    return request.param


@pytest.fixture(scope="session")
def embedded_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """loa's own embedded server, started once for the session in a private data directory."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("embedded"))
    with server:
        yield server.url


@pytest.fixture(scope="session")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis service on 127.0.0.1:6379; a private server stands in if it is down."""
    if answers(SERVICE_URL):
        yield SERVICE_URL
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("service-standin")) as server:
        yield server.url


@pytest.fixture(params=SERVERS[:1] if QUICK else SERVERS)
def redis_url(request: pytest.FixtureRequest) -> str:
    """A real Redis: the local service, then loa's embedded server."""
    name = "service_url" if request.param == "service" else "embedded_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A key namespace of this test's own, removed afterwards (a cluster goes with its module)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    if redis_url.startswith("redis+cluster"):
        return
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        keys = list(client.scan_iter(match=f"{name}:*", count=1000))
        if keys:
            client.delete(*keys)


WORKFLOW_SERVERS = [
    "service",
    pytest.param(
        "cluster",
        marks=pytest.mark.skipif(SERVER_BINARY is None, reason="no server binary for a cluster"),
    ),
]


@pytest.fixture(params=WORKFLOW_SERVERS[:1] if QUICK else WORKFLOW_SERVERS)
def service_or_cluster_url(request: pytest.FixtureRequest, service_url: str) -> str:
    """The local service, then a three-node Redis Cluster: for the workflows (appointments,
    follow-ups, the inbox), whose scripts must keep each of their keys' sets in one slot."""
    if request.param == "cluster":
        return str(request.getfixturevalue("cluster").url)
    return service_url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[RedisClient]:
    """An async client on the test's Redis."""
    client = connect(redis_url)
    yield client
    await client.aclose()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(redis_url: str, namespace: str, tmp_path: Path) -> SettingsFactory:
    """Build Settings for this test's Redis and namespace: make_settings(routes={...}, ...)."""

    def build(**values: Any) -> Settings:
        data: dict[str, Any] = {
            "redis_url": redis_url,
            "namespace": namespace,
            "data_dir": str(tmp_path / "data"),
            "worker": {"metrics_port": 0, "claim_idle": 1.0, "drain_timeout": 10.0},
        }
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        for route in data.get("routes", {}).values():
            route.setdefault("timeout", 0.9)  # sends must end before claim_idle (1 s here)
        return Settings.from_mapping(data, source="test settings")

    return build
