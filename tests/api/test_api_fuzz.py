"""Schemathesis against the API's own OpenAPI spec, over ASGI with an admin token: never a 5xx."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from loa.access.identity import Role, program
from loa.access.tokens import Tokens
from loa.api import create_app
from loa.api.app import openapi_json
from loa.engine.connection import connect

# the spec needs no Redis: the operations are known when the tests are collected
SPEC = orjson.loads(openapi_json())["paths"]
CASES = [
    pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
    for path, operations in SPEC.items()
    for method, operation in operations.items()
    for mode in GenerationMode
    # negative data needs something to break: parameters or a body
    if mode is GenerationMode.POSITIVE or {"parameters", "requestBody"} & set(operation)
]


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


@pytest.fixture
def app(make_settings, redis_url, tmp_path) -> Iterator[FastAPI]:
    settings = make_settings(
        routes={"sms": {"adapter": "file", "options": {"path": str(tmp_path / "sink.jsonl")}}},
        channels={"sms": {"default": "sms"}},
        api={"approval_threshold": 5, "upload_limit_mb": 0.05},
    )
    yield create_app(settings, lambda: connect(redis_url))
    asgi.shutdown_lifespans()  # schemathesis keeps an app's lifespan running until told


@pytest.fixture
def admin_token(redis_url, namespace) -> str:
    async def make() -> str:
        client = connect(redis_url)
        try:
            token, _ = await Tokens(client, namespace).create(
                "fuzz-admin", Role.ADMIN, program("test", Role.ADMIN)
            )
            return token
        finally:
            await client.aclose()

    return asyncio.run(make())


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_server_errors(app, admin_token, method, path, mode):
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]
    headers = {"Authorization": f"Bearer {admin_token}"}

    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        case.call_and_validate(headers=headers, checks=[not_a_server_error])

    run()
