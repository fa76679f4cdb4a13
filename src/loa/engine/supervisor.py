"""`loa worker`: N worker processes under one supervisor that restarts them, serves /metrics and
runs background chores (the campaign clock) in a thread of its own."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any

import redis
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from loa.adapters.registry import check_routes
from loa.engine.connection import CLUSTER_SCHEME, RedisClient, connect
from loa.engine.control import ControlsFactory
from loa.engine.embedded import EmbeddedRedis
from loa.engine.keys import LANES, shard_keys
from loa.engine.metrics import QueueCollector
from loa.engine.worker import process_main
from loa.settings import Settings

log = logging.getLogger(__name__)

# A child that keeps dying is restarted after 0.2, 0.4, ... seconds, at most RESTART_BACKOFF_MAX
# while nothing is queued (a crash loop on a bad set-up costs little), but at most
# RESTART_BACKOFF_BUSY while batches wait or are held: a replacement must live long enough to
# adopt what the dead one left, even when workers are killed every few seconds.
RESTART_BACKOFF_MAX = 10.0
RESTART_BACKOFF_BUSY = 2.0
CHORE_PERIOD = 1.0  # seconds between two rounds of background chores

# a background chore of the supervisor, given its Redis client each round (the campaign clock)
Chore = Callable[[RedisClient], Awaitable[object]]


@dataclass
class _Child:
    index: int
    process: SpawnProcess
    started: float = field(default_factory=time.monotonic)
    failures: int = 0
    respawn_at: float | None = None  # set once it died: when its replacement starts


def _sync_client(url: str, **options: Any) -> redis.Redis | redis.RedisCluster:
    if url.startswith(CLUSTER_SCHEME):
        return redis.RedisCluster.from_url("redis://" + url[len(CLUSTER_SCHEME) :], **options)
    return redis.Redis.from_url(url, **options)


class Supervisor:
    """Owns the embedded server (if any), the worker processes, the metrics endpoint and chores."""

    def __init__(
        self,
        settings: Settings,
        processes: int | None = None,
        routes: Sequence[str] | None = None,
        chores: Sequence[Chore] = (),
        *,
        controls: ControlsFactory | None,
    ) -> None:
        self.settings = settings
        self.controls = controls  # built in each worker process (see Worker)
        self.chores = list(chores)
        self._chore_thread: threading.Thread | None = None
        self.count = processes or settings.worker.process_count()
        self.routes = list(routes) if routes else list(settings.routes)
        for name in self.routes:
            settings.route(name)
        self.server: EmbeddedRedis | None = None
        self.redis_url = settings.redis_url or ""
        self.children: list[_Child] = []
        self.stopping = threading.Event()
        self.metrics_dir: tempfile.TemporaryDirectory[str] | None = None
        self.http: ThreadingHTTPServer | None = None
        self.collectors: list[Collector] = []  # more series for /metrics, added before start()
        self._context = multiprocessing.get_context("spawn")
        self._sync: redis.Redis | redis.RedisCluster | None = None
        self._sync_url = ""

    @property
    def metrics_port(self) -> int:
        """The port /metrics is served on (0 when off)."""
        return self.http.server_address[1] if self.http else 0

    def start(self) -> None:
        """Start the server if needed, the metrics endpoint and the worker processes."""
        check_routes(self.settings, self.routes)  # a wrong adapter fails here, not in N children
        try:
            if not self.redis_url:
                self.server = EmbeddedRedis(self.settings.data_dir / "redis")
                self.redis_url = self.server.start()
            self.metrics_dir = tempfile.TemporaryDirectory(prefix="loa-metrics-")
            # children inherit this: prometheus-client then writes their samples to shared files
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir.name
            self._serve_metrics()
            for index in range(self.count):
                self.children.append(self._spawn(index))
            self._start_chores()
        except BaseException:
            self.stop()  # a busy metrics port must not leave a server or children behind
            raise
        log.info("workers started", extra={"processes": self.count, "routes": self.routes})

    def _spawn(self, index: int, failures: int = 0) -> _Child:
        process = self._context.Process(
            target=process_main,
            args=(self.settings, self.redis_url, self.routes, self.controls),
            name=f"loa-worker-{index}",
            daemon=False,
        )
        process.start()
        return _Child(index, process, failures=failures)

    def _start_chores(self) -> None:
        if self.chores:
            self._chore_thread = threading.Thread(
                target=lambda: asyncio.run(self._run_chores()), name="chores", daemon=True
            )
            self._chore_thread.start()

    async def _run_chores(self) -> None:
        """Run every chore each CHORE_PERIOD until stopped, on the server's current URL."""
        client: RedisClient | None = None
        url = ""
        try:
            while not self.stopping.is_set():
                if client is None or url != self.redis_url:  # the embedded server moved
                    if client is not None:
                        await client.aclose()
                    url = self.redis_url
                    client = connect(url)
                for chore in self.chores:
                    try:
                        await chore(client)
                    except (redis.RedisError, OSError) as exc:
                        log.warning(
                            "a background chore failed; it runs again",
                            extra={"chore": _name(chore), "error": type(exc).__name__},
                        )
                await asyncio.to_thread(self.stopping.wait, CHORE_PERIOD)
        finally:
            if client is not None:
                await client.aclose()

    def _serve_metrics(self) -> None:
        port = self.settings.worker.metrics_port
        if port == 0:
            return
        assert self.metrics_dir is not None
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, path=self.metrics_dir.name
        )
        shards = {name: self.settings.route(name).shards for name in self.routes}
        registry.register(
            QueueCollector(_sync_client(self.redis_url), self.settings.namespace, shards)
        )
        for collector in self.collectors:
            registry.register(collector)
        handler = MetricsHandler.factory(registry)
        self.http = ThreadingHTTPServer((self.settings.worker.metrics_host, port), handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, name="metrics", daemon=True).start()

    def watch(self) -> None:
        """Restart children that died (with back-off) and the embedded server if it is gone.

        Never blocks: a child's replacement starts at its `respawn_at`, on a later call.
        """
        if self.stopping.is_set():
            return
        if self.server is not None:
            self.server.check()
            if self.server.url != self.redis_url:  # it came back elsewhere (TCP fallback)
                self.redis_url = self.server.url
                for child in self.children:
                    child.process.terminate()  # drain, then respawn with the new URL
        now = time.monotonic()
        for position, child in enumerate(self.children):
            code = child.process.exitcode
            if code is None:
                continue
            if child.respawn_at is None:
                if self.metrics_dir is not None:
                    multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                        child.process.pid, self.metrics_dir.name
                    )
                child.failures = 0 if now - child.started > 60 else child.failures + 1
                delay = restart_delay(child.failures, self._has_work)
                child.respawn_at = now + delay
                log.error(
                    "worker process exited; restarting",
                    extra={"index": child.index, "exit_code": code, "after": delay},
                )
            if now >= child.respawn_at:
                self.children[position] = self._spawn(child.index, child.failures)

    def _has_work(self) -> bool:
        """True when any route of ours has batches queued, held or due later (or we cannot
        tell: Redis is down or restarting, and the work is surely still there)."""
        try:
            client = self._client()
            pipe = client.pipeline(transaction=False)
            for name in self.routes:
                for keys in shard_keys(
                    self.settings.namespace, name, self.settings.route(name).shards
                ):
                    for lane in LANES:
                        pipe.xlen(keys.stream(lane))
                        pipe.zcard(keys.delayed(lane))
            return any(int(n) for n in pipe.execute())
        except redis.RedisError:
            return True

    def _client(self) -> redis.Redis | redis.RedisCluster:
        if self._sync is None or self._sync_url != self.redis_url:
            self._close_client()
            # the watch loop must not hang on a server that stopped answering
            client = _sync_client(self.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
            self._sync, self._sync_url = client, self.redis_url
        return self._sync

    def _close_client(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    def run_until_stopped(self) -> None:
        """Watch the children until SIGTERM/SIGINT or `request_stop()`."""
        while not self.stopping.wait(0.2):
            self.watch()

    def request_stop(self) -> None:
        """Ask for a graceful stop (safe from a signal handler)."""
        self.stopping.set()

    def stop(self) -> int:
        """Drain the workers and stop the server; returns how many children had to be killed."""
        killed = self.drain()
        if self._chore_thread is not None:
            self._chore_thread.join(CHORE_PERIOD * 10)  # a chore ends before the server does
            self._chore_thread = None
        self._close_client()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None
        if self.server is not None:
            self.server.stop()
        if self.metrics_dir is not None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            self.metrics_dir.cleanup()
            self.metrics_dir = None
        log.info("workers stopped", extra={"killed": killed})
        return killed

    def drain(self) -> int:
        """SIGTERM every worker and wait for it to drain; returns how many had to be killed."""
        self.stopping.set()
        for child in self.children:
            if child.process.is_alive() and child.process.pid:
                os.kill(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.worker.drain_timeout + 5
        killed = 0
        for child in self.children:
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
                killed += 1
        return killed

    def pids(self) -> list[int]:
        """The process ids of the live worker children."""
        return [c.process.pid for c in self.children if c.process.pid and c.process.is_alive()]


def restart_delay(failures: int, has_work: Callable[[], bool]) -> float:
    """Seconds before a child that died after `failures` short lives in a row is restarted."""
    if not failures:
        return 0.0
    delay = min(RESTART_BACKOFF_MAX, 0.1 * 2.0**failures)
    if delay > RESTART_BACKOFF_BUSY and has_work():
        return RESTART_BACKOFF_BUSY
    return delay


def _name(chore: Chore) -> str:
    return getattr(chore, "__qualname__", type(chore).__name__)


def run(
    settings: Settings,
    processes: int | None,
    routes: Sequence[str] | None,
    chores: Sequence[Chore] = (),
    *,
    controls: ControlsFactory | None,
) -> int:
    """Run workers in the foreground until SIGTERM or SIGINT; returns the exit code."""
    supervisor = Supervisor(settings, processes, routes, chores, controls=controls)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        supervisor.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    supervisor.start()
    try:
        supervisor.run_until_stopped()
    finally:
        killed = supervisor.stop()
    return 1 if killed else 0
