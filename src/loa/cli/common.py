"""What every `loa` command shares: its options, settings, a Redis client, the caller, the audit.

A command that changes something runs through `audited`: it acts as the caller (the OS user of
the process's uid, or the person of `--token`), checks the caller's role, and is recorded in the
audit log with `ok` or the code it was refused with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
import uvloop

from loa.access.audit import AuditLog, Note
from loa.access.audit import audited as audit_entry
from loa.access.identity import Principal, Role, local_principal
from loa.access.tokens import Tokens
from loa.engine.connection import RedisClient, connect
from loa.engine.embedded import redis_url_for
from loa.errors import AuthError
from loa.settings import Settings

T = TypeVar("T")
S = TypeVar("S")  # a service of loa built on settings and a client: Campaigns, Inbox, ...

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Settings file (TOML). Default: $LOA_CONFIG."),
]
RedisOption = Annotated[
    str | None,
    typer.Option("--redis", help="Redis URL. Default: $LOA_REDIS_URL, else the embedded server."),
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory. Default: $LOA_DATA_DIR.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="LOA_TOKEN",
        help="Act as this API token's person (default: the OS user running the command).",
    ),
]
Work = Callable[[RedisClient, Principal, Note], Awaitable[T]]


def load_settings(
    config: Path | None, redis: str | None = None, data_dir: Path | None = None, **extra: Any
) -> Settings:
    """Settings from the file and environment, with command-line options on top."""
    overrides: dict[str, Any] = dict(extra)
    if redis:
        overrides["redis_url"] = redis
    if data_dir:
        overrides["data_dir"] = str(data_dir)
    return Settings.load(config, overrides=overrides)


def with_redis(settings: Settings, work: Callable[[RedisClient], Awaitable[T]]) -> T:
    """Run `work` with a client on the settings' Redis (the embedded server when none is set)."""

    async def main() -> T:
        with redis_url_for(settings.redis_url, settings.data_dir) as (url, _):
            client = connect(url)
            try:
                return await work(client)
            finally:
                await client.aclose()

    return uvloop.run(main())


async def caller(redis: RedisClient, settings: Settings, token: str | None) -> Principal:
    """Who runs this command: the token's person when one is given, else the OS user."""
    if token is None:
        return local_principal()
    return await Tokens(redis, settings.namespace, settings.api.token_max_days).principal(token)


def require(who: Principal, role: Role) -> None:
    """Refuse (403) a caller whose role is below `role`."""
    if who.role < role:
        raise AuthError(
            f"this needs the {role.label} role; the token has {who.role.label}",
            code="forbidden",
            status=403,
        )


def as_caller(settings: Settings, token: str | None, role: Role, work: Work[T]) -> T:
    """Run a read as the caller, with at least `role` (reads are not audited)."""

    async def run(redis: RedisClient) -> T:
        who = await caller(redis, settings, token)
        require(who, role)
        return await work(redis, who, Note())

    return with_redis(settings, run)


def audited(
    settings: Settings,
    token: str | None,
    action: str,
    campaign: str,
    work: Work[T],
    role: Role = Role.OPERATOR,
) -> T:
    """Run a change as the caller, with at least `role`, recorded in the audit log.

    A refused change is recorded too, with the code it was refused with.
    """

    async def run(redis: RedisClient) -> T:
        who = await caller(redis, settings, token)
        async with audit_entry(AuditLog.of(redis, settings), who, action, campaign) as note:
            require(who, role)
            return await work(redis, who, note)

    return with_redis(settings, run)


def run_on(
    config: Path | None,
    redis: str | None,
    service: Callable[[Settings, RedisClient], S],
    work: Callable[[S], Awaitable[T]],
) -> T:
    """Run `work` with a `service` (Campaigns, Inbox, ...) made on the settings' Redis."""
    settings = load_settings(config, redis)
    return with_redis(settings, lambda client: work(service(settings, client)))


def audited_on(
    config: Path | None,
    redis: str | None,
    token: str | None,
    action: str,
    campaign: str,
    service: Callable[[Settings, RedisClient], S],
    work: Callable[[S, Principal, Note], Awaitable[T]],
    role: Role = Role.OPERATOR,
) -> T:
    """`audited`, for a change made through a `service` (Campaigns, Appointments, ...)."""
    settings = load_settings(config, redis)

    def run(client: RedisClient, who: Principal, note: Note) -> Awaitable[T]:
        return work(service(settings, client), who, note)

    return audited(settings, token, action, campaign, run, role)


def print_json(data: Any) -> None:
    """Indented JSON on stdout."""
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
