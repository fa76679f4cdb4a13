"""`loa appointments ...`: allocate places, apply replies, change one person, export, watch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from loa.access.audit import AuditLog, Note
from loa.access.identity import Principal, Role
from loa.appointments.inputs import parse_day
from loa.appointments.ledger import REASONS, Change
from loa.appointments.service import Appointments, RepliesReport, RunReport
from loa.cli.common import (
    ConfigOption,
    JsonOption,
    RedisOption,
    TokenOption,
    audited_on,
    print_json,
    run_on,
)

T = TypeVar("T")

app = typer.Typer(
    help="Appointments by site capacity and priority group: allocate, replies, changes.",
    no_args_is_help=True,
)

DriveOption = Annotated[
    str, typer.Option("--drive", "-d", help="The drive (its own ledger), e.g. 'hcm-2026-12'.")
]
DriveWork = Callable[[Appointments, Principal, Note], Awaitable[T]]


def _run(config: Path | None, redis: str | None, work: Callable[[Appointments], Awaitable[T]]) -> T:
    return run_on(config, redis, Appointments, work)


def _audited(
    config: Path | None,
    redis: str | None,
    token: str | None,
    action: str,
    work: DriveWork[T],
    role: Role = Role.OPERATOR,
) -> T:
    """A change to appointments, as the caller, audited (see loa.cli.common.audited)."""
    return audited_on(config, redis, token, action, "", Appointments, work, role)


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    day = parse_day(value)
    if day is None:
        raise typer.BadParameter(f"{value!r} is not a date (write 2026-12-10)", param_hint=option)
    return day


@app.command()
def allocate(
    sites: Annotated[
        Path, typer.Option("--sites", "-s", help="Sites, with their sessions or without.")
    ],
    people: Annotated[Path, typer.Option("--people", "-p", help="Registrants.")],
    drive: DriveOption = "default",
    sessions: Annotated[
        Path | None, typer.Option("--sessions", help="Sessions, when not in the sites file.")
    ] = None,
    first: Annotated[
        str | None,
        typer.Option("--from", help="First day a place may be on (default: today)."),
    ] = None,
    last: Annotated[
        str | None, typer.Option("--until", help="Last day a place may be on (default: none).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the schedule (CSV) here.")
    ] = None,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Place registrants in sessions: priority group, then registered_at, then line.

    Run it again with more registrants or sessions: places already given are kept, and only the
    new and those still waiting are placed.
    """
    start, end = _day(first, "--from"), _day(last, "--until")

    async def work(a: Appointments, who: Principal, note: Note) -> RunReport:
        report = await a.allocate(
            drive, sites, people, sessions=sessions, first=start, last=end, output=output
        )
        counts = report.people
        note.detail = (
            f"drive {drive} run {report.run}: {counts['placed']} placed, {counts['kept']} kept, "
            f"{counts['waiting']} waiting, {report.refused_count} rows refused"
        )
        return report

    report = _audited(config, redis, token, "appointments.allocate", work)
    if json_output:
        print_json(report.to_json())
        return
    _print_run(report, output)


def _print_run(report: RunReport, output: Path | None) -> None:
    console = Console()
    people = report.people
    console.print(
        f"drive {report.drive}, run {report.run}: {people['placed']:,} placed now, "
        f"{people['kept']:,} kept their place, {people['waiting']:,} waiting, "
        f"{people['cancelled']:,} cancelled earlier"
    )
    for reason, count in report.waiting.most_common():
        console.print(f"  waiting, {REASONS.get(reason, reason)}: {count:,}")
    table = Table(title="by priority group")
    for column in ("group", "placed", "confirmed", "waiting", "cancelled"):
        table.add_column(column, justify="right")
    for group, counts in report.by_group.items():
        table.add_row(str(group), *(f"{counts[state]:,}" for state in _STATES))
    console.print(table)
    if report.refused_count:
        console.print(f"{report.refused_count:,} rows refused:")
        # one line each, however long the path: `file:line: reason`, as editors and grep read it
        for refused in report.refused[:20]:
            console.print(f"  {refused.file}:{refused.line}: {refused.reason}", soft_wrap=True)
    if output is not None:
        console.print(f"{report.written:,} rows written to {output}", soft_wrap=True)


_STATES = ("placed", "confirmed", "waiting", "cancelled")


@app.command()
def status(
    drive: DriveOption = "default",
    config: ConfigOption = None,
    redis: RedisOption = None,
    json_output: JsonOption = False,
) -> None:
    """Counts per priority group, per site and per session (capacity, booked, free)."""
    summary = _run(config, redis, lambda a: a.summary(drive))
    if json_output:
        print_json(summary)
        return
    console = Console()
    groups = Table(title=f"drive {drive}: by priority group")
    for column in ("group", *_STATES):
        groups.add_column(column, justify="right")
    for group, counts in summary["by_group"].items():
        groups.add_row(group, *(f"{counts[state]:,}" for state in _STATES))
    console.print(groups)
    sites = Table(title="by site")
    for column in ("site", "capacity", "booked", "free"):
        sites.add_column(column, justify="right")
    for site, counts in summary["by_site"].items():
        sites.add_row(site, *(f"{counts[k]:,}" for k in ("capacity", "booked", "free")))
    console.print(sites)


