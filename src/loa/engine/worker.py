"""A worker process: one Redis client, one adapter and one runner per route, on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import uuid
from collections.abc import Sequence

import uvloop

from loa.adapters.base import Adapter, EmitsEvents, Listens
from loa.adapters.registry import create_adapter
from loa.engine.binds import BindReporter
from loa.engine.connection import RedisClient, connect
from loa.engine.control import Controls
from loa.engine.events import EventWriter
from loa.engine.keys import shard_keys
from loa.engine.metrics import Metrics
from loa.engine.queue import Queues
from loa.engine.ratelimit import RateLimiter
from loa.engine.route import RouteRunner
from loa.engine.silence import Silence
from loa.log import setup_logging
from loa.settings import Settings

log = logging.getLogger(__name__)

DRAIN_EVENTS = 5.0  # seconds a stopping worker waits for receipts in flight to be written


def consumer_name() -> str:
    """A name unique to this process, so a restarted worker never inherits a dead one's batches."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """Runs the configured routes until `stop()`; then drains and closes its adapters."""

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        routes: Sequence[str] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.route_names = list(routes or settings.routes)
        for name in self.route_names:
            settings.route(name)  # refuse unknown routes before anything starts
        self.metrics = metrics or Metrics()
        self.consumer = consumer_name()
        self.stopping = asyncio.Event()
        self.queues = Queues(redis, settings.namespace)
        self.adapters: dict[str, Adapter] = {}

    def stop(self) -> None:
        """Stop taking batches; what is in flight finishes and is acknowledged."""
        self.stopping.set()

    async def run(self) -> None:
        """Serve every route until stopped."""
        events = EventWriter(
            self.redis, self.settings.namespace, self.settings.events, self.metrics
        )
        route_shards = {name: limits.shards for name, limits in self.settings.routes.items()}
        # fallback timers of silent messages: claimed again after claim_idle, like batches
        silence = Silence(
            self.redis, self.queues, self.metrics, route_shards, self.settings.worker.claim_idle
        )
        timed: list[str] = []  # the routes with receipts: only their messages wait for one
        runners = []
        listening: dict[str, Listens] = {}
        try:
            for name in self.route_names:
                limits = self.settings.route(name)
                adapter = create_adapter(name, limits.adapter, limits.options)
                self.adapters[name] = adapter
                correlator = None
                if isinstance(adapter, EmitsEvents):
                    adapter.attach(events)
                    correlator = events.correlator
                elif name in self.settings.api.webhook_secrets:
                    correlator = events.correlator  # its receipts come by the API's webhook
                if correlator is not None:
                    timed.append(name)
                if isinstance(adapter, Listens):
                    adapter.listen()  # replies arrive whether or not this route ever sends
                    listening[name] = adapter
                await self.queues.prepare(shard_keys(self.settings.namespace, name, limits.shards))
                limiter = RateLimiter(self.redis, self.settings.namespace, name, limits)
                controls = Controls(
                    self.redis,
                    self.settings.namespace,
                    memory=self.settings.planning.frequency_memory,
                )
                runners.append(
                    RouteRunner(
                        name,
                        limits,
                        adapter,
                        self.queues,
                        limiter,
                        self.metrics,
                        self.consumer,
                        self.settings.worker,
                        self.stopping,
                        controls,
                        correlator,
                        route_shards,
                        silence if correlator is not None else None,
                    )
                )
            log.info(
                "worker started", extra={"routes": self.route_names, "consumer": self.consumer}
            )
            binds = BindReporter(
                self.redis, self.settings.namespace, self.consumer, listening, self.metrics
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(binds.run(self.stopping), name="binds")
                if timed:
                    group.create_task(silence.run(timed, self.stopping), name="silence")
                async with asyncio.TaskGroup() as routes:
                    for runner in runners:
                        routes.create_task(runner.run(), name=f"route-{runner.name}")
            # receipts written now are acknowledged before the binds close; later ones are not,
            # and their SMSC sends them again to another worker
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_EVENTS):
                    await events.drained()
        finally:
            await self._close_adapters()
            await events.drained()
            log.info("worker stopped", extra={"consumer": self.consumer})

    async def _close_adapters(self) -> None:
        for adapter in self.adapters.values():
            await adapter.aclose()


def connections_needed(settings: Settings, routes: Sequence[str] | None) -> int:
    """One connection per sender (each may block in a read), plus claimers, heartbeats, spare."""
    names = list(routes or settings.routes)
    return sum(settings.route(name).concurrency + 2 for name in names) + 8


async def _serve(settings: Settings, redis_url: str, routes: Sequence[str] | None) -> None:
    redis = connect(redis_url, max_connections=connections_needed(settings, routes))
    worker = Worker(settings, redis, routes)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    _stop_with_supervisor(loop, worker)
    try:
        await worker.run()
    finally:
        await redis.aclose()


def _stop_with_supervisor(loop: asyncio.AbstractEventLoop, worker: Worker) -> None:
    """Drain and exit when the supervisor that started this process is gone (kill -9 too).

    A process started by multiprocessing holds the read end of a pipe whose other end only the
    parent holds: it reads end-of-file the moment the parent exits, however it exits. Without
    this, a worker outlives a killed `loa server`, and the next server starts another beside it.
    """
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    if sentinel is None:
        return  # not a supervisor's child (`loa worker` in one process, tests)

    def orphaned() -> None:
        loop.remove_reader(sentinel)
        log.warning("the supervisor is gone; draining and exiting", extra={"pid": os.getpid()})
        worker.stop()

    loop.add_reader(sentinel, orphaned)


def process_main(settings: Settings, redis_url: str, routes: Sequence[str] | None) -> None:
    """Entry point of a worker child process."""
    setup_logging()
    uvloop.run(_serve(settings, redis_url, routes))
