"""`loa restore`: an archive checked against its manifest, then put back where loa finds it.

Into the embedded server's data directory (the default): a single snapshot is loaded by a
scratch server there and written out as the append-only file the embedded server starts from;
a cluster's snapshots are copied key by key into one. Into a configured Redis or Cluster: the
namespace's keys are copied from each snapshot. Either way the data files go back into the data
directory with their modes and times, and pinned audience paths follow the data directory.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loa.engine.connection import connect_sync, text
from loa.engine.embedded import answers
from loa.engine.keys import campaign_key, campaigns_key
from loa.errors import BackupError
from loa.ops.archive import Manifest, place, read_archive
from loa.ops.scratch import ScratchServer, copy_keys, keys_of, write_append_only
from loa.settings import Settings

log = logging.getLogger(__name__)

REPLACED = ("redis", "campaigns", "uploads")  # what --force replaces in a data directory


@dataclass(frozen=True, slots=True)
class Restored:
    """What a restore put back."""

    manifest: Manifest
    data_dir: Path
    keys: int  # keys now in the target (the namespace's, for a configured Redis)
    files: int
    moved_paths: int  # pinned audience paths rewritten for the new data directory


def check_archive(archive: Path) -> Manifest:
    """Read the whole archive and check it against its manifest; nothing is written."""
    return read_archive(archive, None)


def restore(archive: Path, settings: Settings, *, force: bool = False) -> Restored:
    """Restore `archive` into the settings' data directory and Redis (embedded if none)."""
    data_dir = settings.data_dir.expanduser().resolve()
    target_url = settings.redis_url
    if target_url is None:
        _make_room(data_dir, force)
    else:
        _make_room_in(target_url, settings.namespace, force)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".restoring-", dir=data_dir))
    try:
        manifest = read_archive(archive, staging)
        if manifest.namespace != settings.namespace:
            raise BackupError(
                f"the archive holds namespace {manifest.namespace!r}, the settings say "
                f"{settings.namespace!r}: set namespace = {manifest.namespace!r} to restore it"
            )
        try:
            files = place(staging, manifest, data_dir)
            with _target(target_url, data_dir, manifest, staging) as (client, keys):
                moved = move_pinned_paths(client, manifest, data_dir)
        except BaseException:
            if target_url is None:  # leave the directory as empty as it was found
                for name in REPLACED:
                    shutil.rmtree(data_dir / name, ignore_errors=True)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("restored", extra={"archive": str(archive), "keys": keys, "files": files})
    return Restored(manifest, data_dir, keys, files, moved)


def _make_room(data_dir: Path, force: bool) -> None:
    """Refuse a data directory with anything in it, unless `force` (and no server runs on it)."""
    if not data_dir.exists() or not any(data_dir.iterdir()):
        return
    if not force:
        raise BackupError(
            f"{data_dir} is not empty: restore into a new data directory (--data-dir), or add "
            f"--force to replace its {', '.join(REPLACED)}"
        )
    marker = data_dir / "redis" / "url"
    if marker.exists() and answers(marker.read_text().strip()):
        raise BackupError(
            f"a server is running on {data_dir}: stop loa there before restoring over it"
        )
    for name in REPLACED:
        path = data_dir / name
        if path.is_dir():
            shutil.rmtree(path)


def _make_room_in(url: str, namespace: str, force: bool) -> None:
    with contextlib.closing(connect_sync(url)) as client:
        present = next(iter(keys_of(client, namespace)), None)
        if present is None:
            return
        if not force:
            raise BackupError(
                f"namespace {namespace!r} already has keys in the configured Redis: restore "
                "into an empty one, or add --force to replace them"
            )
        for key in list(keys_of(client, namespace)):
            client.delete(key)


@contextlib.contextmanager
def _target(
    url: str | None, data_dir: Path, manifest: Manifest, staging: Path
) -> Iterator[tuple[Any, int]]:
    """A client on the restored data (before it is let go), and how many keys it holds."""
    snapshots = [staging / name for name in manifest.snapshots]
    if url is not None:
        with contextlib.closing(connect_sync(url)) as client:
            copied = sum(_copy_from(path, client, manifest.namespace) for path in snapshots)
            yield client, copied
        return
    server_dir = data_dir / "redis"
    server_dir.mkdir(mode=0o700, exist_ok=True)
    if len(snapshots) == 1:
        rdb = server_dir / "dump.rdb"
        shutil.move(snapshots[0], rdb)
        try:
            with ScratchServer(server_dir, rdb.name) as client:
                write_append_only(client)
                yield client, int(client.dbsize())
        finally:
            rdb.unlink(missing_ok=True)  # the append-only file holds it now
        return
    with ScratchServer(server_dir, appendonly=True) as client:
        copied = sum(_copy_from(path, client, manifest.namespace) for path in snapshots)
        yield client, copied


def _copy_from(snapshot: Path, target: Any, namespace: str) -> int:
    with ScratchServer(snapshot.parent, snapshot.name) as source:
        copied = copy_keys(source, target, namespace)
        source.close()
    return copied


def move_pinned_paths(client: Any, manifest: Manifest, data_dir: Path) -> int:
    """Point each campaign's pinned audience copy at the restored data directory."""
    old = Path(manifest.data_dir) / "campaigns"
    new = data_dir / "campaigns"
    if old == new:
        return 0
    moved = 0
    ids: Any = client.zrange(campaigns_key(manifest.namespace), 0, -1)
    for raw in ids:
        key = campaign_key(manifest.namespace, text(raw))
        fields: Any = client.hmget(key, ["audience", "audience_copied"])
        path, copied = text(fields[0]), text(fields[1])
        if copied != "1" or not path:
            continue
        with contextlib.suppress(ValueError):
            relative = Path(path).relative_to(old)
            client.hset(key, "audience", str(new / relative))
            moved += 1
    return moved
