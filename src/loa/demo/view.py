"""What the demo shows: the live view while it runs, the summary tables when it ends."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from loa.demo.config import Rates
from loa.demo.country import SMS_ROUTES, ZALO_ROUTE
from loa.demo.scenario import CampaignRun, State, route_done

REFRESH = 4  # times a second the live view is drawn
RATE_WINDOW = 2.0  # seconds the rates are measured over
SHOWN_EVENTS = 7
BAR = 20  # characters of a progress bar


class Rate:
    """Messages a second over the last RATE_WINDOW seconds, from samples of a growing count."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, count: int) -> float:
        """Record the count now; the rate over the window."""
        now = time.monotonic()
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        then, before = self.samples[0]
        return (count - before) / (now - then) if now > then else 0.0


class LiveView:
    """The terminal view while the demo runs, redrawn REFRESH times a second."""

    def __init__(self, console: Console, rates: Rates, title: str) -> None:
        self.console = console
        self.rates = rates
        self.title = title
        # drawn when the scenario says, on its own thread: rich's refresh thread would draw the
        # same tables again in between
        self.live = Live(console=console, auto_refresh=False, transient=False)
        self.speeds: dict[str, Rate] = {}
        self.drawn = 0.0

    def __enter__(self) -> LiveView:
        if not self.console.quiet:  # with --json nothing is drawn, so nothing is rendered
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.console.quiet:
            self.live.__exit__(None, None, None)

    def update(self, state: State) -> None:
        """Redraw from `state` (at most REFRESH times a second, and always at the end)."""
        now = time.monotonic()
        if self.console.quiet or (now - self.drawn < 1 / REFRESH and state.ended is None):
            return
        self.drawn = now
        self.live.update(self.render(state), refresh=True)

    def _speed(self, key: str, count: int) -> float:
        return self.speeds.setdefault(key, Rate()).add(count)

    def render(self, state: State) -> RenderableType:
        """The whole view."""
        elapsed = state.now()
        header = Text.assemble(
            (self.title, "bold"), f"  ·  {int(elapsed // 60)}:{int(elapsed % 60):02d} elapsed"
        )
        events = Table.grid(padding=(0, 1))
        for at, text in state.events[-SHOWN_EVENTS:]:
            events.add_row(Text(f"{at:6.1f}s", style="dim"), text)
        return Group(header, self._routes(state), self._campaigns(state), events)

    def _routes(self, state: State) -> Table:
        table = _table("routes")
        table.caption = "rate/cap: loa's rate, the provider's TPS cap · alert: emergency done/due"
        table.caption_justify = "left"
        for name in ("route", "rate/cap", "progress", "done", "msg/s", "dlvr.", "undlv.", "thrtl."):
            table.add_column(name, justify="left" if name == "route" else "right", no_wrap=True)
        table.add_column("alert", justify="right", no_wrap=True, style="red")
        facts, by_route = state.facts, state.by_route()
        alert = state.emergency.status.get("by_route", {})
        for route in (ZALO_ROUTE, *SMS_ROUTES):
            counts = by_route.get(route, {})
            total = facts.advisory[route] + facts.emergency[route]
            done = route_done(route, counts)
            sms = route != ZALO_ROUTE
            table.add_row(
                route,
                f"{self.rates.route[route]:,.0f}/{self.rates.provider[route]:,.0f}",
                ProgressBar(total=max(total, 1), completed=min(done, total), width=BAR),
                f"{done:,}/{total:,}",
                f"{self._speed(route, done):,.0f}",
                f"{counts.get('delivered', 0):,}" if sms else "-",
                f"{counts.get('undelivered', 0):,}" if sms else "-",
                f"{counts.get('throttled', 0):,}",
                self._alert_cell(route, alert.get(route, {}), facts.emergency[route]),
            )
        return table

    @staticmethod
    def _alert_cell(route: str, counts: dict[str, int], expected: int) -> Text:
        if route == ZALO_ROUTE:
            return Text("-")
        done = route_done(route, counts)
        style = "bold reverse" if 0 < done < expected else "" if done else "dim"
        return Text(f"{done:,}/{expected:,}", style=style)

    def _campaigns(self, state: State) -> Table:
        table = _table("campaigns")
        for name in ("campaign", "lane", "state", "progress", "done", "msg/s", "first", "all"):
            table.add_column(name, justify="left" if name == "campaign" else "right", no_wrap=True)
        for run, people in (
            (state.advisory, state.facts.advisory_people),
            (state.emergency, state.facts.emergency_people),
        ):
            table.add_row(*self._campaign_cells(run, people))
        return table

    def _campaign_cells(self, run: CampaignRun, people: int) -> list[RenderableType]:
        status, lane = run.status, ("emergency" if run.key == "emergency" else "normal")
        style = "bold red" if run.key == "emergency" and run.id else ""
        launched = run.launched or 0.0
        return [
            Text(str(status.get("name") or run.key), style=style),
            Text(lane, style=style),
            str(status.get("state", "waiting" if not run.id else "")),
            ProgressBar(total=max(people, 1), completed=min(run.finished, people), width=BAR),
            f"{run.finished:,}/{people:,}",
            f"{self._speed(run.key, run.finished):,.0f}",
            f"{run.first - launched:.2f}s" if run.first is not None else "",
            f"{run.done - launched:.1f}s" if run.done is not None else "",
        ]


