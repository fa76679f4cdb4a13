"""`loa campaign ...`: the operator's commands."""

from __future__ import annotations

import asyncio
import enum
import multiprocessing
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from loa.access.audit import AuditLog, Note
from loa.access.identity import Principal, Role
from loa.campaigns.partitions import Partition
from loa.campaigns.planner import PLANNING_COUNTERS, Report
from loa.campaigns.record import State
from loa.campaigns.service import STATUS_KEYS, Campaigns, safe_cell
from loa.cli.common import (
    ConfigOption,
    JsonOption,
    RedisOption,
    TokenOption,
    audited_on,
    print_json,
    run_on,
)
from loa.cli.tables import show

T = TypeVar("T")


class CsvForm(enum.StrEnum):
    """How a CSV export is written: for spreadsheets, or for programs."""

    EXCEL = "csv-excel"
    PLAIN = "csv"


app = typer.Typer(help="Validate, create, launch and steer campaigns.", no_args_is_help=True)

AudienceOption = Annotated[
    Path, typer.Option("--audience", "-a", help="CSV, JSON lines or Parquet.")
]
CampaignWork = Callable[[Campaigns, Principal, Note], Awaitable[T]]


def _run(config: Path | None, redis: str | None, work: Callable[[Campaigns], Awaitable[T]]) -> T:
    return run_on(config, redis, Campaigns, work)


def _audited(
    config: Path | None,
    redis: str | None,
    token: str | None,
    action: str,
    campaign: str,
    work: CampaignWork[T],
    role: Role = Role.OPERATOR,
) -> T:
    """A change to campaigns, as the caller, audited (see loa.cli.common.audited)."""
    return audited_on(config, redis, token, action, campaign, Campaigns, work, role)


@app.command()
def validate(
    plan: Path,
    audience: AudienceOption,
    config: ConfigOption = None,
    redis: RedisOption = None,
    json_output: JsonOption = False,
) -> None:
    """The dry run: who would get what, on which route, in how many parts. Nothing is queued."""
    _show_dry_run(_run(config, redis, lambda c: c.validate(plan, audience)), json_output)


@app.command()
def create(
    plan: Path,
    audience: AudienceOption,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
) -> None:
    """Store a draft campaign, its plan and a copy of its audience pinned with it; prints its id."""

    async def work(c: Campaigns, who: Principal, note: Note) -> str:
        campaign = await c.create(plan, audience, who)
        note.campaign = campaign.id
        fields = campaign.fields
        note.detail = f"approval {fields['approval']}: {fields['approval_reason']}"
        return campaign.id

    typer.echo(_audited(config, redis, token, "campaign.create", "", work))


@app.command()
def review(
    campaign_id: str,
    config: ConfigOption = None,
    redis: RedisOption = None,
    json_output: JsonOption = False,
) -> None:
    """What an approver approves: the dry run of the campaign's pinned plan and audience."""
    _show_dry_run(_run(config, redis, lambda c: c.review(campaign_id)), json_output)


def _show_dry_run(report: Report, json_output: bool) -> None:
    """Print a dry run; exit 1 when it found problems."""
    if json_output:
        print_json(report.to_json())
    else:
        _print_report(report)
    raise typer.Exit(1 if report.problems else 0)


@app.command()
def approve(
    campaign_id: str,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
) -> None:
    """A second person approves a draft (never its creator: another OS user, or `--token`)."""

    async def work(c: Campaigns, who: Principal, note: Note) -> str:
        return str(await c.approve(campaign_id, who))

    state = _audited(
        config, redis, token, "campaign.approve", campaign_id, work, role=Role.APPROVER
    )
    typer.echo(f"{campaign_id} {state}")


def _action(name: str, doc: str) -> None:
    def command(
        campaign_id: str,
        config: ConfigOption = None,
        redis: RedisOption = None,
        token: TokenOption = None,
    ) -> None:
        async def work(c: Campaigns, who: Principal, note: Note) -> str:
            return str(await c.act(campaign_id, name))

        state = _audited(config, redis, token, f"campaign.{name}", campaign_id, work)
        typer.echo(f"{campaign_id} {state}")

    command.__doc__ = doc
    app.command(name)(command)


_action("pause", "Hold every message not yet sent, on every worker, within a second.")
_action("resume", "Let a paused campaign send again.")
_action("cancel", "Stop for good: what was not sent is dropped and counted.")


PartitionsOption = Annotated[
    int | None,
    typer.Option(
        "--partitions",
        "-P",
        min=0,
        help="plan in this many processes side by side, each a partition of the audience by "
        "number (0: one per core); a single-channel SMS plan without send times. Default: "
        "planning.partitions (one per core) for such a plan and an audience of at least "
        "planning.partition_min_mb, else 1",
    ),
]


