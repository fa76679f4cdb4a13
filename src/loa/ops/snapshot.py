"""Point-in-time copies of a Redis server's data as RDB files, taken while it keeps serving.

The embedded server is asked for a `BGSAVE` (it forks; the child writes the file while the
parent serves on) and the file it wrote is moved out. A server loa does not own (an external
Redis, each primary of a Redis Cluster) is read through the replication protocol, as a replica
does for its first full copy, so nothing is written on that server's disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis
from redis.connection import SSLConnection, parse_url

from loa.engine.connection import CLUSTER_SCHEME
from loa.errors import BackupError

CHUNK = 1 << 16
EOF_MARK = 40  # bytes of the end mark of a diskless transfer
SAVE_TIMEOUT = 3600.0  # seconds a BGSAVE of a large data set may take


@dataclass(frozen=True, slots=True)
class RdbFile:
    """One snapshot on disk: where it came from, its size and SHA-256."""

    path: Path
    source: str  # the node, as host:port or the socket path (never a password)
    size: int
    sha256: str


def _options(url: str) -> dict[str, Any]:
    """The parts of a Redis URL, as redis-py reads them."""
    return dict(parse_url(url))  # type: ignore[no-untyped-call]


def shown(url: str) -> str:
    """A server's address fit for logs and manifests: host:port or socket, never a password."""
    options = _options(url.replace(CLUSTER_SCHEME, "redis://", 1))
    if options.get("path"):
        return str(options["path"])
    return f"{options.get('host', '127.0.0.1')}:{options.get('port', 6379)}"


def save_embedded(url: str, server_dir: Path, target: Path) -> RdbFile:
    """BGSAVE on the embedded server serving `server_dir`, then move its file to `target`."""
    with (
        _locked(server_dir / "backup.lock"),
        contextlib.closing(redis.Redis.from_url(url, socket_timeout=30)) as client,
    ):
        written = _dump_path(client, server_dir)
        before = _saves(client)
        client.bgsave(schedule=True)  # waits its turn behind an AOF rewrite
        _wait_saved(client, before)
        try:
            shutil.move(written, target)
        except FileNotFoundError:
            raise BackupError(
                f"the embedded server saved, but its file {written} is not there"
            ) from None
    sha, size = _digest(target)
    return RdbFile(target, shown(url), size, sha)


def _dump_path(client: redis.Redis, server_dir: Path) -> Path:
    """Where the server writes its snapshot (its own config; the embedded defaults otherwise)."""
    try:
        directory = client.config_get("dir").get("dir") or str(server_dir)
        name = client.config_get("dbfilename").get("dbfilename") or "dump.rdb"
    except redis.ResponseError:  # CONFIG renamed away: loa starts it with the defaults
        directory, name = str(server_dir), "dump.rdb"
    return Path(directory) / name


def _saves(client: redis.Redis) -> tuple[int, int]:
    """(saves made, last save time): either changes when a new save completed."""
    info: dict[str, Any] = client.info("persistence")
    return int(info.get("rdb_saves", 0)), int(info.get("rdb_last_save_time", 0))


def _wait_saved(client: redis.Redis, before: tuple[int, int]) -> None:
    deadline = time.monotonic() + SAVE_TIMEOUT
    while time.monotonic() < deadline:
        info: dict[str, Any] = client.info("persistence")
        done = (int(info.get("rdb_saves", 0)), int(info.get("rdb_last_save_time", 0)))
        if not int(info.get("rdb_bgsave_in_progress", 0)) and done != before:
            if info.get("rdb_last_bgsave_status") != "ok":
                raise BackupError("the embedded server could not write its snapshot (BGSAVE)")
            return
        time.sleep(0.05)
    raise BackupError(f"the embedded server's snapshot took longer than {SAVE_TIMEOUT:g}s")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One backup at a time per server: two BGSAVEs would share one file name."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def primaries(url: str) -> list[str]:
    """The URLs of the servers that hold `url`'s data: itself, or each primary of a cluster."""
    if not url.startswith(CLUSTER_SCHEME):
        return [url]
    plain = "redis://" + url[len(CLUSTER_SCHEME) :]
    options = _options(plain)
    auth = ""
    if options.get("password"):
        auth = f"{options.get('username') or ''}:{options['password']}@"
    scheme = "rediss" if options.get("connection_class") is SSLConnection else "redis"
    try:
        with contextlib.closing(redis.RedisCluster.from_url(plain)) as cluster:
            nodes = cluster.get_primaries()  # type: ignore[no-untyped-call]
    except redis.RedisError as exc:
        raise BackupError(f"cannot reach the cluster at {shown(url)}: {exc}") from None
    return [f"{scheme}://{auth}{node.host}:{node.port}" for node in nodes]


