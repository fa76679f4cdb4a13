"""The control API application: `create_app(settings)` builds it, nothing happens at import."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute
from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loa import __version__
from loa.api import (
    admin,
    appointments,
    campaigns,
    cap,
    dashboard,
    followups,
    inbox,
    provinces,
    webhooks,
)
from loa.api.context import ApiContext, RedisFactory
from loa.api.models import ErrorBody, Health, Readiness, RouteBindCount
from loa.api.problems import error_response, install
from loa.api.readiness import RouteChecks
from loa.api.uploads import uploads_root
from loa.campaigns.approval import known_test_numbers
from loa.engine.connection import RedisClient, connect
from loa.errors import ApiError, ConfigError
from loa.settings import Settings

JSON_LIMIT = 2 << 20  # bytes in a JSON body: ten thousand addresses fit many times over
READY_TIMEOUT = 2.0
UPLOAD_ROUTES = frozenset({("POST", "/api/v1/campaigns"), ("POST", "/api/v1/campaigns/validate")})
UPLOAD_PATHS = re.compile(r"/api/v1/appointments/[^/]+/allocate")  # POST: files, not JSON
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (401, "no valid token"),
        (403, "the token's role may not do this"),
        (404, "no such campaign or token"),
        (409, "the campaign's state forbids it"),
        (413, "too large"),
        (422, "the request is not valid"),
        (503, "Redis is not reachable"),
    )
}


def create_app(settings: Settings, redis_client_factory: RedisFactory | None = None) -> FastAPI:
    """The API on `settings`; `redis_client_factory` makes its client (default: redis_url)."""
    webhooks.check_secrets(settings)
    known_test_numbers(settings.api.test_numbers)  # a bad one stops the API at start, named
    ctx = ApiContext(
        settings=settings,
        factory=redis_client_factory or _default_factory(settings),
        uploads=uploads_root(settings.data_dir),
    )
    checks = RouteChecks(settings, ctx.events, lambda: ctx.services.redis)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.open()  # the client belongs to the server's own event loop
        try:
            await checks.build()
            yield
        finally:
            await ctx.close()

    app = FastAPI(
        title="loa control API",
        version=__version__,
        summary="Create, approve, launch and steer campaigns; tokens, opt-outs and the audit log.",
        lifespan=lifespan,
        responses=ERRORS,
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: the spec is in docs/
        redoc_url=None,
        generate_unique_id_function=_operation_id,
    )
    app.state.loa = ctx
    install(app, ctx.uploads)
    app.add_middleware(BodyLimit)
    _health(app, ctx, checks)
    app.include_router(campaigns.router)
    app.include_router(provinces.router)
    app.include_router(cap.router)
    app.include_router(appointments.router)
    app.include_router(inbox.router)
    app.include_router(followups.router)
    app.include_router(admin.router)
    app.include_router(webhooks.router)
    app.include_router(dashboard.router)
    return app


def _operation_id(route: APIRoute) -> str:
    return route.name


def _default_factory(settings: Settings) -> RedisFactory:
    url = settings.redis_url
    if not url:
        raise ConfigError("the API needs redis_url (`loa api` starts the embedded server if unset)")
    return lambda: connect(url)


def _health(app: FastAPI, ctx: ApiContext, checks: RouteChecks) -> None:
    @app.get("/healthz", name="health.live", tags=["health"], responses={}, summary="Process up")
    async def healthz() -> Health:
        """The process answers."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        name="health.ready",
        tags=["health"],
        responses={503: {"model": ErrorBody, "description": "Redis or a route is down"}},
        summary="Redis reachable, routes bound",
    )
    async def readyz() -> Readiness:
        """Ready when Redis answers PING in time and every route is up; 503 naming what is not.

        A route is up when its adapter could be built at start-up and either its workers
        report at least one of its receiving binds (SMPP transceivers, receivers) up, or, with
        no worker reporting, its provider answered the last ping (at most a few seconds old;
        adapters that can ping: SMPP, SMTP). The answer counts each route's binds.
        """
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await ctx.services.redis.ping()
                binds = await checks.binds()
        except (RedisError, OSError, TimeoutError) as exc:
            message = f"Redis is not reachable: {type(exc).__name__}"
            raise ApiError(message, code="redis_unavailable", status=503) from None
        down = await checks.down(binds)
        if down:
            message = "routes down: " + "; ".join(f"{r}: {why}" for r, why in down.items())
            raise ApiError(message, code="routes_down", status=503)
        counts = {
            route: RouteBindCount(up=held.up, down=held.down, workers=held.workers)
            for route, held in binds.items()
        }
        return Readiness(status="ready", binds=counts)


class BodyLimit:
    """Refuse JSON bodies over JSON_LIMIT with 413 (uploads count their own, larger limit)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _upload(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        refusal = _refusal(dict(scope["headers"]).get(b"content-length", b"0"))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > JSON_LIMIT:
                refused = f"a body may have {JSON_LIMIT:,} bytes"
                raise ApiError(refused, code="too_large", status=413)
            return message

        await self.app(scope, limited, send)


def _upload(method: str, path: str) -> bool:
    """Whether the request is an upload, which counts its own (larger) limit."""
    return (method, path) in UPLOAD_ROUTES or (
        method == "POST" and UPLOAD_PATHS.fullmatch(path) is not None
    )


def _refusal(declared: bytes) -> Response | None:
    """The answer to a declared body length that is not a number or is too large, if any."""
    if not declared.isdigit():
        return error_response(400, "bad_content_length", "Content-Length is not a number")
    if int(declared) > JSON_LIMIT:
        return error_response(413, "too_large", f"a body may have {JSON_LIMIT:,} bytes")
    return None


def openapi_json() -> str:
    """The spec as committed in docs/openapi.json (`loa api --print-openapi`): no Redis needed."""
    app = create_app(Settings(), redis_client_factory=_no_redis)
    return orjson.dumps(app.openapi(), option=orjson.OPT_INDENT_2).decode() + "\n"


def _no_redis() -> RedisClient:
    raise ConfigError("printing the OpenAPI spec needs no Redis")
