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
from loa.adapters.registry import create_adapter, receives_receipts
from loa.engine.binds import BindReporter
from loa.engine.connection import RedisClient, connect
from loa.engine.context import RouteContext
from loa.engine.control import ControlsFactory
from loa.engine.events import EventWriter
from loa.engine.keys import shard_keys, timer_keys
from loa.engine.metrics import Metrics
from loa.engine.queue import Queues
from loa.engine.ratelimit import RateLimiter, RateSpec
from loa.engine.route import RouteRunner
from loa.engine.silence import Silence
from loa.log import setup_logging
from loa.settings import Settings

log = logging.getLogger(__name__)

DRAIN_EVENTS = 5.0  # seconds a stopping worker waits for receipts in flight to be written
IDLE_POLL = 0.05  # seconds between two looks at the queues of a worker run until idle


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
        *,
        controls: ControlsFactory | None,
        until_idle: bool = False,
    ) -> None:
        self.settings = settings
        # stop by itself once its routes have nothing left to do (tests, one-off runs)
        self.until_idle = until_idle
        self.redis = redis
        # what campaigns' operators decided, asked before each chunk; None: no campaign layer,
        # every batch is plain engine traffic
        self.controls = controls
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
        listening: dict[str, Listens] = {}
        try:
            runners = [
                await self._runner(name, events, listening, silence, timed)
                for name in self.route_names
            ]
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
                if self.until_idle:
                    group.create_task(self._stop_when_idle(timed), name="idle")
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

    async def _runner(
        self,
        name: str,
        events: EventWriter,
        listening: dict[str, Listens],
        silence: Silence,
        timed: list[str],
    ) -> RouteRunner:
        """One route's adapter (listening already, when it receives), queues and runner; a
        route with receipts arms fallback timers (`silence`) and is listed in `timed`."""
        settings = self.settings
        limits = settings.route(name)
        adapter = create_adapter(name, limits.adapter, limits.options)
        self.adapters[name] = adapter
        if isinstance(adapter, EmitsEvents):
            adapter.attach(events)
        correlator = events.correlator if receives_receipts(settings, name, adapter) else None
        if correlator is not None:
            timed.append(name)
        if isinstance(adapter, Listens):
            adapter.listen()  # replies arrive whether or not this route ever sends
            listening[name] = adapter
        await self.queues.prepare(shard_keys(settings.namespace, name, limits.shards))
        limiter = RateLimiter(self.redis, settings.namespace, name, RateSpec.of(limits))
        controls = None
        if self.controls is not None:
            memory = settings.planning.frequency_memory
            controls = self.controls(self.redis, settings.namespace, memory)
        context = RouteContext(
            name,
            limits,
            adapter,
            self.queues,
            limiter,
            self.metrics,
            self.consumer,
            settings.worker,
            self.stopping,
            controls=controls,
            correlator=correlator,
            route_shards={route: each.shards for route, each in settings.routes.items()},
            silence=silence if correlator is not None else None,
        )
        return RouteRunner(context)

    async def idle(self, timed: Sequence[str] = ()) -> bool:
        """True when no shard of this worker's routes has a batch waiting, in flight, due
        again later or held, and no fallback timer of the `timed` routes is armed or firing."""
        namespace = self.settings.namespace
        shards = [
            keys
            for name in self.route_names
            for keys in shard_keys(namespace, name, self.settings.route(name).shards)
        ]
        if any((await self.queues.backlog(shards)).values()):
            return False
        pipe = self.redis.pipeline(transaction=False)
        for name in timed:
            timers = timer_keys(namespace, name)
            pipe.zcard(timers.waiting)
            pipe.zcard(timers.firing)
        return not any(await pipe.execute()) if timed else True

    async def _stop_when_idle(self, timed: Sequence[str]) -> None:
        """Stop the worker once it is idle (see `idle`)."""
        while not self.stopping.is_set():
            if await self.idle(timed):
                log.info("worker idle: stopping", extra={"consumer": self.consumer})
                self.stop()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_POLL):
                    await self.stopping.wait()

    async def _close_adapters(self) -> None:
        for adapter in self.adapters.values():
            await adapter.aclose()


def connections_needed(settings: Settings, routes: Sequence[str] | None) -> int:
    """One connection per sender (each may block in a read), plus claimers, heartbeats, spare."""
    names = list(routes or settings.routes)
    return sum(settings.route(name).concurrency + 2 for name in names) + 8


async def _serve(
    settings: Settings,
    redis_url: str,
    routes: Sequence[str] | None,
    controls: ControlsFactory | None,
) -> None:
    redis = connect(redis_url, max_connections=connections_needed(settings, routes))
    worker = Worker(settings, redis, routes, controls=controls)
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


def process_main(
    settings: Settings,
    redis_url: str,
    routes: Sequence[str] | None,
    controls: ControlsFactory | None,
) -> None:
    """Entry point of a worker child process."""
    setup_logging()
    uvloop.run(_serve(settings, redis_url, routes, controls))
