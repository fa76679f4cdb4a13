"""The backup archive: one tar file of snapshots and data files, and a manifest that vouches.

Members are `redis/*.rdb` (the snapshots), `data/...` (files of the data directory) and, last,
`manifest.json`: the loa version, the time, where the snapshots came from, what they hold, and
the size, SHA-256, mode and modification time of every other member. Reading checks each member
against the manifest as it streams by, so a damaged archive is refused before anything of it is
used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import orjson

from loa.errors import ArchiveDamaged, BackupError
from loa.ops.contents import Contents

FORMAT = 1
MANIFEST = "manifest.json"
MANIFEST_LIMIT = 64 << 20  # a manifest of a million files fits; anything larger is not one
CHUNK = 1 << 20
PREFIXES = ("redis/", "data/")


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One member of the archive as the manifest records it."""

    name: str
    size: int
    sha256: str
    mtime_ns: int
    mode: int


@dataclass(slots=True)
class Manifest:
    """What an archive holds, written into it last."""

    loa_version: str
    created: str  # ISO 8601, UTC
    created_ms: int
    namespace: str
    data_dir: str  # where the data directory was, to move pinned paths on restore
    source: str  # embedded, redis or cluster
    nodes: list[str]  # the snapshot of each: host:port or socket path
    snapshots: list[str]  # the member names of the snapshots, in the order of `nodes`
    files: list[FileEntry] = field(default_factory=list)
    contents: Contents | None = None  # None when the snapshots were not loaded to count them
    format: int = FORMAT

    def to_bytes(self) -> bytes:
        """The manifest as JSON."""
        data = asdict(self)
        data["contents"] = self.contents.to_json() if self.contents else None
        return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Manifest:
        """Parse a manifest, or ArchiveDamaged saying why it is not one."""
        try:
            data = orjson.loads(raw)
            if data.get("format") != FORMAT:
                raise ArchiveDamaged(
                    f"{where}: manifest format {data.get('format')!r} is not one this loa "
                    f"reads ({FORMAT}); restore it with the loa version that made it "
                    f"({data.get('loa_version', 'unknown')})"
                )
            data["files"] = [FileEntry(**entry) for entry in data["files"]]
            data["contents"] = Contents.from_json(data["contents"]) if data["contents"] else None
            return cls(**data)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ArchiveDamaged(f"{where}: its manifest is not readable ({exc})") from None

    @property
    def total_size(self) -> int:
        """Bytes of every member but the manifest."""
        return sum(entry.size for entry in self.files)