@app.command("list")
def list_drives(config: ConfigOption = None, redis: RedisOption = None) -> None:
    """The drives."""
    for name in _run(config, redis, lambda a: a.drives()):
        typer.echo(name)


@app.command()
def schedule(
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV file to write.")],
    drive: DriveOption = "default",
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
) -> None:
    """Write the whole schedule as it stands (audited: it holds phone numbers)."""

    async def work(a: Appointments, who: Principal, note: Note) -> int:
        rows = await a.write_schedule(drive, output)
        note.detail = f"drive {drive}: {rows} rows"
        return rows

    rows = _audited(config, redis, token, "appointments.schedule", work)
    typer.echo(f"{rows:,} rows written to {output}")


@app.command()
def replies(
    drive: DriveOption = "default",
    plan: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            help="Send each changed appointment through a campaign of this plan "
            "(launched at once unless it needs a second person's approval).",
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep applying replies as they come, until Ctrl-C.")
    ] = False,
    every: Annotated[
        float, typer.Option("--every", min=0.2, help="Seconds between rounds with --follow.")
    ] = 5.0,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Apply replies: 1/CO/XAC NHAN confirms, 2/KHONG/HUY LICH gives the place back, DOI moves.

    A place given back goes at once to whoever waits first for its site or province.
    """

    def show(report: RepliesReport) -> None:
        if json_output:
            print_json(report.to_json())
        else:
            _print_replies(report)

    async def work(a: Appointments, who: Principal, note: Note) -> RepliesReport:
        """One round, audited (with --follow, only the rounds that changed something)."""
        while True:
            report = await a.apply_replies(drive, who, plan=plan)
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items()))
            note.detail = f"drive {drive}: {report.read} read; {outcomes or 'no changes'}"
            note.campaign = report.campaign
            if not follow:
                return report
            show(report)
            if report.outcomes:
                log = AuditLog.of(a.redis, a.settings)
                await log.record(who, "appointments.replies", report.campaign, detail=note.detail)
            await asyncio.sleep(every)

    try:
        show(_audited(config, redis, token, "appointments.replies", work))
    except KeyboardInterrupt:
        if not follow:
            raise


def _print_replies(report: RepliesReport) -> None:
    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(report.outcomes.items()))
    typer.echo(f"{report.read:,} inbound messages read; {outcomes or 'no appointment replies'}")
    if report.changes_file:
        typer.echo(f"{len(report.notified):,} changed appointments in {report.changes_file}")
    if report.campaign:
        typer.echo(f"campaign {report.campaign}: {report.campaign_state}")


def _change_command(action: str, doc: str) -> None:
    def command(
        phone: Annotated[str, typer.Argument(help="The person's phone number.")],
        drive: DriveOption = "default",
        config: ConfigOption = None,
        redis: RedisOption = None,
        token: TokenOption = None,
    ) -> None:
        async def work(a: Appointments, who: Principal, note: Note) -> Change:
            change = await a.change(drive, action, phone, who)
            note.detail = f"drive {drive}: {change.outcome}"  # the number is in the history
            return change

        change = _audited(config, redis, token, f"appointments.{action}", work)
        line = change.outcome
        if change.after and change.after != change.before:
            line += f": now {change.after}"
        if change.waiter:
            line += f"; the place went to the next waiting ({change.given})"
        typer.echo(line)

    command.__doc__ = doc
    app.command(action)(command)


_change_command("confirm", "Confirm a person's place (as their reply '1' does).")
_change_command("release", "Give a person's place back; it goes to whoever waits first.")
_change_command("move", "Move a person to the next session with room at the same site.")


@app.command()
def history(
    drive: DriveOption = "default",
    after: Annotated[str, typer.Option("--after", help="Only changes after this id.")] = "-",
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 50,
    config: ConfigOption = None,
    redis: RedisOption = None,
    json_output: JsonOption = False,
) -> None:
    """Every change of the schedule, oldest first (operators see the numbers)."""
    rows = _run(config, redis, lambda a: a.history(drive, after, limit))
    if json_output:
        print_json(rows)
        return
    table = Table("id", "event", "phone", "session", "from", "by")
    for row in rows:
        table.add_row(
            row["id"], row["e"], row["p"], row["s"], row["f"], f"{row['by']} {row['r']}".strip()
        )
    Console().print(table)
