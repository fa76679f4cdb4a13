"""What every request handler shares: settings, the Redis client, services, the audit trail."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from fastapi import Request

from loa.access import audit
from loa.access.audit import AuditLog, Note
from loa.access.identity import Principal
from loa.access.tokens import Tokens
from loa.api.uploads import Storage
from loa.campaigns.planner import Report
from loa.campaigns.service import Campaigns
from loa.campaigns.suppression import Suppression
from loa.engine.connection import RedisClient
from loa.engine.events import EventWriter
from loa.engine.metrics import Metrics
from loa.errors import ApiError
from loa.settings import Settings

log = logging.getLogger(__name__)

RedisFactory = Callable[[], RedisClient]


@dataclass
class Services:
    """The services on one Redis client."""

    redis: RedisClient
    campaigns: Campaigns
    tokens: Tokens
    audit: AuditLog
    suppression: Suppression


@dataclass
class ApiContext:
    """One per app: the client is made on first use and closed when the app stops."""

    settings: Settings
    factory: RedisFactory
    uploads: Path
    planning: dict[str, asyncio.Task[Report]] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)  # receipts taken in by webhooks and pings
    _services: Services | None = None
    _storage: Storage | None = None

    @property
    def storage(self) -> Storage:
        """What uploads may take (made on first use; it counts the uploads in progress)."""
        if self._storage is None:
            api, mib = self.settings.api, 1024 * 1024
            self._storage = Storage(
                self.uploads,
                (self.settings.data_dir / "campaigns").resolve(),
                int(api.upload_limit_mb * mib),
                int(api.uploads_total_mb * mib),
                int(api.min_free_disk_mb * mib),
                api.concurrent_uploads,
            )
        return self._storage

    @property
    def services(self) -> Services:
        """The services, made on first use (in the server's event loop)."""
        if self._services is None:
            redis = self.factory()
            namespace = self.settings.namespace
            self._services = Services(
                redis,
                Campaigns(self.settings, redis),
                Tokens(redis, namespace, self.settings.api.token_max_days),
                AuditLog.of(redis, self.settings),
                Suppression(redis, namespace),
            )
        return self._services

    def events(self) -> EventWriter:
        """A short-lived writer of receipts and replies: a webhook awaits its `store` before
        answering; a ping waits until it has `drained`."""
        settings = self.settings
        return EventWriter(self.services.redis, settings.namespace, settings.events, self.metrics)

    def open(self) -> Services:
        """Make the client and services now (at start-up, in the server's loop)."""
        return self.services

    async def close(self) -> None:
        """Stop background planning (a later launch resumes it) and close the client."""
        tasks = [task for task in self.planning.values() if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.planning.clear()
        if self._services is not None:
            await self._services.redis.aclose()
            self._services = None


def context(request: Request) -> ApiContext:
    """The app's context (a FastAPI dependency)."""
    return cast(ApiContext, request.app.state.loa)


def client_ip(request: Request) -> str:
    """Where the request came from (uvicorn resolves trusted proxy headers)."""
    return request.client.host if request.client else ""


@contextlib.asynccontextmanager
async def audited(
    request: Request, who: Principal, action: str, campaign: str = ""
) -> AsyncIterator[Note]:
    """Record `action` in the audit log once it is done: ok, or the code it failed with."""
    log = context(request).services.audit
    async with audit.audited(log, who, action, campaign, ip=client_ip(request)) as note:
        yield note


async def record(
    request: Request,
    who: Principal,
    action: str,
    campaign: str = "",
    outcome: str = "ok",
    detail: str = "",
) -> None:
    """Append one audit entry for this request."""
    log = context(request).services.audit
    await log.record(
        who, action, campaign, ip=client_ip(request), outcome=outcome, detail=detail
    )


def forget_when_done(ctx: ApiContext, campaign_id: str, task: asyncio.Task[Any]) -> None:
    """Drop a finished planning task, logging a failure nobody waited for."""

    def done(finished: asyncio.Task[Any]) -> None:
        if ctx.planning.get(campaign_id) is finished:
            del ctx.planning[campaign_id]
        if finished.cancelled():
            return
        error = finished.exception()
        if error is not None:  # its message may quote audience rows: log the kind only
            log.error(
                "background planning failed",
                extra={"campaign": campaign_id, "error": type(error).__name__},
            )

    task.add_done_callback(done)


def refuse_if_planning(ctx: ApiContext, campaign_id: str) -> None:
    """One planning task per campaign in this process."""
    task = ctx.planning.get(campaign_id)
    if task is not None and not task.done():
        raise ApiError(
            f"campaign {campaign_id} is still being planned", code="planning", status=409
        )
