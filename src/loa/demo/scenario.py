"""The scenario: the advisory, a STOP reply, the flood alert halfway (a CAP file, in Vietnamese
and English, by Zalo with SMS for whom Zalo does not reach in time), receipts, the end."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

from loa.access.audit import AuditLog
from loa.access.identity import Role, program
from loa.api import create_app
from loa.campaigns.planner import Report
from loa.campaigns.service import Campaigns
from loa.campaigns.store import Campaign
from loa.campaigns.suppression import Suppression
from loa.cap.service import CapIntake
from loa.demo.config import advisory_plan, flood_alert
from loa.demo.country import CARRIERS, SMS_ROUTES, ZALO_ROUTE
from loa.demo.people import Facts
from loa.demo.simulators import DemoError, Simulators
from loa.engine.connection import RedisClient, connect
from loa.engine.control import suppression_key
from loa.engine.events import read_inbound
from loa.engine.keys import shard_keys
from loa.engine.queue import GROUP
from loa.message import Lane
from loa.settings import Settings

DEMO_OPERATOR = program("demo-operator", Role.OPERATOR)
DEMO_APPROVER = program("demo-approver", Role.APPROVER)

TICK = 0.1  # seconds between looks at a running emergency alert's counters
SLOW_EVERY = 3  # ticks between looks at the advisory's counters (status reads cost CPU)
STOP_AT = 0.25  # share of the advisory sent when the citizen replies STOP
EMERGENCY_AT = 0.5  # share of the advisory sent when the alert is launched
HOTLINE = "9095"  # where replies go: the ministry's short code
RECEIPT_GRACE = 15.0  # seconds beyond the slowest receipt delay to wait for the last receipts
READY_TIMEOUT = 30.0  # seconds the worker processes may take to start
READER_GRACE = 2.0  # seconds after a worker made its queues for it to show as their reader
API_TIMEOUT = 30.0  # seconds the API (Zalo's delivered events come to it) may take to start
FINAL_OUTCOMES = ("accepted", "failed", "dead", "expired", "suppressed")


def route_done(route: str, counts: dict[str, int]) -> int:
    """Messages a route is through with: a final outcome, or (Zalo) handed on to SMS."""
    done = sum(counts.get(name, 0) for name in FINAL_OUTCOMES)
    return done + counts.get("fallback", 0) if route == ZALO_ROUTE else done


@dataclass
class CampaignRun:
    """One campaign of the scenario: its id, timings (seconds since the start) and counters."""

    key: str
    id: str = ""
    launched: float | None = None
    planned: float | None = None
    first: float | None = None  # first message accepted by a provider
    reached: float | None = None  # every person's first message has its outcome
    done: float | None = None  # every message has its outcome (those sent on for silence too)
    report: Report | None = None
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        """Messages providers accepted so far."""
        return int(self.status.get("sent", 0))

    @property
    def finished(self) -> int:
        """Messages with a final outcome so far."""
        return int(self.status.get("finished", 0))


@dataclass
class State:
    """What the live view shows and the summary is made of."""

    facts: Facts
    started: float = field(default_factory=time.monotonic)
    advisory: CampaignRun = field(default_factory=lambda: CampaignRun("advisory"))
    emergency: CampaignRun = field(default_factory=lambda: CampaignRun("emergency"))
    sims: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    replies: list[dict[str, str]] = field(default_factory=list)
    replier_opted_out: bool = False
    # per SMS route: advisory messages accepted there when the alert's first and last went out
    overlap: dict[str, list[int]] = field(default_factory=dict)
    route_done_at: dict[str, float] = field(default_factory=dict)  # when a route had sent all
    receipts_waited: float = 0.0
    receipts_complete: bool = False
    ended: float | None = None

    def now(self) -> float:
        """Seconds since the demo started."""
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        """Add a line to the event log (never a phone number: counts and names only)."""
        self.events.append((self.now(), text))

    def campaigns(self) -> list[CampaignRun]:
        """The campaigns launched so far."""
        return [c for c in (self.advisory, self.emergency) if c.id]

    def by_route(self) -> dict[str, dict[str, int]]:
        """Counters per route, both campaigns together."""
        total: dict[str, dict[str, int]] = {}
        for run in self.campaigns():
            for route, counts in run.status.get("by_route", {}).items():
                into = total.setdefault(route, {})
                for name, value in counts.items():
                    into[name] = into.get(name, 0) + int(value)
        return total


class Scenario:
    """Runs the story against workers that are already up, refreshing `state` as it goes.

    Everything goes through loa's own paths: `Campaigns` creates, approves and launches (the
    planner queues), the supervisor's worker processes send over SMPP and Zalo ZNS to the
    simulators, receipts and the reply come back through the SMPP binds.
    """

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        facts: Facts,
        sims: Simulators,
        work: Path,
        *,
        workers: int,
        patience: float,
        started: float | None = None,
        forget: str | None = None,
        on_tick: Callable[[State], None] | None = None,
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.sims = sims
        self.work = work
        self.workers = workers  # worker processes the supervisor started
        self.patience = patience  # seconds the campaigns may take before the demo gives up
        self.forget = forget  # the namespace of the previous demo run, removed first
        self.on_tick = on_tick or (lambda state: None)
        self.state = State(facts, started=started or time.monotonic())
        self._tasks: list[asyncio.Task[Any]] = []

    async def run(self) -> State:
        """The whole story, start to reconciled end."""
        redis = connect(self.redis_url)
        try:
            campaigns = Campaigns(self.settings, redis)
            if self.forget:
                await _forget(redis, self.forget)
            await self._prepare(campaigns)
            async with self._api():
                await self._workers_ready(redis)
                await self._launch(campaigns, self.state.advisory, advisory_plan())
                await self._watch(campaigns)
                await self._wait_for_receipts(campaigns)
            await self._read_replies(redis)
            self.state.ended = self.state.now()
            self.on_tick(self.state)
            return self.state
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await redis.aclose()

    async def _prepare(self, campaigns: Campaigns) -> None:
        facts = self.state.facts
        await Suppression(campaigns.redis, self.settings.namespace).add(facts.opted_out)
        self.state.say(
            f"audience: {facts.rows:,} people in 34 provinces, {len(facts.malformed):,} "
            f"malformed rows, {len(facts.opted_out):,} already opted out"
        )

    @contextlib.asynccontextmanager
    async def _api(self) -> AsyncIterator[None]:
        """loa's API on loopback, as `loa server` serves it: Zalo posts its delivered events
        to the receipt webhook, signed with the official account's secret."""
        app = create_app(self.settings, lambda: connect(self.redis_url))
        config = uvicorn.Config(
            app,
            host=self.settings.api.host,
            port=self.settings.api.port,
            log_config=None,
            access_log=False,
            ws="none",
            lifespan="on",
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(), name="api")
        for _ in range(int(API_TIMEOUT / TICK)):  # bounded: a server that cannot listen ends
            if server.started or task.done():
                break
            await asyncio.sleep(TICK)
        if not server.started:
            task.cancel()
            raise DemoError("loa's API, where Zalo posts its delivered events, did not start")
        try:
            yield
        finally:
            server.should_exit = True
            await asyncio.gather(task, return_exceptions=True)

    async def _workers_ready(self, redis: RedisClient) -> None:
        """Wait until every worker process reads every route: the launch is timed from there.

        A worker creates its routes' streams when it starts, and shows as a consumer once it
        reads; Redis before 7.2 shows a blocked reader only when it gets an entry, so streams
        that are there but show fewer readers are trusted after a short grace.
        """
        deadline = time.monotonic() + READY_TIMEOUT
        streams_since: float | None = None
        while time.monotonic() < deadline:
            readers = [await self._readers(redis, route) for route in self.settings.routes]
            if min(readers) >= self.workers:
                self.state.say(f"simulators up; {self.workers} worker processes read every route")
                return
            if min(readers) >= 0:
                streams_since = streams_since or time.monotonic()
                if time.monotonic() - streams_since > READER_GRACE:
                    self.state.say("simulators up; the worker processes have started")
                    return
            await asyncio.sleep(TICK)
        self.state.say("some worker processes are slow to start; launching anyway")

    async def _readers(self, redis: RedisClient, route: str) -> int:
        """How many consumers (worker processes) have read a route's queues; -1: no queues."""
        names: set[str] = set()
        for keys in shard_keys(self.settings.namespace, route, self.settings.route(route).shards):
            stream = keys.stream(Lane.NORMAL)
            if not await redis.exists(stream):
                return -1
            consumers: Any = await redis.xinfo_consumers(stream, GROUP)
            names.update(str(c["name"]) for c in consumers)
        return len(names)

    async def _launch(self, campaigns: Campaigns, run: CampaignRun, plan_text: str) -> None:
        """Create, approve and launch: the operator's three steps (planning runs on, a task)."""
        path = self.work / f"{run.key}.plan.toml"
        path.write_text(plan_text, encoding="utf-8")
        campaign = await campaigns.create(path, self.state.facts.path, DEMO_OPERATOR)
        await self._approve_and_launch(campaigns, run, campaign)

    async def _alert(self, campaigns: Campaigns, run: CampaignRun) -> None:
        """The warning centre's CAP file, submitted as `loa cap submit` does: a draft campaign
        to the province's people in their language, which a second person approves."""
        now = time.time()
        identifier = f"VN-NCHMF-DEMO-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"
        path = self.work / "flood-alert.xml"
        path.write_text(flood_alert(datetime.fromtimestamp(now, UTC), identifier), "utf-8")
        log = AuditLog.of(campaigns.redis, self.settings)
        submitted = await CapIntake(self.settings, campaigns.redis, log).submit(
            path.read_bytes(), DEMO_OPERATOR
        )
        self.state.say(f"CAP file {path.name} submitted: {submitted.line()}")
        campaign = await campaigns.store.get(submitted.campaign)
        await self._approve_and_launch(campaigns, run, campaign)

    async def _approve_and_launch(
        self, campaigns: Campaigns, run: CampaignRun, campaign: Campaign
    ) -> None:
        run.id = campaign.id
        await campaigns.approve(run.id, DEMO_APPROVER)
        run.launched = self.state.now()
        self.state.say(f"{run.key} {run.id} ({campaign.name}) created, approved and launched")

        async def plan() -> None:
            run.report = await campaigns.launch(run.id)
            run.planned = self.state.now()
            report = run.report
            self.state.say(
                f"{run.key} planned: {report.queued:,} queued, {report.invalid:,} invalid rows, "
                f"{report.suppressed:,} opted out, {report.filtered:,} outside its audience"
            )

        self._spawn(f"plan-{run.key}", plan())

    async def _watch(self, campaigns: Campaigns) -> None:
        """Refresh the counters until both campaigns are done; reply STOP and alert on the way."""
        state, facts = self.state, self.state.facts
        deadline = time.monotonic() + self.patience
        ticks = 0
        while not self._all_done():
            if time.monotonic() > deadline:
                state.say("gave up waiting: the campaigns did not finish in time")
                return
            self._check_tasks()
            await self._refresh(campaigns, ticks)
            sent = state.advisory.sent / max(1, facts.advisory_people)
            if sent >= STOP_AT and not self._started("reply"):
                self._spawn("reply", self._reply(campaigns.redis))
            if sent >= EMERGENCY_AT and not state.emergency.id:
                await self._alert(campaigns, state.emergency)
            self.on_tick(state)
            ticks += 1
            await asyncio.sleep(TICK)
        await self._refresh(campaigns, 0)
        self._check_tasks()

    def _all_done(self) -> bool:
        runs = (self.state.advisory, self.state.emergency)
        return all(run.done is not None for run in runs) and not any(
            not task.done() for task in self._tasks
        )

    def _started(self, name: str) -> bool:
        return any(task.get_name() == name for task in self._tasks)

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    def _check_tasks(self) -> None:
        """A failed step (planning, the reply) ends the demo with its error."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _refresh(self, campaigns: Campaigns, tick: int) -> None:
        state = self.state
        alerting = bool(state.emergency.id) and state.emergency.done is None
        if tick % SLOW_EVERY and not alerting:
            return
        for run in state.campaigns():
            run.status = await campaigns.status(run.id)
            now = state.now()
            if run.first is None and run.sent:
                run.first = now
                took = now - (run.launched or now)
                state.say(f"{run.key}: first message accepted {took:.2f}s after launch")
            queued = int(run.status.get("queued", 0))
            if run.reached is None and run.planned is not None and 0 < queued <= run.finished:
                run.reached = now
            if run.done is None and run.status.get("state") == "done":
                run.done = now
                self._finished(run)
        if alerting:
            self._track_overlap()
        self._track_routes()

    def _finished(self, run: CampaignRun) -> None:
        state = self.state
        took = (run.done or 0) - (run.launched or 0)
        state.say(f"{run.key} done: {run.finished:,} messages with an outcome in {took:.1f}s")

    def _track_routes(self) -> None:
        state, facts = self.state, self.state.facts
        if not state.emergency.id:
            return  # a route is done only once the alert has been planned onto it too
        for route, counts in state.by_route().items():
            total = facts.advisory[route] + facts.emergency[route]
            if route not in state.route_done_at and route_done(route, counts) >= total:
                state.route_done_at[route] = state.now()

    def _track_overlap(self) -> None:
        """Per SMS route, the advisory's count when the alert starts and ends there: what the
        advisory sent on a route while the alert was going out on it (batches already taken)."""
        state = self.state
        alert = state.emergency.status.get("by_route", {})
        advisory = state.advisory.status.get("by_route", {})
        for route in SMS_ROUTES:
            done = route_done(route, alert.get(route, {}))
            sent = int(advisory.get(route, {}).get("accepted", 0))
            window = state.overlap.get(route)
            # the end: the alert's SMS to people without a Zalo id, queued at once, are out
            # (those Zalo hands on come as Zalo sends, and those it leaves silent much later)
            first = state.facts.emergency_sms_first[route]
            if window is None and done:
                state.overlap[route] = [sent, -1]
            elif window is not None and window[1] < 0 and done >= first:
                window[1] = sent

    async def _reply(self, redis: RedisClient) -> None:
        """A citizen answers the advisory SMS with STOP, through their carrier's SMSC."""
        facts, state = self.state.facts, self.state
        carrier = next(c for c in CARRIERS if c.name == facts.replier_carrier)
        answer = await self.sims.reply(carrier.name, facts.replier_phone, HOTLINE, "STOP")
        if answer != 0:
            state.say(f"the STOP reply could not be delivered: {answer}")
            return
        state.say(f"a {carrier.label} subscriber replied STOP (audience line {facts.replier_line})")
        key = suppression_key(self.settings.namespace)
        for _ in range(100):
            if await redis.sismember(key, facts.replier_phone):
                state.replier_opted_out = True
                state.say("the STOP reply was read and its sender opted out")
                return
            await asyncio.sleep(TICK)

    async def _wait_for_receipts(self, campaigns: Campaigns) -> None:
        """Wait (bounded) until every SMS loa sent has its receipt counted, and every alert
        Zalo delivered has its delivered event."""
        state = self.state
        started = time.monotonic()
        slowest = max(c.receipt_delay for c in CARRIERS)
        deadline = started + slowest + RECEIPT_GRACE
        while time.monotonic() < deadline:
            await self._refresh(campaigns, 0)
            self.on_tick(state)
            alert = state.emergency.status.get("by_route", {}).get(ZALO_ROUTE, {})
            zalo_in = alert.get("delivered", 0) >= state.facts.emergency_zalo_delivered
            if _receipts_in(state.by_route()) and zalo_in:
                state.receipts_complete = True
                break
            await asyncio.sleep(TICK * 2)
        state.receipts_waited = time.monotonic() - started
        state.sims = await self.sims.stats()
        if state.receipts_complete:
            state.say(f"every receipt is in ({state.receipts_waited:.1f}s after the last message)")
        else:
            state.say("stopped waiting for receipts: some are still missing")

    async def _read_replies(self, redis: RedisClient) -> None:
        self.state.replies = await read_inbound(redis, self.settings.namespace, count=1000)
        self.state.replier_opted_out = bool(
            await redis.sismember(
                suppression_key(self.settings.namespace), self.state.facts.replier_phone
            )
        )


def _receipts_in(by_route: dict[str, dict[str, int]]) -> bool:
    """Every accepted SMS has its receipt (the texts are one part each: one receipt each)."""
    for route in SMS_ROUTES:
        counts = by_route.get(route, {})
        if counts.get("delivered", 0) + counts.get("undelivered", 0) < counts.get("accepted", 0):
            return False
    return True


async def _forget(redis: RedisClient, namespace: str) -> None:
    """Remove the keys of a previous demo run: only the latest run is kept to look at."""
    batch: list[Any] = []
    async for key in redis.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await redis.delete(*batch)
            batch.clear()
    if batch:
        await redis.delete(*batch)
