"""`loa purge`: erase one number (a data subject's request) or one campaign's personal data."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from loa.access.audit import Note
from loa.access.identity import Principal, Role
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
from loa.privacy.purge import Purge, rewrite_aof


def register(app: typer.Typer) -> None:
    """Add `loa purge` to the main command."""
    app.command("purge")(purge)


def purge(
    campaign: Annotated[
        str | None, typer.Option("--campaign", help="Erase what this ended campaign kept.")
    ] = None,
    number: Annotated[
        str | None, typer.Option("--number", help="Erase every trace of this phone number.")
    ] = None,
    config: ConfigOption = None,
    redis: RedisOption = None,
    token: TokenOption = None,
    json_output: JsonOption = False,
) -> None:
    """Erase personal data now, audited (admin role), then rewrite the append-only file."""
    if (campaign is None) == (number is None):
        raise typer.BadParameter("give exactly one of --campaign ID or --number N")

    settings = load_settings(config, redis)

    async def work(client: RedisClient, who: Principal, note: Note) -> dict[str, Any]:
        eraser = Purge(settings, client)
        done = await (eraser.number(number) if number else eraser.campaign(campaign or ""))
        found = done.to_json()
        # counts only: the audit log never holds the number
        note.detail = ", ".join(f"{k} {v}" for k, v in found.items() if v)
        found["aof"] = await rewrite_aof(client)
        return found

    action = "privacy.purge_number" if number else "privacy.purge_campaign"
    found = audited(settings, token, action, campaign or "", work, role=Role.ADMIN)
    if json_output:
        print_json(found)
        return
    typer.echo(", ".join(f"{k}: {v}" for k, v in found.items()))