def fetch_rdb(url: str, target: Path, timeout: float = 120.0) -> RdbFile:
    """Copy a server's data to `target` through the replication protocol (SYNC), online."""
    where = shown(url)
    try:
        with contextlib.closing(_connect(url, timeout)) as sock, sock.makefile("rb") as reader:
            _handshake(sock, reader, url, where)
            sock.sendall(_command("SYNC"))
            header = _bulk_header(reader, where)
            with target.open("wb") as out:
                digest, size = _receive(reader, header, out, where)
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise BackupError(f"copying the data of {where} failed: {exc}") from None
    except BackupError:
        target.unlink(missing_ok=True)
        raise
    return RdbFile(target, where, size, digest)


def _connect(url: str, timeout: float) -> socket.socket:
    options = _options(url)
    if options.get("path"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(str(options["path"]))
        return sock
    host, port = str(options.get("host", "127.0.0.1")), int(options.get("port", 6379))
    sock = socket.create_connection((host, port), timeout=timeout)
    if options.get("connection_class") is SSLConnection:
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    return sock


def _command(*parts: str) -> bytes:
    encoded = [part.encode() for part in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded
    )


def _handshake(sock: socket.socket, reader: IO[bytes], url: str, where: str) -> None:
    """Authenticate, then say we take a diskless copy and want nothing after it."""
    options = _options(url)
    if options.get("password"):
        user = [str(options["username"])] if options.get("username") else []
        sock.sendall(_command("AUTH", *user, str(options["password"])))
        if not reader.readline().startswith(b"+"):
            raise BackupError(f"{where} refused the credentials in its URL")
    # older servers answer -ERR to either: they then send a copy written to disk, and the
    # stream of changes after it, which we do not read
    sock.sendall(_command("REPLCONF", "capa", "eof"))
    reader.readline()
    sock.sendall(_command("REPLCONF", "rdb-only", "1"))
    reader.readline()


def _bulk_header(reader: IO[bytes], where: str) -> bytes:
    while True:
        line = reader.readline()
        if not line:
            raise BackupError(f"{where} closed the connection before sending its data")
        if line.strip():  # blank lines are keep-alives while the server forks
            break
    if line.startswith(b"-"):
        said = line[1:].strip().decode(errors="replace")
        raise BackupError(f"{where} refused to send a copy of its data: {said}")
    if not line.startswith(b"$"):
        raise BackupError(f"{where} answered SYNC with {line[:40]!r}, not a data transfer")
    return line.rstrip(b"\r\n")


def _receive(reader: IO[bytes], header: bytes, out: IO[bytes], where: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    read1 = getattr(reader, "read1", reader.read)
    if header.startswith(b"$EOF:"):
        mark, held = header[5 : 5 + EOF_MARK], b""
        while True:
            chunk = read1(CHUNK)
            if not chunk:
                raise BackupError(f"{where} closed the connection in the middle of its data")
            held += chunk
            end = held.find(mark)
            keep = held[:end] if end >= 0 else held[: max(0, len(held) - EOF_MARK)]
            out.write(keep)
            digest.update(keep)
            size += len(keep)
            if end >= 0:
                return digest.hexdigest(), size
            held = held[len(keep) :]
    remaining = int(header[1:])
    while remaining:
        chunk = read1(min(CHUNK, remaining))
        if not chunk:
            raise BackupError(f"{where} closed the connection in the middle of its data")
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        remaining -= len(chunk)
    return digest.hexdigest(), size


def _digest(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