def _table(title: str) -> Table:
    """A compact table: the view and the summary fit a 120-column terminal."""
    return Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0)
    )


def summary_tables(summary: dict[str, Any]) -> list[RenderableType]:
    """The end: per channel and route, per campaign, the checks that failed, what next."""
    return [_route_table(summary), _campaign_table(summary), *_verdict(summary)]


def _route_table(summary: dict[str, Any]) -> Table:
    title = (
        f"loa demo: {summary['people']:,} people in {summary['seconds']:.1f}s "
        f"({summary['processes']} worker processes); beside loa's counts, the simulators' own"
    )
    table = _table(title)
    table.add_column("route", no_wrap=True)
    for name in LOA_COLUMNS:
        table.add_column(name, justify="right", no_wrap=True)
    for name in SIM_COLUMNS:
        table.add_column(name, justify="right", style="cyan", no_wrap=True)
    routes = summary["routes"]
    sms = _sum([row for row in routes if row["channel"] == "sms"])
    for row in routes:
        table.add_row(row["route"], *_loa_cells(row, ""), *_sim_cells(row))
        if row is routes[-1]:
            table.add_row("all SMS", *_loa_cells(sms, ""), style="bold", end_section=True)
    campaigns = summary["campaigns"].values()
    planned_out = sum(c["suppressed"] for c in campaigns) - sum(r["suppressed"] for r in routes)
    invalid = sum(c["invalid"] for c in campaigns)
    table.add_row("at planning", *[""] * 6, f"{planned_out:,}", f"{invalid:,}")
    totals = _sum(routes)
    totals["suppressed"] += planned_out
    table.add_row("all", *_loa_cells(totals, f"{invalid:,}"), style="bold")
    return table


LOA_COLUMNS = ("sent", "dlvr.", "undlv.", "failed", "fallbk", "expired", "suppr.", "invalid")
SIM_COLUMNS = ("sim:sent", "dlvr.", "undlv.", "refused")
LOA_COUNTS = ("sent", "delivered", "undelivered", "failed", "fallback", "expired", "suppressed")


