"""`loa demo` from start to end: simulators, workers, audience, the scenario, the summary."""

from __future__ import annotations

import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop
from rich.console import Console, RenderableType
from rich.table import Table

from loa.campaigns.controls import campaign_controls
from loa.demo.config import (
    default_duration,
    demo_settings,
    expected_load,
    rates_for,
    write_settings,
)
from loa.demo.country import CARRIERS, ZALO_ROUTE
from loa.demo.drive import citizen_scripts
from loa.demo.people import Facts, Mix, write_audience
from loa.demo.scenario import Scenario, State
from loa.demo.second_act import DriveRun, SecondAct, drive_summary, drive_tables
from loa.demo.simulators import Endpoints, Simulators, smsc_options, zalo_options
from loa.demo.summary import build
from loa.demo.view import LiveView, summary_tables
from loa.demo.webhook import WEBHOOK_SECRET, WebhookServer, webhook_url
from loa.engine.embedded import free_port
from loa.engine.supervisor import Supervisor
from loa.log import setup_logging
from loa.privacy.retention import chores
from loa.settings import Settings
from loa.sim.http import HttpSimulator, SimOptions

NAMESPACE_PREFIX = "demo-"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What `loa demo` was asked for."""

    people: int = 200_000
    duration: float | None = None  # seconds the TPS caps are scaled to; None: by audience size
    processes: int | None = None  # worker processes; None: one per core
    as_json: bool = False
    seed: int = 2026
    drive: int = 300  # registrants of the second act's vaccination drive; 0: no second act


def run_demo(base: Settings, options: DemoOptions) -> int:
    """Run the demo; exit code 0 only when its summary reconciles with the simulators."""
    os.environ.setdefault("LOA_LOG_LEVEL", "warning")  # the view is the demo's output
    setup_logging()
    return _Demo(base, options).run()


class _Demo:
    """One run: what it was asked, where it works, its simulators, and when each phase ended."""

    def __init__(self, base: Settings, options: DemoOptions) -> None:
        self.base = base
        self.options = options
        self.started = time.monotonic()
        self.console = Console(stderr=True, quiet=options.as_json)
        self.work = base.data_dir / "demo"
        self.duration = options.duration or default_duration(options.people)
        self.processes = options.processes or base.worker.process_count()
        load = expected_load(options.people, Mix())
        self.rates = rates_for(load, self.duration, self.processes)
        self.endpoints = Endpoints.pick([c.name for c in CARRIERS if c.route])
        drive = options.drive
        citizens = {"citizens": citizen_scripts(options.seed, drive)} if drive else {}
        self.webhook_port = free_port()  # the second act's Zalo replies come in there
        # the flood alert's delivered events go to the scenario's API (endpoints.api)
        zalo_rate = self.rates.provider[ZALO_ROUTE]
        zalo = zalo_options(options.seed, zalo_rate, self.endpoints.webhook(ZALO_ROUTE))
        if drive:
            zalo = SimOptions.model_validate(
                {
                    **zalo.model_dump(),
                    **citizens,
                    "webhook_url": webhook_url(self.webhook_port),
                    "webhook_secret": WEBHOOK_SECRET,
                }
            )
        self.sims = Simulators(
            {
                c.name: {
                    **smsc_options(c.name, self.rates.provider[c.route], options.seed + n),
                    **citizens,
                }
                for n, c in enumerate(CARRIERS)
                if c.route
            },
            zalo,
            self.endpoints,
        )
        self.timings: dict[str, float] = {}
        self.drive: DriveRun | None = None

    def clock(self) -> float:
        """Seconds since the demo started."""
        return round(time.monotonic() - self.started, 2)

    def run(self) -> int:
        self.sims.start()  # it starts listening while the workers start and the audience is written
        try:
            namespace = f"{NAMESPACE_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}"
            audience = self.work / "audience.csv"
            settings = demo_settings(self.base, self.endpoints, self.rates, namespace, audience)
            state = self._with_workers(settings)
        finally:
            final = self.sims.stop()
        self.timings["stopped_s"] = self.clock()
        meta = {
            "people": self.options.people,
            "seconds": self.clock(),
            "processes": self.processes,
            "paced_for_s": round(self.duration, 1),
            "namespace": namespace,
            "timings": self.timings,
            "next": _next_steps(self.work / "loa.toml", state),
        }
        # the first act is reconciled with the simulators as they were when it ended
        first = self.drive.sims_before if self.drive else final or state.sims
        summary = build(state, self.rates, first, meta)
        if self.drive is not None:
            summary["drive"] = drive_summary(self.drive, self.work / "loa.toml")
            summary["reconciled"] = summary["reconciled"] and summary["drive"]["reconciled"]
        if self.options.as_json:
            print(orjson.dumps(summary).decode())
        else:
            out = Console()
            for part in summary_tables(summary):
                print_whole(out, part)
            for part in drive_tables(summary["drive"]) if self.drive else []:
                print_whole(out, part)
        return 0 if summary["reconciled"] else 1

    def _with_workers(self, settings: Settings) -> State:
        """Start the workers, write the audience, run the scenario, drain the workers."""
        config = self.work / "loa.toml"
        previous = _previous_namespace(config)
        write_settings(settings, config)
        supervisor = Supervisor(
            settings, self.processes, chores=chores(settings), controls=campaign_controls
        )
        supervisor.start()
        try:
            facts = self._audience()
            self.sims.ready()
            title = (
                f"loa demo · {self.options.people:,} people · {supervisor.count} worker "
                "processes · simulated: an SMSC per carrier, a Zalo ZNS endpoint"
            )
            with LiveView(self.console, self.rates, title) as view:

                def tick(state: State) -> None:
                    supervisor.watch()  # a worker that died is restarted, as `loa worker` does
                    view.update(state)

                scenario = Scenario(
                    settings,
                    supervisor.redis_url,
                    facts,
                    self.sims,
                    self.work,
                    workers=supervisor.count,
                    patience=120.0 + 4 * self.duration,
                    started=self.started,
                    forget=previous if previous != settings.namespace else None,
                    on_tick=tick,
                )
                state = uvloop.run(scenario.run())
            self.timings["sent_s"] = state.ended or 0.0
            if self.options.drive:
                self.drive = self._second_act(settings, supervisor.redis_url, state)
                self.timings["drive_s"] = self.clock()
            supervisor.drain()
        finally:
            supervisor.stop()
        return state

    def _second_act(self, settings: Settings, redis_url: str, state: State) -> DriveRun:
        """The vaccination drive, on the same workers and simulators (see second_act)."""
        self.console.print(
            f"[bold]second act[/bold]: a vaccination drive of {self.options.drive:,} "
            "registrants, their replies, check-ins and the hotline ..."
        )
        act = SecondAct(
            settings,
            redis_url,
            self.sims,
            self.work,
            people=self.options.drive,
            seed=self.options.seed,
            avoid={*state.facts.opted_out, state.facts.replier_phone},
            patience=120.0 + 2 * self.duration,
        )
        hook = WebhookServer(settings, redis_url, self.webhook_port)
        hook.start()
        try:
            drive = uvloop.run(act.run())
        finally:
            hook.stop()
        for at, text in drive.events:
            self.console.print(f"  {at:6.2f}s  {text}")
        return drive

    def _audience(self) -> Facts:
        path = self.work / "audience.csv"
        self.console.print(
            f"[bold]loa demo[/bold]: writing a national audience of {self.options.people:,} "
            f"people to {path} while the simulators and workers start ..."
        )
        zalo = HttpSimulator(zalo_options(self.options.seed, 0))
        facts = write_audience(
            path, self.options.people, zalo.has_zalo, self.options.seed, silent=zalo.silent
        )
        self.timings["audience_s"] = self.clock()
        return facts


def _previous_namespace(config: Path) -> str | None:
    """The namespace of the last demo run on this data directory, if any."""
    try:
        namespace = tomllib.loads(config.read_text(encoding="utf-8")).get("namespace")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    ours = isinstance(namespace, str) and namespace.startswith(NAMESPACE_PREFIX)
    return namespace if ours else None


def _next_steps(config: Path, state: State) -> dict[str, Any]:
    advisory = state.advisory.id or "ID"
    return {
        "who did not get the advisory, and why": (
            f"loa campaign report {advisory} --failed -o failed.csv -c {config}"
        ),
        "the STOP reply (and any other)": f"loa inbound list -c {config}",
        "a campaign's counters": f"loa campaign status {advisory} -c {config}",
        "the dashboard": f"loa server -c {config}   then open http://127.0.0.1:8080/",
    }


def print_whole(console: Console, part: RenderableType) -> None:
    """Print a summary table at the width it needs, even past a narrow terminal's: the
    terminal may wrap its lines, but no count and no campaign name is ever cut short."""
    if isinstance(part, Table):
        needed = console.measure(part, options=console.options.update_width(10_000)).maximum
        if needed > console.width:
            wide = Console(width=needed, file=console.file, force_terminal=console.is_terminal)
            wide.print(part)
            return
    console.print(part)

