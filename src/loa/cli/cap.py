"""`loa cap validate|submit FILE.xml`: CAP 1.2 alerts from the command line."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer

from loa.access.audit import AuditLog, Note
from loa.access.identity import Principal
from loa.cap.parse import MAX_BYTES
from loa.cap.service import CapIntake, Submitted, check_alert
from loa.cli.common import (
    ConfigOption,
    JsonOption,
    RedisOption,
    TokenOption,
    audited,
    load_settings,
    print_json,
)
from loa.engine.connection import RedisClient
from loa.errors import CapError

app = typer.Typer(
    help="CAP 1.2 alerts: check one, or submit it (an Alert or Update becomes a draft campaign "
    "a second person approves; a Cancel stops what it references).",
    no_args_is_help=True,
)

FileArgument = Annotated[Path, typer.Argument(help="The CAP 1.2 alert (XML).")]
Work = Callable[[CapIntake, Principal, Note], Awaitable[Submitted]]


def read_alert(path: Path) -> bytes:
    """The file's bytes; a file over the limit is refused after reading just past the limit."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise CapError(
            [f"cannot read the alert: {exc.strerror or exc}"], code="unreadable"
        ) from None
    if len(data) > MAX_BYTES:
        raise CapError(
            [f"alert: the file is larger than {MAX_BYTES:,} bytes, the most an alert may have"],
            code="too_large",
        )
    return data


def _refused(path: Path, error: CapError, json_output: bool) -> typer.Exit:
    """Print every problem, one line each (as JSON with --json); the exit to raise."""
    if json_output:
        print_json({"valid": False, "code": error.code, "problems": error.problems})
    for problem in error.problems:
        typer.secho(f"{path}: {problem}", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


@app.command()
def validate(
    file: FileArgument, config: ConfigOption = None, json_output: JsonOption = False
) -> None:
    """Check an alert against CAP 1.2 and say how loa would send it (exit 1 with the reasons
    when it is not valid). Needs no Redis: nothing is stored."""
    settings = load_settings(config)
    try:
        mapped = check_alert(read_alert(file), settings)
    except CapError as exc:
        raise _refused(file, exc, json_output) from None
    summary = mapped.summary()
    if json_output:
        print_json({"valid": True, **summary})
        return
    typer.echo(f"{file}: a valid CAP 1.2 {summary['msgType']} ({summary['status']})")
    if not mapped.sends:
        typer.echo(
            "  nothing to send: loa records it"
            if summary["msgType"] != "Cancel"
            else "  cancels: " + " ".join(summary["references"])
        )
        return
    provinces = ", ".join(
        f"{code} {name}"
        for code, name in zip(summary["provinces"], summary["province_names"], strict=True)
    )
    typer.echo(f"  lane: {summary['lane']}")
    typer.echo(
        f"  languages: {', '.join(summary['languages'])} (default {summary['default_language']})"
    )
    typer.echo(f"  provinces: {provinces}")
    typer.echo(f"  expires: {summary['expires']}")


@app.command()
def submit(
    file: FileArgument,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Submit an alert: an Alert or Update becomes a draft campaign (approve it with
    `loa campaign approve`, as a second person), a Cancel stops the campaigns it references."""
    try:
        data = read_alert(file)

        async def work(intake: CapIntake, who: Principal, note: Note) -> Submitted:
            result = await intake.submit(data, who)
            note.campaign = result.campaign or " ".join(result.cancelled)
            note.detail = result.line()
            return result

        result = _audited(config, redis, token, "cap.submit", work)
    except CapError as exc:
        raise _refused(file, exc, json_output) from None
    if json_output:
        print_json(result.to_json())
    else:
        typer.echo(result.line())


def _audited(
    config: Path | None, redis: str | None, token: str | None, action: str, work: Work
) -> Submitted:
    """Run `work` as the caller (the OS user, or `--token`'s person), recorded in the audit log."""
    settings = load_settings(config, redis)

    def run(client: RedisClient, who: Principal, note: Note) -> Awaitable[Submitted]:
        return work(CapIntake(settings, client, AuditLog.of(client, settings)), who, note)

    return audited(settings, token, action, "", run)

