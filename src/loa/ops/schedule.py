"""Scheduled backups: a thread of `loa server` that makes one every `backup.every` seconds."""

from __future__ import annotations

import logging
import threading
import time

from loa.engine.backup_status import read_status
from loa.errors import LoaError
from loa.ops.backup import backup_dir, create_backup, prune
from loa.settings import Settings

log = logging.getLogger(__name__)

FIRST_DELAY = 60.0  # seconds after start before a first backup: let the server settle
RETRY_AFTER = 600.0  # seconds before another attempt after a failure (or sooner, if every is)
STOP_WAIT = 30.0  # seconds a stopping server waits for a backup under way


class BackupScheduler:
    """Makes a backup when the last good one is `interval` old; keeps `backup.keep` of them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interval = settings.backup.interval(embedded=settings.redis_url is None)
        self.first_delay = min(FIRST_DELAY, self.interval)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (nothing when no backups are scheduled)."""
        if self.interval <= 0:
            return
        self.thread = threading.Thread(target=self._run, name="backups", daemon=True)
        self.thread.start()
        log.info(
            "scheduled backups",
            extra={"every": self.interval, "dir": str(backup_dir(self.settings))},
        )

    def stop(self) -> None:
        """Stop scheduling; wait a while for a backup under way (its archive is unfinished
        otherwise, and removed by a later run)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(STOP_WAIT)

    def due_in(self, now: float | None = None) -> float:
        """Seconds until the next backup is due."""
        status = read_status(self.settings.data_dir)
        now = time.time() if now is None else now
        if status.failures:
            retry = min(self.interval, RETRY_AFTER)
            return max(0.0, status.last_failure + retry - now)
        if not status.last_success:
            return 0.0
        return max(0.0, status.last_success + self.interval - now)

    def _run(self) -> None:
        if self.stopping.wait(self.first_delay):
            return
        while not self.stopping.wait(self.due_in()):
            self.run_once()

    def run_once(self) -> bool:
        """Make one backup and prune the old ones; False (logged) when it failed."""
        try:
            made = create_backup(self.settings)
        except LoaError as exc:
            log.error("scheduled backup failed", extra={"error": str(exc)})
            return False
        removed = prune(made.path.parent, self.settings.backup.keep)
        contents = made.manifest.contents
        log.info(
            "scheduled backup made",
            extra={
                "archive": made.path.name,
                "bytes": made.path.stat().st_size,
                "seconds": round(made.seconds, 3),
                "in_flight": contents.in_flight if contents else None,
                "removed": len(removed),
            },
        )
        return True