@app.command()
def launch(
    campaign_id: str,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
    partitions: PartitionsOption = None,
    here: Annotated[
        bool,
        typer.Option(
            "--here/--elsewhere",
            help="with --partitions: plan them in processes here, or only start the campaign "
            "and plan each with `loa campaign plan ID --partition k/P` where you choose",
        ),
    ] = True,
) -> None:
    """Plan the audience onto the queues; run again after a crash to continue where it was.

    Only the approved plan and pinned audience are sent: a changed one is refused.
    """
    count = 1

    async def work(c: Campaigns, who: Principal, note: Note) -> Report:
        nonlocal count
        if (await c.store.get(campaign_id)).state is State.DRAFT:
            reason = await c.approve_automatically(campaign_id)
            log = AuditLog.of(c.redis, c.settings)
            await log.record(who, "campaign.approve", campaign_id, detail=f"automatic: {reason}")
        count = partitions or os.cpu_count() or 1
        if partitions is None:
            count = await c.partitions_for(campaign_id)
        if count > 1:
            await c.start(campaign_id, count)
            note.detail = f"planned in {count} partitions"
            return Report()
        report = await c.launch(campaign_id)
        note.detail = f"{report.queued} queued"
        return report

    report = _audited(config, redis, token, "campaign.launch", campaign_id, work)
    if count > 1 and not here:
        typer.echo(f"started in {count} partitions: plan each with --partition k/{count}")
        return
    if count > 1:
        report = _plan_partitions(campaign_id, count, config, redis, token)
    if json_output:
        print_json(report.to_json())
    else:
        _print_report(report, "planned: now on the queues")


