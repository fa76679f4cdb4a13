"""`loa backup`: loa's state, consistent and online, in one archive with its manifest.

The Redis data comes as snapshots (see `snapshot`), each loaded once in a scratch server to be
sure it reads back and to count what it holds; then the data directory's campaign copies and
uploads are added, and the manifest last. Workers and the API keep running throughout.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis

from loa import __version__
from loa.engine.backup_status import record_failure, record_success
from loa.engine.embedded import redis_url_for
from loa.errors import BackupError, LoaError
from loa.ops.archive import ArchiveWriter, Manifest
from loa.ops.contents import Contents, count
from loa.ops.scratch import ScratchServer
from loa.ops.snapshot import RdbFile, fetch_rdb, primaries, save_embedded
from loa.settings import Settings

PREFIX = "loa-backup-"
SUFFIXES = (".tar", ".tar.gz", ".tgz")
DATA_PARTS = ("campaigns", "uploads")  # what of the data directory is state
STALE_PART = 86_400.0  # seconds after which an unfinished archive is someone's crash


@dataclass(frozen=True, slots=True)
class Backup:
    """A finished backup: the archive, its manifest and how long it took."""

    path: Path
    manifest: Manifest
    seconds: float


def backup_dir(settings: Settings) -> Path:
    """Where archives go by default: backup.dir, else the data directory's backups/."""
    return settings.backup.dir or settings.data_dir / "backups"


def destination(to: Path | None, settings: Settings, now: datetime) -> Path:
    """The archive to write: `to` itself when it names a .tar file, else a new name in a dir."""
    target = to if to is not None else backup_dir(settings)
    if target.name.endswith(SUFFIXES) and not target.is_dir():
        if target.exists():
            raise BackupError(f"{target} exists; name a new file or a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        return target
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    # underscores: a run of seven digits would be masked as a phone number in the logs
    stamp = now.strftime("%Y_%m_%d-%H_%M_%S_") + f"{now.microsecond // 1000:03d}"
    return target / f"{PREFIX}{stamp}.tar"


def create_backup(settings: Settings, to: Path | None = None, source: str | None = None) -> Backup:
    """Snapshot loa's Redis data (`source`, else the configured one) and data files into one
    archive; returns it. Records the outcome in the data directory for the metrics."""
    started = time.monotonic()
    try:
        made = _create(settings, to, source or settings.redis_url)
    except LoaError as exc:
        record_failure(settings.data_dir, str(exc))
        raise
    except OSError as exc:
        record_failure(settings.data_dir, str(exc))
        raise BackupError(f"backup failed: {exc.strerror or exc}") from None
    except redis.RedisError as exc:
        record_failure(settings.data_dir, str(exc))
        raise BackupError(f"backup failed: the server answered {exc}") from None
    seconds = time.monotonic() - started
    record_success(settings.data_dir, made[0], made[0].stat().st_size, seconds)
    return Backup(made[0], made[1], seconds)


def _create(settings: Settings, to: Path | None, url: str | None) -> tuple[Path, Manifest]:
    now = datetime.now(UTC)
    path = destination(to, settings, now)
    staging = Path(tempfile.mkdtemp(prefix=".loa-backup-", dir=path.parent))
    try:
        snapshots = _snapshots(settings, url, staging)
        contents = _contents(snapshots, settings.namespace) if settings.backup.verify else None
        manifest = Manifest(
            loa_version=__version__,
            created=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            created_ms=int(now.timestamp() * 1000),
            namespace=settings.namespace,
            data_dir=str(settings.data_dir.resolve()),
            source="embedded" if url is None else "cluster" if len(snapshots) > 1 else "redis",
            nodes=[snapshot.source for snapshot in snapshots],
            snapshots=[f"redis/{snapshot.path.name}" for snapshot in snapshots],
            contents=contents,
        )
        writer = ArchiveWriter(path)
        try:
            for snapshot in snapshots:
                writer.add(snapshot.path, f"redis/{snapshot.path.name}")
            for source, name in data_files(settings.data_dir):
                writer.add(source, name)
            manifest.files = writer.entries
            writer.finish(manifest)
        except BaseException:
            writer.abort()
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path, manifest


def _snapshots(settings: Settings, url: str | None, staging: Path) -> list[RdbFile]:
    if url is None:
        if not (settings.data_dir / "redis").is_dir():  # a wrong --data-dir, not an empty loa
            raise BackupError(
                f"no embedded server data in {settings.data_dir}: name loa's data directory "
                "(--data-dir or data_dir), or the Redis to back up (--from or redis_url)"
            )
        with redis_url_for(None, settings.data_dir) as (live, _):
            return [save_embedded(live, settings.data_dir / "redis", staging / "dump.rdb")]
    return [
        fetch_rdb(node, staging / f"node-{index}.rdb") for index, node in enumerate(primaries(url))
    ]


def _contents(snapshots: list[RdbFile], namespace: str) -> Contents:
    """Load each snapshot in a scratch server: it must read back; count what it holds."""
    total = Contents()
    for snapshot in snapshots:
        with ScratchServer(snapshot.path.parent, snapshot.path.name) as client:
            total.add(count(client, namespace))
            client.close()
    return total


def data_files(data_dir: Path) -> Iterator[tuple[Path, str]]:
    """The regular files of the data directory that are loa's state, with their member names."""
    for part in DATA_PARTS:
        root = data_dir / part
        if not root.is_dir():
            continue
        for directory, subdirs, files in os.walk(root):
            subdirs.sort()
            for name in sorted(files):
                path = Path(directory) / name
                if path.is_file() and not path.is_symlink():
                    yield path, "data/" + path.relative_to(data_dir).as_posix()


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` archives in `directory` (and stale unfinished ones)."""
    archives = sorted(path for path in directory.glob(f"{PREFIX}*") if path.name.endswith(SUFFIXES))
    removed = archives[: max(0, len(archives) - keep)]
    now = time.time()
    for part in directory.glob(f"{PREFIX}*.part"):
        if now - part.stat().st_mtime > STALE_PART:
            removed.append(part)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
