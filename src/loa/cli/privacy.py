"""`loa purge`: erase one number (a data subject's request) or one campaign's personal data."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer

from loa.access.audit import Note
from loa.access.identity import Principal, Role
from loa.campaigns.service import Campaigns
from loa.cli.campaign import ConfigOption, JsonOption, RedisOption, TokenOption, _audited
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

    async def work(c: Campaigns, who: Principal, note: Note) -> dict[str, Any]:
        eraser = Purge(c.settings, c.redis)
        done = await (eraser.number(number) if number else eraser.campaign(campaign or ""))
        found = done.to_json()
        # counts only: the audit log never holds the number
        note.detail = ", ".join(f"{k} {v}" for k, v in found.items() if v)
        found["aof"] = await rewrite_aof(c.redis)
        return found

    action = "privacy.purge_number" if number else "privacy.purge_campaign"
    found = _audited(config, redis, token, action, campaign or "", work, role=Role.ADMIN)
    if json_output:
        typer.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    typer.echo(", ".join(f"{k}: {v}" for k, v in found.items()))
