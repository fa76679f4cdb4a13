"""Helpers shared by the worker tests: queueing, waiting with a bound, reading the file sink."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from loa.access.identity import Role, program
from loa.api import create_app
from loa.campaigns.clock import run_clock
from loa.campaigns.controls import campaign_controls
from loa.campaigns.record import Campaign
from loa.campaigns.service import Campaigns
from loa.engine.connection import RedisClient, connect
from loa.engine.embedded import free_port
from loa.engine.keys import shard_keys
from loa.engine.producer import Enqueued, Producer
from loa.engine.queue import Queues
from loa.engine.worker import Worker
from loa.message import Lane, Message
from loa.settings import Settings
from loa.status import RouteStatus, route_status

REPO = Path(__file__).resolve().parents[1]  # the checkout: examples/, deploy/, benchmarks/
TESTS = Path(__file__).resolve().parent  # tests/: peers/ and the shared helpers

OPERATOR = program("test-operator", Role.OPERATOR)
APPROVER = program("test-approver", Role.APPROVER)


async def approved(campaigns: Campaigns, plan: Path, audience: Path) -> Campaign:
    """A campaign created by one person and approved by another, as operators do."""
    campaign = await campaigns.create(plan, audience, OPERATOR)
    await campaigns.approve(campaign.id, APPROVER)
    return campaign


def messages(
    count: int, prefix: str = "m", parts: Callable[[int], int] = lambda n: 1
) -> list[Message]:
    """`count` messages with ids prefix-0.. and Vietnamese mobile numbers."""
    return [
        Message(id=f"{prefix}-{n}", to=f"+8491{n:07d}", body=f"advice {n}", parts=parts(n))
        for n in range(count)
    ]


async def enqueue_async(
    settings: Settings, route: str, items: Iterable[Message], **options: Any
) -> Enqueued:
    """Queue messages on `route` through the real producer."""
    redis = connect(settings.redis_url or "")
    try:
        queues = Queues(redis, settings.namespace)
        await queues.prepare(shard_keys(settings.namespace, route, settings.route(route).shards))
        return await Producer(queues, settings).enqueue(route, items, **options)
    finally:
        await redis.aclose()


def enqueue(settings: Settings, route: str, items: Iterable[Message], **options: Any) -> Enqueued:
    """The same, from synchronous code."""
    return asyncio.run(enqueue_async(settings, route, items, **options))


async def status_async(settings: Settings, route: str) -> RouteStatus:
    """The route's counters and backlog."""
    redis = connect(settings.redis_url or "")
    try:
        return await route_status(Queues(redis, settings.namespace), settings, route)
    finally:
        await redis.aclose()


def status(settings: Settings, route: str) -> RouteStatus:
    """The same, from synchronous code."""
    return asyncio.run(status_async(settings, route))


def wait_for(
    check: Callable[[], bool], timeout: float, what: str, tick: Callable[[], None] | None = None
) -> None:
    """Poll `check` until true; fail the test after `timeout` seconds, saying what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if tick:
            tick()
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_sink(directory: Path) -> list[dict[str, Any]]:
    """Every line the file adapter wrote under `directory`."""
    lines = []
    for path in sorted(directory.glob("*.jsonl")):
        lines += [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
    return lines


def id_counts(lines: Iterable[dict[str, Any]]) -> Counter[str]:
    """How many times each message id was delivered."""
    return Counter(str(line["id"]) for line in lines)


@contextlib.asynccontextmanager
async def running(settings: Settings, client: RedisClient) -> AsyncIterator[Worker]:
    """A worker in this process serving every route of `settings`, with the campaign clock a
    supervisor runs beside its workers; drained when the block ends."""
    worker = Worker(settings, client, controls=campaign_controls)
    task = asyncio.create_task(worker.run())
    stopping = asyncio.Event()
    clock = asyncio.create_task(run_clock(settings, client, stopping, period=0.1))
    try:
        yield worker
    finally:
        stopping.set()
        worker.stop()
        await asyncio.wait_for(task, 30)
        await asyncio.wait_for(clock, 30)


async def run_until_idle(settings: Settings, client: RedisClient, timeout: float = 30) -> Worker:
    """Run a worker in this process on every route of `settings` until it has nothing left to
    do (Worker.until_idle), failing after `timeout` seconds."""
    worker = Worker(settings, client, controls=campaign_controls, until_idle=True)
    try:
        await asyncio.wait_for(worker.run(), timeout)
    except TimeoutError:
        raise AssertionError(f"the worker was not idle after {timeout}s") from None
    return worker


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Await `check` until true, failing after `timeout` seconds, saying what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def lane_of(name: str) -> Lane:
    """A lane by name, for parametrized tests."""
    return Lane.parse(name)


class TcpProxy:
    """A loopback TCP forwarder a test can cut (connections refused), hold (bytes kept, not
    forwarded: a peer that went silent) and restore; for Redis made unreachable on purpose."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.holding = False
        self.held = bytearray()  # what clients sent while held, never forwarded
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """A Redis URL through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Listen (on the same port again after a cut)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Close every connection and refuse new ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._drop_all()  # before waiting: a server may wait for its connections
        if server is not None:
            await server.wait_closed()

    def hold(self) -> None:
        """Keep the connections, but forward nothing more: requests go unanswered."""
        self.holding = True

    async def restore(self) -> None:
        """Forward again; connections that were held are closed, unforwarded."""
        if self.holding:
            self.holding = False
            await self._drop_all()
        if self._server is None:
            await self.start()

    async def stop(self) -> None:
        """Stop listening and close everything."""
        await self.cut()

    async def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, outbound=True)),
            asyncio.create_task(self._pump(up_reader, writer, outbound=False)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for end in (writer, up_writer):
                end.transport.abort()
                self._writers.discard(end)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, outbound: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(1 << 16):
                if self.holding:
                    if outbound:
                        self.held += data
                    continue
                writer.write(data)
                await writer.drain()


@contextlib.asynccontextmanager
async def api_server(settings: Settings, redis_url: str, route: str) -> AsyncIterator[str]:
    """loa's API served by uvicorn on a loopback port; yields the receipt webhook of `route`."""
    app = create_app(settings, lambda: connect(redis_url))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started or task.done()

    await until(started, 30, "the API server to listen")
    assert not task.done(), "the API server did not start"
    try:
        yield f"http://127.0.0.1:{port}/api/v1/webhooks/{route}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


class FakeClock:
    """A clock that stands still until a test moves it: for code that takes `clock=`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        self.now += seconds