def _plan_partitions(
    campaign_id: str, count: int, config: Path | None, redis: str | None, token: str | None
) -> Report:
    """Run `loa campaign plan` for every partition, side by side; their counts added up.

    Each is a process forked from this one, which has loaded loa already: it plans at once,
    where a new `loa` would first spend about a second of CPU importing it.
    """
    options = ["--config", str(config)] if config else []
    options += ["--redis", redis] if redis else []
    options += ["--token", token] if token else []
    import loa.campaigns.columnar_run  # noqa: F401 (loaded once here, not in each child)

    fork = multiprocessing.get_context("fork")
    sys.stdout.flush()  # what this process wrote is not written again by each child
    sys.stderr.flush()
    children = [
        fork.Process(
            target=_plan_forked,
            args=(["campaign", "plan", campaign_id, "--partition", f"{k}/{count}", *options],),
        )
        for k in range(count)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join()
    failed = [k for k, child in enumerate(children) if child.exitcode != 0]
    if failed:
        typer.echo(f"partitions {failed} of {count} failed: launch again to go on", err=True)
        raise typer.Exit(1)
    return _run(config, redis, lambda c: c.partitions_report(campaign_id))


def _plan_forked(arguments: list[str]) -> None:
    """A partition's process: `loa campaign plan ...`, its report not printed (the launch
    prints the sum); its errors print as they would from `loa` itself."""
    from loa.cli import main  # the package that holds this module: loaded already

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.argv = ["loa", *arguments]
    main()


@app.command("plan")
def plan_partition(
    campaign_id: str,
    partition: Annotated[str, typer.Option("--partition", help="k/P: partition k of P")],
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Plan one partition of a launched campaign, on any machine that reads its pinned
    audience and reaches its Redis; run again after a crash to continue where it was."""
    part = Partition.parse(partition)

    async def work(c: Campaigns, who: Principal, note: Note) -> Report:
        report = await c.plan_partition(campaign_id, part)
        note.detail = f"partition {part.label}: {report.queued} queued"
        return report

    report = _audited(config, redis, token, "campaign.plan", campaign_id, work)
    if json_output:
        print_json(report.to_json())
    else:
        _print_report(report, f"partition {part.label} planned")


@app.command()
def status(
    campaign_id: str,
    config: ConfigOption = None,
    redis: RedisOption = None,
    json_output: JsonOption = False,
    watch: Annotated[bool, typer.Option("--watch", help="Live progress until it ends.")] = False,
) -> None:
    """State and counters."""
    if watch:
        _run(config, redis, lambda c: _watch(c, campaign_id))
        return
    current = _run(config, redis, lambda c: c.status(campaign_id))
    if json_output:
        print_json(current)
        return
    rows = [
        [key, _cell(current[key])]
        for key in (
            *STATUS_KEYS,
            "cancelled",
            "filtered",
            "capped",
            "retried",
            "redelivered",
            "unknown",
            "possible_duplicate",
            "fallback_timeout",
            "fallback_failed",
        )
    ]
    show(f"campaign {campaign_id}: {current['name']}", ["counter", "value"], rows)


def _cell(value: object) -> str:
    """A counter as people read it (thousands separated), anything else as text."""
    if value is None:
        return ""
    return f"{value:,}" if isinstance(value, int) else str(value)


async def _watch(campaigns: Campaigns, campaign_id: str) -> None:
    """A live bar on a terminal; piped, a line each time the counts change."""
    if not sys.stdout.isatty():
        await _watch_lines(campaigns, campaign_id)
        return
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
    ) as bars:
        task = bars.add_task(campaign_id, total=1)
        while True:
            current = await campaigns.status(campaign_id)
            bars.update(
                task,
                total=max(1, current["queued"]),
                completed=current["finished"],
                description=f"{campaign_id} {current['state']}",
            )
            if current["state"] in ("done", "cancelled", "expired"):
                return
            await asyncio.sleep(0.5)


async def _watch_lines(campaigns: Campaigns, campaign_id: str) -> None:
    last = ""
    while True:
        current = await campaigns.status(campaign_id)
        line = f"{campaign_id} {current['state']} {current['finished']}/{current['queued']}"
        if line != last:
            typer.echo(line)
            last = line
        if current["state"] in ("done", "cancelled", "expired"):
            return
        await asyncio.sleep(0.5)


@app.command("list")
def list_campaigns(
    config: ConfigOption = None, redis: RedisOption = None, json_output: JsonOption = False
) -> None:
    """The newest campaigns."""
    rows = _run(config, redis, lambda c: c.list())
    if json_output:
        print_json(rows)
        return
    cells = []
    for row in rows:
        held = f"{row['hold']} until {row['held_until']}" if row["held_until"] else row["hold"]
        cells.append([row["id"], row["name"], row["state"], held, f"{row['queued']:,}"])
    headers = ["id", "name", "state", "held", "queued"]
    show("campaigns", headers, cells, text={"name", "held"})


@app.command()
def report(
    campaign_id: str,
    failed: Annotated[
        bool, typer.Option("--failed", help="Who did not get it, and why (the only report).")
    ] = True,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("failed.csv"),
    form: Annotated[
        CsvForm,
        typer.Option(
            "--format",
            help="csv-excel: cells a spreadsheet shows as text, never runs as formulas "
            "(a leading ' where needed); csv: the values exactly, for programs.",
        ),
    ] = CsvForm.EXCEL,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
) -> None:
    """Write the failed-recipients report as CSV (phone numbers only ever go to this file)."""

    async def work(c: Campaigns, who: Principal, note: Note) -> int:
        rows = await c.write_failed(campaign_id, output, excel=form is CsvForm.EXCEL)
        note.detail = f"{rows} rows"
        return rows

    written = _audited(config, redis, token, "campaign.failed_report", campaign_id, work)
    typer.echo(f"{written} rows written to {output}")


def _print_report(report: Report, title: str = "dry run: nothing queued") -> None:
    console = Console()
    if report.problems:
        for problem in report.problems:
            console.print(f"problem: {problem}", markup=False, highlight=False)
        return
    rows = [[name, f"{getattr(report, name):,}"] for name in (*PLANNING_COUNTERS, "parts")]
    show(title, ["counter", "value"], rows, console=console)
    for warning in report.warnings:
        console.print(f"warning: {warning}", markup=False, highlight=False)
    for title, counts in (
        ("route", report.by_route),
        ("channel", report.by_channel),
        ("carrier", report.by_carrier),
        ("encoding", report.by_encoding),
    ):
        if counts:
            console.print(
                f"by {title}: " + ", ".join(f"{k} {v:,}" for k, v in counts.most_common())
            )
    if report.by_language:
        console.print(
            "by language: "
            + ", ".join(
                f"{language} {n:,} ({report.sms_parts_by_language[language]:,} SMS parts)"
                for language, n in report.by_language.most_common()
            ),
            markup=False,
            highlight=False,
        )
    _print_extras(console, report)
    for line, reason in report.errors[:20]:
        console.print(f"line {line}: {reason}")


def _print_extras(console: Console, report: Report) -> None:
    """The dry run's ETA per route, send times and samples (numbers masked)."""
    if report.eta_s:
        times = [
            f"{r} {'no limit' if s is None else f'{s:,.0f}s'}" for r, s in report.eta_s.items()
        ]
        console.print("sending time per route: " + ", ".join(times), markup=False)
    if report.send_times:
        times = [f"{k} {v:,}" for k, v in report.send_times.items()]
        console.print("send times: " + ", ".join(times), markup=False)
    for key, sample in report.samples.items():
        console.print(f"sample {key} to {sample['to']}: {sample['body']}", markup=False)


suppression_app = typer.Typer(
    help="The opt-out list, applied at planning and at sending.", no_args_is_help=True
)


def _addresses(values: list[str], file: Path | None) -> list[str]:
    found = list(values)
    if file is not None:
        found += [line.split(",")[0] for line in file.read_text(encoding="utf-8").splitlines()]
    return [a for a in found if a.strip() and a.strip().lower() != "phone"]


@suppression_app.command("add")
def suppression_add(
    addresses: Annotated[list[str] | None, typer.Argument()] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="One address a line.")] = None,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
) -> None:
    """Opt numbers or addresses out."""
    items = _addresses(addresses or [], file)
    added = _audited(config, redis, token, "suppression.add", "", _suppress("add", items))
    typer.echo(f"{added} added")


