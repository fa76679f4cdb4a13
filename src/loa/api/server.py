"""Running the API: alone (`loa api`) or with the workers and Redis in one tree (`loa server`)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType

import uvicorn
from fastapi import FastAPI

from loa.api.app import create_app
from loa.api.deadline import header_deadline
from loa.campaigns.controls import campaign_controls
from loa.engine.backup_status import BackupCollector
from loa.engine.connection import connect
from loa.engine.embedded import redis_url_for
from loa.engine.supervisor import Supervisor
from loa.ops.schedule import BackupScheduler
from loa.privacy.retention import chores
from loa.settings import Settings

log = logging.getLogger(__name__)


def serve_api(settings: Settings, host: str, port: int) -> None:
    """Serve the API until SIGTERM or SIGINT; the embedded Redis when no URL is configured."""
    _keep_running_after_signals(lambda: None)
    with redis_url_for(settings.redis_url, settings.data_dir) as (url, _):
        served = settings.model_copy(update={"redis_url": url})  # as partition processes need it
        _uvicorn(create_app(served, lambda: connect(url)), settings, host, port).run()


def run_server(
    settings: Settings,
    host: str,
    port: int,
    processes: int | None = None,
    routes: Sequence[str] | None = None,
) -> int:
    """The API, the worker processes and (with no URL) the embedded Redis, until SIGTERM.

    Returns the exit code: 1 when a worker had to be killed rather than drained.
    """
    supervisor = Supervisor(
        settings, processes, routes, chores(settings), controls=campaign_controls
    )
    backups = BackupScheduler(settings)
    supervisor.collectors.append(BackupCollector(settings.data_dir, backups.interval))
    _keep_running_after_signals(supervisor.request_stop)
    supervisor.start()
    backups.start()
    watcher: threading.Thread | None = None
    try:
        served = settings.model_copy(update={"redis_url": supervisor.redis_url})
        app = create_app(served, lambda: connect(supervisor.redis_url))
        server = _uvicorn(app, settings, host, port)
        watcher = threading.Thread(
            target=_watch, args=(supervisor, server), name="supervisor", daemon=True
        )
        watcher.start()
        server.run()  # returns on SIGTERM/SIGINT, or when the supervisor was asked to stop
    finally:
        supervisor.request_stop()
        if watcher is not None:
            watcher.join()  # no respawn may race the drain
        backups.stop()  # before the embedded server it snapshots goes away
        killed = supervisor.stop()
    return 1 if killed else 0


def _watch(supervisor: Supervisor, server: uvicorn.Server) -> None:
    supervisor.run_until_stopped()
    server.should_exit = True


def _keep_running_after_signals(then: Callable[[], None]) -> None:
    """Handlers uvicorn hands SIGTERM and SIGINT back to once it has stopped serving.

    uvicorn re-raises the signal that stopped it; with the default handlers the process would
    die there, before the workers drain and the embedded Redis writes its append-only file.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        then()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _uvicorn(app: FastAPI, settings: Settings, host: str, port: int) -> uvicorn.Server:
    _share_logging()
    proxies = settings.api.trusted_proxies
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=header_deadline(settings.api.header_timeout),
        log_config=None,  # loa's JSON logs, set up by the CLI
        # X-Forwarded-For only from proxies named in the settings: else anyone could write
        # any address into the audit log
        proxy_headers=bool(proxies),
        forwarded_allow_ips=",".join(proxies) or "",
        server_header=False,
        lifespan="on",
    )
    log.info("serving the control API", extra={"host": host, "port": port})
    return uvicorn.Server(config)


def _share_logging() -> None:
    """uvicorn's logs go out as loa's JSON lines, without its terminal colours."""
    loa = logging.getLogger("loa")
    server = logging.getLogger("uvicorn")
    server.handlers[:] = loa.handlers
    server.setLevel(loa.level)
    server.propagate = False
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(_drop_colours)


def _drop_colours(record: logging.LogRecord) -> bool:
    record.__dict__.pop("color_message", None)
    return True
