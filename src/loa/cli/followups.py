"""`loa followups sync` and `loa campaign answers ID`: answers to campaigns' questions."""

from __future__ import annotations

import csv
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer

from loa.access.audit import AuditLog
from loa.access.identity import local_principal
from loa.cli.common import (
    ConfigOption,
    JsonOption,
    RedisOption,
    print_json,
    run_on,
)
from loa.followups.service import Followups

T = TypeVar("T")

app = typer.Typer(
    help="Answers to campaigns' follow-up questions, matched to the open question and counted.",
    no_args_is_help=True,
)

def _run(config: Path | None, redis: str | None, work: Callable[[Followups], Awaitable[T]]) -> T:
    return run_on(config, redis, Followups, work)


@app.command()
def sync(
    config: ConfigOption = None, redis: RedisOption = None, json_output: JsonOption = False
) -> None:
    """Store the replies that came since the last time as answers; urgent ones open cases."""

    async def work(followups: Followups) -> dict[str, int]:
        report = (await followups.sync()).to_json()
        detail = ", ".join(f"{k} {v}" for k, v in report.items() if v)
        await AuditLog.of(followups.redis, followups.settings).record(
            local_principal(), "followups.sync", detail=detail
        )
        return report

    report = _run(config, redis, work)
    if json_output:
        typer.echo(orjson.dumps(report).decode())
    else:
        typer.echo(", ".join(f"{k} {v}" for k, v in report.items()))


def answers(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id.")],
    config: ConfigOption = None,
    redis: RedisOption = None,
    json_output: JsonOption = False,
    csv_output: Annotated[
        bool, typer.Option("--csv", help="Counts per option and region as CSV.")
    ] = False,
) -> None:
    """Answers to a campaign's question: per option, region and day; response rate; unparsed."""

    async def work(followups: Followups) -> dict[str, Any]:
        return await followups.summary(campaign_id)

    summary = _run(config, redis, work)
    if json_output:
        print_json(summary)
    elif csv_output:
        _write_csv(summary)
    else:
        _print(summary)


def _write_csv(summary: dict[str, Any]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(["region", "code", "label", "count"])
    labels = {option["code"]: option["label"] for option in summary["options"]}
    for option in summary["options"]:
        writer.writerow(["", option["code"], option["label"], option["count"]])
    for region, counts in summary["by_region"].items():
        for code, count in sorted(counts.items()):
            writer.writerow([region, code, labels.get(code, ""), count])


def _print(summary: dict[str, Any]) -> None:
    if summary["question"] is None:
        typer.echo(f"campaign {summary['campaign']} asks no question")
        return
    typer.echo(
        f"question {summary['question']}: {summary['answered']} answered of {summary['sent']} "
        f"sent ({summary['response_rate']:.1%}), {summary['unparsed_count']} unparsed"
    )
    for option in summary["options"]:
        urgent = "  urgent" if option["urgent"] else ""
        typer.echo(f"  {option['code']:>4}  {option['count']:>8}  {option['label']}{urgent}")
    for region, counts in summary["by_region"].items():
        shown = ", ".join(f"{code}: {count}" for code, count in sorted(counts.items()))
        typer.echo(f"  region {region}: {shown}")
    for day, counts in summary["by_day"].items():
        shown = ", ".join(f"{code}: {count}" for code, count in sorted(counts.items()))
        typer.echo(f"  {day}: {shown}")
    for reply in summary["unparsed"][:20]:
        typer.echo(f"  unparsed {reply['phone']}: {reply['text'][:80]}")