class _Hashing:
    """A file reader that hashes what it hands out (tarfile reads members through it)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.digest.update(chunk)
        return chunk


class ArchiveWriter:
    """Writes `path` as `path.part`, renamed into place only once the manifest is in."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.part = path.with_name(path.name + ".part")
        fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._raw = os.fdopen(fd, "wb")
        # closed in finish() or abort()
        if path.name.endswith((".gz", ".tgz")):
            self.tar = tarfile.open(  # noqa: SIM115
                fileobj=self._raw, mode="w:gz", format=tarfile.PAX_FORMAT
            )
        else:
            self.tar = tarfile.open(  # noqa: SIM115
                fileobj=self._raw, mode="w", format=tarfile.PAX_FORMAT
            )
        self.entries: list[FileEntry] = []

    def add(self, source: Path, name: str) -> FileEntry | None:
        """Add a regular file under `name`; None when it vanished before it could be read."""
        try:
            handle = source.open("rb")
        except FileNotFoundError:
            return None  # an upload removed meanwhile: it is no longer part of the state
        with handle:
            stat = os.fstat(handle.fileno())
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = stat.st_size, stat.st_mtime, stat.st_mode & 0o777
            reader = _Hashing(handle)
            try:
                self.tar.addfile(info, reader)
            except OSError as exc:
                raise BackupError(f"{source} changed while it was being archived: {exc}") from None
        sha = reader.digest.hexdigest()
        entry = FileEntry(name, stat.st_size, sha, stat.st_mtime_ns, info.mode)
        self.entries.append(entry)
        return entry

    def finish(self, manifest: Manifest) -> Path:
        """Write the manifest, flush to disk, and move the archive into place."""
        raw = manifest.to_bytes()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(raw), 0o600, manifest.created_ms / 1000
        self.tar.addfile(info, _Bytes(raw))
        self.tar.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.part, self.path)
        _sync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Close and delete the unfinished archive."""
        with contextlib.suppress(OSError, tarfile.TarError):  # it is being thrown away
            self.tar.close()
        self._raw.close()
        self.part.unlink(missing_ok=True)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.at + size
        chunk, self.at = self.data[self.at : end], min(end, len(self.data))
        return chunk


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_archive(archive: Path, staging: Path | None) -> Manifest:
    """Check every member of `archive` against its manifest, writing them under `staging`.

    With `staging` None the members are only checked. Raises ArchiveDamaged naming the first
    problem: a truncated or altered archive, a member the manifest does not list or lists
    otherwise, a member listed but missing.
    """
    where = f"archive {archive}"
    seen: dict[str, tuple[int, str]] = {}
    manifest: Manifest | None = None
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                if manifest is not None:
                    raise ArchiveDamaged(f"{where}: {member.name!r} follows the manifest")
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is None:
                    raise ArchiveDamaged(f"{where}: {member.name!r} is not a regular file")
                if member.name == MANIFEST:
                    if member.size > MANIFEST_LIMIT:
                        raise ArchiveDamaged(f"{where}: its manifest is implausibly large")
                    manifest = Manifest.from_bytes(handle.read(), where)
                    continue
                target = staging / _safe_name(member.name, where) if staging else None
                seen[member.name] = _copy_member(handle, target)
    except FileNotFoundError:
        raise BackupError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise BackupError(f"{where} is a directory, not an archive") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ArchiveDamaged(
            f"{where} is truncated, damaged or not a loa backup ({exc}); nothing was restored"
        ) from None
    if manifest is None:
        raise ArchiveDamaged(
            f"{where} has no manifest at its end: it is truncated or not a loa backup"
        )
    _check(manifest, seen, where)
    return manifest


def _safe_name(name: str, where: str) -> Path:
    path = PurePosixPath(name)
    if (
        path.is_absolute()
        or ".." in path.parts
        or not name.startswith(PREFIXES)
        or "\\" in name
        or "\x00" in name
    ):
        raise ArchiveDamaged(f"{where}: member {name!r} would land outside the data directory")
    return Path(*path.parts)


def _copy_member(handle: IO[bytes], target: Path | None) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    out: IO[bytes] | None = None
    if target is not None:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
    try:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return size, digest.hexdigest()


def _check(manifest: Manifest, seen: dict[str, tuple[int, str]], where: str) -> None:
    listed = {entry.name: entry for entry in manifest.files}
    for name in seen.keys() - listed.keys():
        raise ArchiveDamaged(f"{where}: {name!r} is in the archive but not in its manifest")
    for name, entry in listed.items():
        if name not in seen:
            raise ArchiveDamaged(f"{where}: {name!r} is in the manifest but not in the archive")
        size, sha = seen[name]
        if size != entry.size or sha != entry.sha256:
            raise ArchiveDamaged(
                f"{where}: {name!r} is not what was backed up (SHA-256 {sha[:12]}…, "
                f"{size:,} bytes; the manifest says {entry.sha256[:12]}…, {entry.size:,} bytes); "
                "nothing was restored"
            )
    for name in manifest.snapshots:
        if name not in listed:
            raise ArchiveDamaged(f"{where}: the snapshot {name!r} is not in the manifest's files")


def place(staging: Path, manifest: Manifest, data_dir: Path) -> int:
    """Move the checked data files from `staging` into `data_dir`, modes and times as they were.

    Returns how many files were placed.
    """
    placed = 0
    for entry in manifest.files:
        if not entry.name.startswith("data/"):
            continue
        relative = Path(*PurePosixPath(entry.name).parts[1:])
        target = data_dir / relative
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.move(staging / entry.name, target)
        os.chmod(target, entry.mode)
        # a pinned audience is checked by size and mtime before its digest: keep them exact
        os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns))
        placed += 1
    return placed


def describe(manifest: Manifest) -> dict[str, Any]:
    """A summary for people and --json: when, what, how much."""
    contents = manifest.contents
    return {
        "loa_version": manifest.loa_version,
        "created": manifest.created,
        "source": manifest.source,
        "nodes": manifest.nodes,
        "namespace": manifest.namespace,
        "files": sum(1 for entry in manifest.files if entry.name.startswith("data/")),
        "bytes": manifest.total_size,
        "contents": contents.to_json() if contents else None,
    }
