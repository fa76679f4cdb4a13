"""The record of the last backups on this machine, and the metrics read from it on each scrape.

It lives in the data directory as a small JSON file, not in Redis: a restored snapshot would
otherwise bring back an old record and make a stale backup look fresh.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

STATUS_FILE = "backup-status.json"


@dataclass(slots=True)
class BackupStatus:
    """When the last good backup was made, where to, and how the attempts since went."""

    last_success: float = 0.0  # Unix time; 0: never
    last_archive: str = ""
    last_size: int = 0
    last_seconds: float = 0.0
    last_failure: float = 0.0
    last_error: str = ""
    failures: int = 0  # attempts that failed since the last good one

    def age(self, now: float | None = None) -> float:
        """Seconds since the last good backup; infinity when there was none."""
        if not self.last_success:
            return math.inf
        return max(0.0, (time.time() if now is None else now) - self.last_success)


def read_status(data_dir: Path) -> BackupStatus:
    """The recorded status (an empty one when nothing was recorded or the file is unreadable)."""
    try:
        data = orjson.loads((data_dir / STATUS_FILE).read_bytes())
        return BackupStatus(**{k: v for k, v in data.items() if k in BackupStatus.__slots__})
    except (OSError, orjson.JSONDecodeError, TypeError, AttributeError):
        return BackupStatus()


def write_status(data_dir: Path, status: BackupStatus) -> None:
    """Replace the recorded status in one step (a scrape never reads half a file)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    part = data_dir / f".{STATUS_FILE}.{os.getpid()}"
    part.write_bytes(orjson.dumps(asdict(status)))
    os.replace(part, data_dir / STATUS_FILE)


def record_success(data_dir: Path, archive: Path, size: int, seconds: float) -> None:
    """Note a good backup."""
    status = read_status(data_dir)
    status.last_success, status.last_archive = time.time(), str(archive)
    status.last_size, status.last_seconds, status.failures = size, seconds, 0
    write_status(data_dir, status)


def record_failure(data_dir: Path, error: str) -> None:
    """Note a failed attempt."""
    status = read_status(data_dir)
    status.last_failure, status.last_error = time.time(), error[:500]
    status.failures += 1
    with contextlib.suppress(OSError):  # the disk may be why it failed
        write_status(data_dir, status)


class BackupCollector(Collector):
    """Exports the age of the last good backup (and the configured interval, to alert on)."""

    def __init__(self, data_dir: Path, interval: float) -> None:
        self.data_dir = data_dir
        self.interval = interval

    def collect(self) -> Iterator[Metric]:
        status = read_status(self.data_dir)
        yield _gauge(
            "loa_backup_age_seconds",
            "Seconds since the last good backup on this machine (+Inf: none yet).",
            status.age(),
        )
        yield _gauge(
            "loa_backup_last_success_timestamp_seconds",
            "Unix time of the last good backup (0: none yet).",
            status.last_success,
        )
        yield _gauge(
            "loa_backup_last_size_bytes", "Size of the last good backup archive.", status.last_size
        )
        yield _gauge(
            "loa_backup_failures",
            "Backup attempts that failed since the last good one.",
            status.failures,
        )
        yield _gauge(
            "loa_backup_interval_seconds",
            "Seconds between scheduled backups (backup.every; 0: none scheduled here).",
            self.interval,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family