def _sum(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {name: sum(row[name] for row in rows) for name in LOA_COUNTS}


def _loa_cells(row: dict[str, Any], invalid: str) -> list[str]:
    cells = [f"{row[name]:,}" for name in LOA_COUNTS]
    if row.get("channel") == "zalo":
        cells[2] = "-"  # ZNS posts delivered events only (for the alert's template, here)
    return [*cells, invalid]


def _sim_cells(row: dict[str, Any]) -> list[str]:
    sim = row["sim"]
    if row["channel"] == "zalo":
        refused = sim["no_account"] + sim["over_tps"]
        return [f"{sim['accepted']:,}", f"{sim['delivered_events']:,}", "-", f"{refused:,}"]
    undelivered = sim["receipts_undelivered"] + sim["receipts_expired"]
    refused = sim["throttled"] + sim["bad_destinations"] + sim["errors"]
    return [
        f"{sim['accepted']:,}",
        f"{sim['receipts_delivered']:,}",
        f"{undelivered:,}",
        f"{refused:,}",
    ]


CAMPAIGN_COUNTS = ("queued", "sent", "delivered", "failed", "fallback", "suppressed", "invalid")


def _campaign_table(summary: dict[str, Any]) -> Table:
    table = _table("campaigns")
    table.add_column("campaign", no_wrap=True)
    table.add_column("lane", no_wrap=True)
    names = ("state", "queued", "sent", "dlvr.", "failed", "fallbk", "suppr.", "invalid")
    for name in (*names, "first", "all"):
        table.add_column(name, justify="right", no_wrap=True)
    for key, data in summary["campaigns"].items():
        first, done = data["first_message_after_s"], data["done_after_s"]
        table.add_row(
            str(data["name"]),
            "emergency" if key == "emergency" else "normal",
            str(data["state"]),
            *(f"{data[name]:,}" for name in CAMPAIGN_COUNTS),
            f"{first:.2f}s" if first is not None else "-",
            f"{done:.1f}s" if done is not None else "-",
        )
    return table


def _verdict(summary: dict[str, Any]) -> list[RenderableType]:
    checks = summary["checks"]
    wrong = [c for c in checks if not c["ok"]]
    lines: list[RenderableType] = [_facts_line(summary)]
    if summary["reconciled"]:
        lines.append(
            Text(
                f"Reconciled: all {len(checks)} checks agree to the message: loa's counts equal "
                "what the simulated SMSCs and Zalo endpoint received, refused and receipted, and "
                "what the audience file holds.",
                style="bold green",
            )
        )
    else:
        lines.append(
            Text(f"NOT reconciled: {len(wrong)} of {len(checks)} checks differ", style="bold red")
        )
        if not summary["receipts_complete"]:
            lines.append(Text("  some receipts never arrived", style="red"))
        for check in wrong:
            lines.append(
                Text(
                    f"  {check['what']}: loa {check['loa']:,}, "
                    f"{check['source']} {check['other']:,}",
                    style="red",
                )
            )
    lines.append(_next_steps(summary["next"]))
    return lines


def _facts_line(summary: dict[str, Any]) -> Text:
    audience, inbound = summary["audience"], summary["inbound"]
    alert = summary["campaigns"]["emergency"]
    lines = [
        f"malformed rows reported with their line numbers: {audience['malformed']:,} "
        f"(first lines: {', '.join(str(n) for n in audience['malformed_lines'][:8])}, ...)"
    ]
    lines.append(
        f"replies: {inbound['replies']}, opt-outs among them: {inbound['optouts']} "
        f"(the STOP replier is {'on' if inbound['replier_opted_out'] else 'NOT on'} "
        "the opt-out list)"
    )
    if alert["first_message_after_s"] is not None and alert["done_after_s"] is not None:
        lines.append(
            f"emergency alert: first message {alert['first_message_after_s']:.2f}s after launch, "
            f"all {alert['sent']:,} within {alert['done_after_s']:.1f}s; advisory SMS that went "
            f"out on a route while the alert did: {alert['advisory_sms_while_it_ran']:,} "
            "(batches senders held when it came)"
        )
        languages = ", ".join(f"{n:,} in {lang}" for lang, n in alert["languages"].items())
        lines.append(
            f"flood alert from a CAP file ({languages}): by Zalo, then SMS for "
            f"{alert['fallback']:,} Zalo does not know and for {alert['fallback_timeout']:,} "
            "it accepted but never delivered within fallback_after"
        )
    return Text("\n".join(lines))


def _next_steps(steps: dict[str, str]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_row(Text("where to look next", style="bold"), "")
    for what, command in steps.items():
        table.add_row(f"  {what}", Text(command, style="cyan"))
    return table
