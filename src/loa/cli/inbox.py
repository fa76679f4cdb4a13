"""`loa inbox ...`: the hotline's cases, read, assigned, answered and closed at the terminal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from loa.access.audit import AuditLog, Note
from loa.access.identity import Principal, Role
from loa.cli.common import (
    ConfigOption,
    JsonOption,
    RedisOption,
    TokenOption,
    as_caller,
    audited,
    load_settings,
    print_json,
    run_on,
)
from loa.engine.connection import RedisClient
from loa.inbox.service import Inbox, SyncReport

T = TypeVar("T")

app = typer.Typer(
    help="The hotline: citizens' messages as cases to read, assign, answer and close.",
    no_args_is_help=True,
)

InboxWork = Callable[[Inbox, Principal, Note], Awaitable[T]]


def _run(config: Path | None, redis: str | None, work: Callable[[Inbox], Awaitable[T]]) -> T:
    return run_on(config, redis, Inbox, work)


def _as(
    config: Path | None,
    redis: str | None,
    token: str | None,
    role: Role,
    work: InboxWork[T],
    action: str = "",
) -> T:
    """Run as the caller with at least `role`; a change (`action`) goes to the audit log."""
    settings = load_settings(config, redis)

    def run(client: RedisClient, who: Principal, note: Note) -> Awaitable[T]:
        return work(Inbox(settings, client), who, note)

    if not action:  # reading
        return as_caller(settings, token, role, run)
    return audited(settings, token, action, "", run, role)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M") if ms else ""


@app.command()
def sync(
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep taking messages in as they come, until Ctrl-C.")
    ] = False,
    every: Annotated[float, typer.Option("--every", min=0.2, help="Seconds between rounds.")] = 2.0,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Take in new inbound messages: cases, opt-out and opt-in confirmations."""

    async def work(inbox: Inbox, who: Principal, note: Note) -> SyncReport:
        while True:
            report = await inbox.sync()
            note.detail = ", ".join(f"{k} {v}" for k, v in report.to_json().items() if v)
            if not follow:
                return report
            _print_sync(report, json_output)
            if report.read:
                await AuditLog.of(inbox.redis, inbox.settings).record(
                    who, "inbox.sync", detail=note.detail
                )
            await asyncio.sleep(every)

    try:
        _print_sync(_as(config, redis, token, Role.OPERATOR, work, "inbox.sync"), json_output)
    except KeyboardInterrupt:
        if not follow:
            raise


def _print_sync(report: SyncReport, json_output: bool) -> None:
    if json_output:
        print_json(report.to_json())
    else:
        counts = ", ".join(f"{k} {v:,}" for k, v in report.to_json().items() if v)
        typer.echo(counts or "nothing new")


@app.command("list")
def list_cases(
    closed: Annotated[bool, typer.Option("--closed", help="Closed cases too.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 50,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Cases: open first, urgent on top (numbers shown to operators; masked for viewers)."""

    async def work(inbox: Inbox, who: Principal, note: Note) -> list[dict[str, Any]]:
        if who.role >= Role.OPERATOR:
            await inbox.sync()  # an operator sees what came in up to now
        numbers = who.role >= Role.OPERATOR
        return [case.to_json(numbers) for case in await inbox.cases(closed=closed, limit=limit)]

    rows = _as(config, redis, token, Role.VIEWER, work)
    if json_output:
        print_json(rows)
        return
    table = Table("case", "state", "urgent", "from", "assignee", "changed (UTC)", "last message")
    for row in rows:
        table.add_row(
            row["id"],
            row["state"],
            "yes" if row["urgent"] else "",
            row["phone"],
            row["assignee"],
            _when(row["updated_ms"]),
            row["last"],
        )
    Console().print(table)


@app.command()
def show(
    case_id: str,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """One case's conversation, oldest message first."""

    async def work(inbox: Inbox, who: Principal, note: Note) -> dict[str, Any]:
        if who.role >= Role.OPERATOR:
            await inbox.sync()
        case, conversation = await inbox.case(case_id)
        return {"case": case.to_json(who.role >= Role.OPERATOR), "messages": conversation}

    found = _as(config, redis, token, Role.VIEWER, work)
    if json_output:
        print_json(found)
        return
    case = found["case"]
    typer.echo(f"case {case['id']} ({case['state']}) from {case['phone']} on {case['channel']}")
    for message in found["messages"]:
        arrow = "<-" if message["dir"] == "in" else f"-> {message.get('by', '')}"
        typer.echo(f"{_when(message['at'])} {arrow} {message['text']}")


@app.command()
def assign(
    case_id: str,
    to: Annotated[str, typer.Option("--to", help="The operator (default: you).")] = "",
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
) -> None:
    """Assign a case to an operator."""

    async def work(inbox: Inbox, who: Principal, note: Note) -> str:
        note.detail = f"case {case_id} to {to or who.person}"
        return await inbox.assign(case_id, to, who.person)

    _as(config, redis, token, Role.OPERATOR, work, "inbox.assign")
    typer.echo(f"case {case_id} assigned")


@app.command()
def reply(
    case_id: str,
    message: Annotated[str, typer.Argument(help="The answer, sent by SMS.")],
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
) -> None:
    """Answer a case: a one-to-one message through the routes and their rate limits."""

    async def work(inbox: Inbox, who: Principal, note: Note) -> str:
        sent = await inbox.reply(case_id, message, who.person)
        note.detail = f"case {case_id}: {sent.parts} SMS parts on {sent.route}"
        parts = f"{sent.parts} SMS part{'s' if sent.parts != 1 else ''}"
        return "; ".join([f"queued on {sent.route} ({parts})", *sent.notes])

    typer.echo(_as(config, redis, token, Role.OPERATOR, work, "inbox.reply"))


@app.command()
def close(
    case_id: str,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
) -> None:
    """Close a case; the number's next message opens a new one."""

    async def work(inbox: Inbox, who: Principal, note: Note) -> str:
        note.detail = f"case {case_id}"
        return await inbox.close(case_id, who.person)

    _as(config, redis, token, Role.OPERATOR, work, "inbox.close")
    typer.echo(f"case {case_id} closed")
