"""The `loa` command."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
import uvloop
from redis.exceptions import RedisError

from loa import __version__
from loa.cli.common import ConfigOption, DataDirOption, RedisOption, load_settings
from loa.errors import LoaError
from loa.log import hide_userinfo, setup_logging

app = typer.Typer(
    name="loa",
    help="loa: mass notifications through sharded queues, async workers and delivery adapters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"loa {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ] = False,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="debug, info, warning ($LOA_LOG_LEVEL)")
    ] = None,
) -> None:
    if log_level:
        os.environ["LOA_LOG_LEVEL"] = log_level  # worker processes read it too
    setup_logging()


@app.command()
def worker(
    config: ConfigOption = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    processes: Annotated[
        int | None, typer.Option("--processes", "-p", help="Worker processes (default: cores).")
    ] = None,
    routes: Annotated[
        str | None, typer.Option("--routes", help="Comma-separated routes (default: all).")
    ] = None,
) -> None:
    """Run worker processes until SIGTERM or SIGINT, then drain and exit."""
    from loa.engine import supervisor
    from loa.privacy.retention import chores

    settings = load_settings(config, redis, data_dir)
    names = [r.strip() for r in routes.split(",") if r.strip()] if routes else None
    if not settings.routes:
        raise LoaError("no routes configured: add [routes.NAME] tables to the settings file")
    raise typer.Exit(supervisor.run(settings, processes, names, chores(settings)))


@app.command()
def demo(
    people: Annotated[
        int, typer.Option("--people", "-n", min=100, help="People in the synthetic audience.")
    ] = 200_000,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            min=1,
            help="Seconds the route rates and carrier TPS caps are scaled to send it all in "
            "(if the machine keeps up). Default: 30 at 200,000 people, in proportion, at least 10.",
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option("--processes", "-p", min=1, help="Worker processes (default: cores)."),
    ] = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the audience and the simulators.")
    ] = 2026,
    drive: Annotated[
        int,
        typer.Option(
            "--drive",
            min=0,
            max=50_000,
            help="Registrants of the second act's vaccination drive (0: no second act).",
        ),
    ] = 300,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print the summary as JSON (exit 0 only if it reconciles)."),
    ] = False,
) -> None:
    """A nationwide advisory over simulated carriers, an emergency alert overtaking it, a STOP
    reply, receipts; then a vaccination drive: appointments, cancellations re-allocated,
    check-ins answered, hotline cases; a summary reconciled with what the simulators did."""
    from loa.demo import DemoOptions, run_demo

    settings = load_settings(None, redis, data_dir)
    options = DemoOptions(people, duration, processes, json_output, seed, drive)
    raise typer.Exit(run_demo(settings, options))


@app.command()
def status(
    config: ConfigOption = None,
    redis: RedisOption = None,
    data_dir: DataDirOption = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Every counter, not the main ones.")] = False,
) -> None:
    """Show each route's backlog and counters."""
    from loa.cli.status import print_status

    settings = load_settings(config, redis, data_dir)
    uvloop.run(print_status(settings, json_output, wide))


@app.command("redis")
def redis_server(data_dir: DataDirOption = None) -> None:
    """Run the embedded Redis server in the foreground and print its URL (not its password)."""
    import signal
    import threading

    from loa.engine.embedded import PASSWORD_NAME, EmbeddedRedis

    settings = load_settings(None, None, data_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with EmbeddedRedis(settings.data_dir / "redis") as server:
        password = server.data_dir / PASSWORD_NAME
        typer.echo(f"{hide_userinfo(server.url)} (the password is in {password})")
        while not stop.wait(0.5):
            server.check()


def _add_campaign_commands() -> None:
    from loa.cli.api import register as register_api_commands
    from loa.cli.campaign import app as campaign_app
    from loa.cli.campaign import inbound_app, suppression_app

    app.add_typer(campaign_app, name="campaign")
    app.add_typer(suppression_app, name="suppression")
    app.add_typer(inbound_app, name="inbound")

    from loa.cli.cap import app as cap_app

    app.add_typer(cap_app, name="cap")
    from loa.cli.appointments import app as appointments_app

    app.add_typer(appointments_app, name="appointments")

    from loa.cli.inbox import app as inbox_app

    app.add_typer(inbox_app, name="inbox")

    from loa.cli.followups import answers as followup_answers
    from loa.cli.followups import app as followups_app

    app.add_typer(followups_app, name="followups")
    campaign_app.command("answers")(followup_answers)

    from loa.sim.cli import app as sim_app

    app.add_typer(sim_app, name="sim")
    register_api_commands(app)  # loa api, loa server, loa audit

    from loa.cli.ops import register as register_ops_commands

    register_ops_commands(app)  # loa backup, loa restore

    from loa.cli.privacy import register as register_privacy_commands

    register_privacy_commands(app)  # loa purge


_add_campaign_commands()


def main() -> None:
    """Console entry point: loa's own errors print as one clear line and exit 2."""
    try:
        app()
    except LoaError as exc:
        typer.secho(f"loa: {hide_userinfo(str(exc))}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except RedisError as exc:  # unreachable, a wrong password, a server that says no
        said = hide_userinfo(str(exc)) or type(exc).__name__
        typer.secho(
            f"loa: the Redis server cannot be used: {said} (see redis_url or LOA_REDIS_URL)",
            err=True,
            fg=typer.colors.RED,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
