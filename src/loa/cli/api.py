"""`loa api`, `loa api token ...`, `loa server` and `loa audit`."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from loa.cli.common import (
    ConfigOption,
    DataDirOption,
    RedisOption,
    load_settings,
    print_json,
    with_redis,
)
from loa.engine.connection import RedisClient
from loa.errors import LoaError

T = TypeVar("T")

api_app = typer.Typer(
    help="The HTTP control API: serve it, or make its first tokens.", invoke_without_command=True
)
token_app = typer.Typer(help="API tokens, straight in Redis (for the first admin).")
api_app.add_typer(token_app, name="token", no_args_is_help=True)

HostOption = Annotated[str | None, typer.Option("--host", help="Default: api.host, 127.0.0.1.")]
PortOption = Annotated[int | None, typer.Option("--port", help="Default: api.port, 8080.")]


class RoleName(enum.StrEnum):
    """Roles as the command line takes them."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


@api_app.callback()
def api(
    ctx: typer.Context,
    host: HostOption = None,
    port: PortOption = None,
    config: ConfigOption = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    print_openapi: Annotated[
        bool, typer.Option("--print-openapi", help="Print the OpenAPI spec and exit.")
    ] = False,
) -> None:
    """Serve the control API (the embedded Redis when no URL is configured)."""
    if ctx.invoked_subcommand is not None:
        return
    if print_openapi:
        from loa.api.app import openapi_json

        typer.echo(openapi_json(), nl=False)
        return
    from loa.api.server import serve_api

    settings = load_settings(config, redis, data_dir)
    serve_api(settings, host or settings.api.host, port or settings.api.port)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="The token's name (unique).")],
    role: Annotated[RoleName, typer.Option("--role")] = RoleName.ADMIN,
    person: Annotated[
        str | None, typer.Option("--person", help="Whose token it is (default: the name).")
    ] = None,
    days: Annotated[
        float | None, typer.Option("--days", min=0.001, help="It expires after this many days.")
    ] = None,
    config: ConfigOption = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Make a token and print it: it is shown this once, only its hash is kept.

    The token is minted by the OS user running this command (from the process's uid), who is
    recorded in its lineage: that user can never approve a campaign created with it.
    """
    from loa.access.audit import AuditLog, audited
    from loa.access.identity import Role, local_principal
    from loa.access.tokens import Tokens, minting

    settings = load_settings(config, redis, data_dir)
    minter = local_principal()
    owner = person or name

    async def work(client: RedisClient) -> str:
        log = AuditLog.of(client, settings)
        async with audited(log, minter, "token.create") as note:
            note.detail = minting(name, owner, role.value)
            tokens = Tokens(client, settings.namespace, settings.api.token_max_days)
            token, _ = await tokens.create(name, Role.parse(role), minter, owner, days)
        return token

    token = with_redis(settings, work)
    typer.echo(token)
    typer.echo(f"token {name!r} ({role}) made; it will not be shown again", err=True)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    config: ConfigOption = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Revoke a token for good (when an admin token leaked, say)."""
    from loa.access.audit import AuditLog, audited
    from loa.access.identity import local_principal
    from loa.access.tokens import Tokens

    settings = load_settings(config, redis, data_dir)

    async def work(client: RedisClient) -> None:
        log = AuditLog.of(client, settings)
        async with audited(log, local_principal(), "token.revoke") as note:
            note.detail = name
            await Tokens(client, settings.namespace).revoke(name)

    with_redis(settings, work)
    typer.echo(f"token {name!r} revoked")


def server(
    host: HostOption = None,
    port: PortOption = None,
    config: ConfigOption = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    processes: Annotated[
        int | None, typer.Option("--processes", "-p", help="Worker processes (default: cores).")
    ] = None,
) -> None:
    """The API, the workers and (with no Redis URL) the embedded Redis, until SIGTERM."""
    from loa.api.server import run_server

    settings = load_settings(config, redis, data_dir)
    if not settings.routes:
        raise LoaError("no routes configured: add [routes.NAME] tables to the settings file")
    code = run_server(settings, host or settings.api.host, port or settings.api.port, processes)
    raise typer.Exit(code)


def audit(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100_000)] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Also the token, role, address and detail.")
    ] = False,
    config: ConfigOption = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """The audit log, newest first: who did what, to which campaign, from where."""
    from dataclasses import asdict

    from loa.access.audit import AuditLog

    settings = load_settings(config, redis, data_dir)
    entries = with_redis(settings, lambda c: AuditLog.of(c, settings).read(limit))
    if json_output:
        rows = [asdict(entry) for entry in entries]
        print_json(rows)
        return
    _print_audit(entries, wide)


AUDIT_COLUMNS = ("at (UTC)", "who", "action", "campaign", "outcome")
AUDIT_WIDE = ("at (UTC)", "who", "token", "role", "action", "campaign", "from", "outcome", "detail")


def _print_audit(entries: list[Any], wide: bool) -> None:
    from loa.cli.tables import show

    headers = AUDIT_WIDE if wide else AUDIT_COLUMNS
    rows = []
    for entry in entries:
        at = datetime.fromtimestamp(entry.at / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        cells = {
            "at (UTC)": at,
            "who": entry.who,
            "token": entry.token,
            "role": entry.role,
            "action": entry.action,
            "campaign": entry.campaign,
            "from": entry.ip,
            "outcome": entry.outcome,
            "detail": entry.detail,
        }
        rows.append([cells[header] for header in headers])
    show("audit log, newest first", headers, rows, text={"detail"})


def register(app: typer.Typer) -> None:
    """Add `loa api`, `loa server` and `loa audit` to the `loa` command."""
    app.add_typer(api_app, name="api")
    app.command("server")(server)
    app.command("audit")(audit)
