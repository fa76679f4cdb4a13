"""Short-lived private servers that read a snapshot: to check it, count it, or restore from it.

A scratch server listens only on a unix socket in a private temporary directory, saves nothing
of its own accord, and is shut down when the work is done.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from loa.engine.embedded import find_server_binary
from loa.errors import ArchiveDamaged, BackupError

START_TIMEOUT = 30.0  # seconds a server may take to answer at all (loading answers LOADING)
COPY_BATCH = 500  # keys per round trip when copying


class ScratchServer:
    """A private server whose `--dir` is `directory`, loading `rdb` (a file name there) if given.

    With `appendonly`, it keeps an append-only file in `directory`, as the embedded server does.
    """

    def __init__(self, directory: Path, rdb: str | None = None, *, appendonly: bool = False):
        self.directory = directory
        self.rdb = rdb
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None
        self._home = Path(tempfile.mkdtemp(prefix="loa-scratch-"))  # short: unix socket paths
        self.socket = self._home / "s.sock"

    def start(self) -> redis.Redis:
        """Start it and wait until its data is loaded; returns a client."""
        args = [
            find_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.directory),
            "--dbfilename",
            self.rdb or "absent.rdb",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self._home / "server.log"),
        ]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=300)
        self._wait_loaded(client)
        return client

    def _wait_loaded(self, client: redis.Redis) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise self._failed()
            try:
                client.ping()
                return
            except redis.BusyLoadingError:
                deadline = time.monotonic() + START_TIMEOUT  # loading a large file: progress
            except (redis.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise BackupError(
                        f"a scratch server did not answer within {START_TIMEOUT}s"
                    ) from None
            time.sleep(0.02)

    def _failed(self) -> BackupError:
        said = self.log_tail()
        self.process = None
        if self.rdb and any(
            word in said for word in ("Bad file format", "Short read", "checksum", "RDB")
        ):
            return ArchiveDamaged(f"the snapshot {self.rdb} cannot be loaded: {_last_line(said)}")
        return BackupError(f"a scratch server exited at start: {_last_line(said)}")

    def log_tail(self) -> str:
        """The end of the server's log."""
        path = self._home / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        """Shut it down (an append-only file is flushed first) and remove its socket home."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()  # SIGTERM: it flushes its append-only file and exits
            try:
                process.wait(600)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> redis.Redis:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].split(" * ")[-1].split(" # ")[-1] if lines else "no log"


def write_append_only(client: redis.Redis, timeout: float = 3600.0) -> None:
    """Turn on the append-only file of a server holding loaded data, and wait until it is whole.

    The server rewrites its data set into a new append-only file; from then on it logs every
    change there, which is how the embedded server keeps its data.
    """
    client.config_set("appendonly", "yes")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info: dict[str, Any] = client.info("persistence")
        busy = int(info.get("aof_rewrite_in_progress", 0)) or int(
            info.get("aof_rewrite_scheduled", 0)
        )
        if not busy and int(info.get("aof_rewrites", 1)) >= 1:
            if info.get("aof_last_bgrewrite_status") != "ok":
                raise BackupError("writing the restored data to its append-only file failed")
            return
        time.sleep(0.05)
    raise BackupError(f"writing the append-only file took longer than {timeout:g}s")


def keys_of(client: Any, namespace: str | None) -> Iterator[bytes]:
    """Every key (of the namespace, when given); a cluster client scans every primary."""
    match = f"{_glob_escape(namespace)}:*" if namespace else None
    yield from client.scan_iter(match=match, count=1000)


def copy_keys(source: redis.Redis, target: Any, namespace: str | None) -> int:
    """DUMP each key of `source` (in `namespace`) and RESTORE it in `target` with its TTL."""
    copied = 0
    batch: list[bytes] = []
    for key in keys_of(source, namespace):
        batch.append(key)
        if len(batch) >= COPY_BATCH:
            copied += _copy_batch(source, target, batch)
            batch = []
    if batch:
        copied += _copy_batch(source, target, batch)
    return copied


def _copy_batch(source: redis.Redis, target: Any, keys: list[bytes]) -> int:
    read = source.pipeline(transaction=False)
    for key in keys:
        read.dump(key)
        read.pttl(key)
    replies = read.execute()
    write = target.pipeline(transaction=False)
    count = 0
    for key, payload, ttl in zip(keys, replies[::2], replies[1::2], strict=True):
        if payload is None or ttl == -2:
            continue  # it expired in between
        write.restore(key, max(0, int(ttl)), payload, replace=True)
        count += 1
    write.execute()
    return count


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