def _suppress(change: str, items: list[str]) -> CampaignWork[int]:
    """Add or remove addresses; the audit log counts them, never names them."""
    from loa.campaigns.suppression import Suppression

    async def work(c: Campaigns, who: Principal, note: Note) -> int:
        suppression = Suppression(c.redis, c.settings.namespace)
        changed = await (suppression.add if change == "add" else suppression.remove)(items)
        done = "new" if change == "add" else "removed"
        note.detail = f"{len(items)} given, {changed} {done}"
        return changed

    return work


@suppression_app.command("remove")
def suppression_remove(
    addresses: Annotated[list[str], typer.Argument()],
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
) -> None:
    """Opt numbers or addresses back in."""
    gone = _audited(config, redis, token, "suppression.remove", "", _suppress("remove", addresses))
    typer.echo(f"{gone} removed")


@suppression_app.command("check")
def suppression_check(
    addresses: Annotated[list[str], typer.Argument()],
    config: ConfigOption = None,
    redis: RedisOption = None,
) -> None:
    """Say for each address whether it is opted out (exit 1 if any is)."""
    from loa.campaigns.suppression import Suppression

    flags = _run(
        config, redis, lambda c: Suppression(c.redis, c.settings.namespace).check(addresses)
    )
    for address, flag in zip(addresses, flags, strict=True):
        typer.echo(f"{address}: {'opted out' if flag else 'not on the list'}")
    raise typer.Exit(1 if any(flags) else 0)


inbound_app = typer.Typer(
    help="Replies and other inbound messages (the hotline, answers to follow-ups).",
    no_args_is_help=True,
)
INBOUND_COLUMNS = ("id", "at", "route", "channel", "sender", "recipient", "text", "optout")


async def _inbound(campaigns: Campaigns, after: str, limit: int) -> list[dict[str, str]]:
    from loa.engine.events import read_inbound

    rows: list[dict[str, str]] = []
    while len(rows) < limit:
        page = await read_inbound(
            campaigns.redis, campaigns.settings.namespace, after, min(1000, limit - len(rows))
        )
        if not page:
            break
        rows += page
        after = page[-1]["id"]
    return rows


@inbound_app.command("list")
def inbound_list(
    after: Annotated[str, typer.Option("--after", help="Only entries after this id.")] = "-",
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 50,
    config: ConfigOption = None,
    redis: RedisOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show inbound messages, oldest first (operators see the numbers: they answer them)."""
    rows = _run(config, redis, lambda c: _inbound(c, after, limit))
    if json_output:
        print_json(rows)
        return
    cells = []
    for row in rows:
        at = datetime.fromtimestamp(int(row.get("at", 0)) / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        optout = "yes" if row.get("optout") == "1" else ""
        cells.append([row["id"], at, row.get("sender", ""), row.get("text", ""), optout])
    headers = ["id", "at (UTC)", "from", "text", "opt-out"]
    show("inbound, oldest first", headers, cells, text={"text"})


@inbound_app.command("export")
def inbound_export(
    out: Annotated[Path, typer.Argument(help="CSV file to write.")],
    after: Annotated[str, typer.Option("--after", help="Only entries after this id.")] = "-",
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
) -> None:
    """Write every inbound message (or those after --after) to a CSV file (audited: numbers)."""
    import csv

    async def work(c: Campaigns, who: Principal, note: Note) -> list[dict[str, str]]:
        found = await _inbound(c, after, 10**9)
        note.detail = f"{len(found)} inbound messages exported"
        return found

    rows = _audited(config, redis, token, "inbound.export", "", work)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=INBOUND_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: safe_cell(row.get(k, "")) for k in INBOUND_COLUMNS})
    typer.echo(f"{len(rows)} inbound messages written to {out}")
