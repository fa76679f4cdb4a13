"""Engine benchmark: N messages through loa's queues, workers and null adapter, versus Celery."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
import redis
import uvloop

from common import (
    HERE,
    add_output_arguments,
    cpu_seconds,
    cpu_used,
    emit,
    exit_on_signals,
    machine,
    source_version,
    write_results,
)
from loa.campaigns.controls import campaign_controls
from loa.engine.connection import connect
from loa.engine.embedded import EmbeddedRedis
from loa.engine.keys import ShardKeys, shard_keys
from loa.engine.producer import Producer
from loa.engine.queue import GROUP, Queues
from loa.engine.supervisor import Supervisor
from loa.message import FINAL, Lane, Message
from loa.settings import Settings
from loa.status import route_status

CELERY_BROKER = "redis://127.0.0.1:6379/14"
# a GSM-7 advisory of 60 characters: one SMS part
BODY = "Bo Y te: tiem vac-xin day du de bao ve ban va gia dinh minh."
MB = 1024 * 1024
TARGET_RATIO = 100.0
TARGET_LOA_RATE = 100_000.0
TARGET_OVERHEAD_BYTES = 64.0


def audience(campaign: str, count: int) -> Iterator[Message]:
    """Realistic messages, made lazily: `c1-000123`, `+849xxxxxxxx`, a 60-character body."""
    prefix = f"{campaign}-"
    for n in range(count):  # str + zfill: about twice as fast as an f-string with a format spec
        yield Message(
            prefix + str(n).zfill(6), "+849" + str(n * 7_919 % 100_000_000).zfill(8), BODY
        )


def field_bytes(campaign: str, count: int) -> float:
    """The average size of a message's own fields (id + to + body, UTF-8 bytes)."""
    if count <= 0:
        return 0.0
    total = sum(
        len(m.id.encode()) + len(m.to.encode()) + len(m.body.encode())
        for m in audience(campaign, count)
    )
    return total / count


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as possible."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# ---------------------------------------------------------------------------------------------
# resident memory sampling


@dataclass
class RssSampler:
    """Samples the RSS of a changing set of processes in a background thread; keeps the peaks."""

    pids: Callable[[], Sequence[int]]
    interval: float = 0.05
    peaks: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    def sample(self) -> None:
        """Read every watched process's RSS once."""
        for pid in self.pids():
            try:
                proc = self._procs.get(pid) or self._procs.setdefault(pid, psutil.Process(pid))
                rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if rss > self.peaks.get(pid, 0):
                self.peaks[pid] = rss

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sample()

    def peak_mb(self, pids: Sequence[int] | None = None) -> float:
        """The largest peak among `pids` (all watched processes when None), in MiB."""
        chosen = [
            self.peaks[p] for p in (pids if pids is not None else self.peaks) if p in self.peaks
        ]
        return round(max(chosen, default=0) / MB, 1)


def generation_rate(count: int) -> float:
    """Messages per second the synthetic audience alone is made at (part of the producer's cost)."""
    started = time.perf_counter()
    for _ in audience("g1", count):
        pass
    return count / (time.perf_counter() - started)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now."""
    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


# ---------------------------------------------------------------------------------------------
# loa


def loa_settings(args: argparse.Namespace, url: str, data_dir: Path, namespace: str) -> Settings:
    """One or a few unlimited null routes, chunk = batch size, metrics off."""
    route = {
        "adapter": "null",
        "rate": 0,
        "chunk": args.batch_size,
        "concurrency": args.concurrency,
        "shards": args.shards,
    }
    return Settings.from_mapping(
        {
            "redis_url": url,
            "data_dir": str(data_dir),
            "namespace": namespace,
            "worker": {"metrics_port": 0, "drain_timeout": 10.0, "claim_idle": 60.0},
            "queue": {"batch_size": args.batch_size},
            "routes": {f"bench-{i}": route for i in range(args.routes)},
        },
        source="benchmark settings",
    )


def route_names(settings: Settings) -> list[str]:
    """The benchmark's routes."""
    return list(settings.routes)


def consumers_ready(client: redis.Redis, settings: Settings) -> int:
    """How many distinct worker consumers have read every route (the fewest over routes)."""
    fewest = None
    for name in settings.routes:
        seen: set[bytes] = set()
        for keys in shard_keys(settings.namespace, name, settings.route(name).shards):
            try:
                infos = client.xinfo_consumers(keys.stream(Lane.NORMAL), GROUP)
            except redis.ResponseError:
                continue
            seen.update(info["name"] for info in infos)
        fewest = len(seen) if fewest is None else min(fewest, len(seen))
    return fewest or 0


def wait_for_workers(client: redis.Redis, settings: Settings, count: int, timeout: float) -> None:
    """Block until `count` worker processes poll every route (they have started and connected)."""
    deadline = time.monotonic() + timeout
    while consumers_ready(client, settings) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} loa workers did not start within {timeout:.0f}s")
        time.sleep(0.05)


async def _prepare(url: str, settings: Settings) -> None:
    client = connect(url)
    try:
        queues = Queues(client, settings.namespace)
        for name in settings.routes:
            limits = settings.route(name)
            await queues.prepare(shard_keys(settings.namespace, name, limits.shards))
    finally:
        await client.aclose()


def all_shards(settings: Settings) -> list[ShardKeys]:
    """Every shard of every benchmark route."""
    return [
        keys
        for name in settings.routes
        for keys in shard_keys(settings.namespace, name, settings.route(name).shards)
    ]


async def _finished(queues: Queues, shards: Sequence[ShardKeys]) -> tuple[int, dict[str, int]]:
    """Messages with a final outcome, from the shards' counters (one cheap round trip)."""
    totals: dict[str, int] = {}
    for key, value in (await queues.stats(shards)).items():
        outcome = key.split(":", 1)[1]
        totals[outcome] = totals.get(outcome, 0) + value
    return sum(totals.get(outcome, 0) for outcome in FINAL), totals


async def _backlog(queues: Queues, settings: Settings) -> dict[str, int]:
    """What is left on the queues: waiting, in flight and delayed batches over all routes."""
    left = {"waiting": 0, "in_flight": 0, "delayed": 0}
    for name in settings.routes:
        row = await route_status(queues, settings, name)
        left["waiting"] += row.waiting
        left["in_flight"] += row.in_flight
        left["delayed"] += row.delayed
    return left


async def _enqueue(url: str, settings: Settings, campaign: str, count: int) -> float:
    """Enqueue `count` messages spread over the routes; returns the seconds it took."""
    client = connect(url)
    try:
        producer = Producer(Queues(client, settings.namespace), settings)
        started = time.perf_counter()
        await asyncio.gather(
            *(
                producer.enqueue(name, audience(f"c{i + 1}", n), campaign=campaign)
                for i, (name, n) in enumerate(
                    zip(settings.routes, split(count, len(settings.routes)), strict=True)
                )
            )
        )
        return time.perf_counter() - started
    finally:
        await client.aclose()


async def _end_to_end(
    url: str, settings: Settings, count: int, poll: float, limit: float
) -> dict[str, Any]:
    """Enqueue while the workers run; stop the clock when every message is finished."""
    client = connect(url)
    try:
        queues = Queues(client, settings.namespace)
        shards = all_shards(settings)
        producer = Producer(queues, settings)
        enqueued_at: list[float] = []
        started = time.perf_counter()
        enqueue = asyncio.gather(
            *(
                producer.enqueue(name, audience(f"c{i + 1}", n), campaign=f"c{i + 1}")
                for i, (name, n) in enumerate(
                    zip(settings.routes, split(count, len(settings.routes)), strict=True)
                )
            )
        )
        enqueue.add_done_callback(lambda _: enqueued_at.append(time.perf_counter()))
        finished_at_enqueue_end = -1
        try:
            while True:
                finished, totals = await _finished(queues, shards)
                now = time.perf_counter()
                if enqueued_at and finished_at_enqueue_end < 0:
                    finished_at_enqueue_end = finished
                if finished >= count:
                    break
                if enqueue.done() and enqueue.exception() is not None:
                    await enqueue
                if now - started > limit:
                    raise TimeoutError(f"loa finished {finished:,} of {count:,} in {limit:.0f}s")
                await asyncio.sleep(poll)
            await enqueue
        finally:
            if not enqueue.done():
                enqueue.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await enqueue
        elapsed = now - started
        enqueue_seconds = enqueued_at[0] - started
        return {
            "seconds": round(elapsed, 3),
            "msgs_per_s": round(count / elapsed),
            "enqueue_seconds": round(enqueue_seconds, 3),
            "enqueue_msgs_per_s_while_draining": round(count / enqueue_seconds),
            "finished_when_enqueue_ended": finished_at_enqueue_end,
            "outcomes": totals,
            "backlog_at_end": await _backlog(queues, settings),
        }
    finally:
        await client.aclose()


async def _drain(
    url: str, settings: Settings, count: int, workers: int, poll: float, limit: float
) -> dict[str, Any]:
    """Measure a backlog draining: from the moment every worker consumes until all finished."""
    client = connect(url)
    sync = redis.Redis.from_url(url)
    try:
        queues = Queues(client, settings.namespace)
        shards = all_shards(settings)
        started = time.perf_counter()
        mark: tuple[float, int] | None = None  # every worker consumes from here on
        first: tuple[float, int] | None = None  # the first progress seen (a fallback mark)
        while True:
            finished, totals = await _finished(queues, shards)
            now = time.perf_counter()
            if first is None and finished > 0:
                first = (now, finished)
            if mark is None and consumers_ready(sync, settings) >= workers:
                mark = (now, finished)
            if finished >= count:
                break
            if now - started > limit:
                raise TimeoutError(f"drain finished {finished:,} of {count:,} in {limit:.0f}s")
            await asyncio.sleep(poll)
        # a small backlog can be gone before the last worker started: measure from first progress
        all_workers = mark is not None and mark[1] < count
        if not all_workers:
            mark = first or (started, 0)
        assert mark is not None
        window = now - mark[0]
        drained = count - mark[1]
        return {
            "drain_seconds": round(window, 3),
            "drain_messages_measured": drained,
            "drain_msgs_per_s": round(drained / window) if window > 0 else None,
            "drain_with_all_workers": all_workers,
            "drain_outcomes": totals,
        }
    finally:
        sync.close()
        await client.aclose()


def redis_memory(client: redis.Redis) -> int:
    """used_memory, after giving the server a moment to free query buffers and flush the AOF."""
    time.sleep(0.3)
    return int(client.info("memory")["used_memory"])


def stream_bytes(client: redis.Redis, settings: Settings) -> int:
    """MEMORY USAGE of every stream of the benchmark's routes (exact, SAMPLES 0)."""
    total = 0
    for name in settings.routes:
        for keys in shard_keys(settings.namespace, name, settings.route(name).shards):
            for stream in keys.streams():
                total += int(client.memory_usage(stream, samples=0) or 0)
    return total


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command so far (INFO commandstats), scripts' inner commands included."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def delete_namespace(client: redis.Redis, namespace: str) -> None:
    """Remove every key of a benchmark namespace."""
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


def run_supervisor(settings: Settings, processes: int) -> Supervisor:
    """Start the worker processes (the server is ours, so the supervisor leaves it alone)."""
    supervisor = Supervisor(settings, processes=processes, controls=campaign_controls)
    supervisor.start()
    return supervisor


def bench_loa_queued(
    args: argparse.Namespace, url: str, data_dir: Path, client: redis.Redis
) -> dict[str, Any]:
    """With no workers running: enqueue-only rate and Redis bytes per queued message; then the
    drain-only rate of that backlog once workers start."""
    settings = loa_settings(args, url, data_dir, "bench-q")
    count = args.queued_messages
    uvloop.run(_prepare(url, settings))
    before = redis_memory(client)
    enqueue_seconds = uvloop.run(_enqueue(url, settings, "q1", count))
    after = redis_memory(client)
    streams = stream_bytes(client, settings)
    per_route = split(count, len(settings.routes))
    own = sum(field_bytes(f"c{i + 1}", n) * n for i, n in enumerate(per_route)) / count
    raw = (after - before) / count
    result: dict[str, Any] = {
        "queued_messages": count,
        "enqueue_seconds": round(enqueue_seconds, 3),
        "enqueue_msgs_per_s": round(count / enqueue_seconds),
        "used_memory_delta_bytes": after - before,
        "raw_bytes_per_queued_message": round(raw, 1),
        "message_field_bytes": round(own, 1),
        "overhead_bytes_per_queued_message": round(raw - own, 1),
        "stream_memory_usage_bytes_per_message": round(streams / count, 1),
    }
    if args.no_drain:
        delete_namespace(client, settings.namespace)
        return result
    supervisor = run_supervisor(settings, args.processes)
    try:
        result.update(
            uvloop.run(_drain(url, settings, count, args.processes, args.poll, limit=args.timeout))
        )
    finally:
        supervisor.stop()
        delete_namespace(client, settings.namespace)
    return result


def bench_loa(
    args: argparse.Namespace, url: str, data_dir: Path, client: redis.Redis, server_pid: int
) -> dict[str, Any]:
    """End to end: workers up first, then enqueue N from this process while they drain."""
    settings = loa_settings(args, url, data_dir, "bench")
    uvloop.run(_prepare(url, settings))
    supervisor = run_supervisor(settings, args.processes)
    me = os.getpid()
    try:
        wait_for_workers(client, settings, args.processes, timeout=60)
        workers = supervisor.pids()
        watched = [me, server_pid, *workers]
        sampler = RssSampler(lambda: [me, server_pid, *supervisor.pids()])
        cpu_before = cpu_seconds(watched)
        calls_before = command_calls(client)
        with sampler:
            result = uvloop.run(
                _end_to_end(url, settings, args.messages, args.poll, limit=args.timeout)
            )
        cpu_after = cpu_seconds(watched)
        calls_after = command_calls(client)
        used_peak = int(client.info("memory")["used_memory_peak"])
    finally:
        killed = supervisor.stop()
        delete_namespace(client, settings.namespace)
    result.update(
        worker_processes=len(workers),
        killed_at_stop=killed,
        worker_peak_rss_mb=sampler.peak_mb(workers),
        worker_peak_rss_mb_each=[sampler.peak_mb([p]) for p in workers],
        producer_peak_rss_mb=sampler.peak_mb([me]),
        server_peak_rss_mb=sampler.peak_mb([server_pid]),
        server_used_memory_peak_mb=round(used_peak / MB, 1),
    )
    cpu = {
        "producer": cpu_used(cpu_before, cpu_after, [me]),
        "workers": cpu_used(cpu_before, cpu_after, workers),
        "server": cpu_used(cpu_before, cpu_after, [server_pid]),
    }
    batches = -(-args.messages // args.batch_size)
    result["server_calls_per_batch"] = {
        name: round((calls - calls_before.get(name, 0)) / batches, 2)
        for name, calls in sorted(calls_after.items(), key=lambda item: -item[1])
        if calls - calls_before.get(name, 0) >= batches // 10
    }
    result["cpu_seconds"] = {k: round(v, 2) for k, v in cpu.items()}
    result["cpu_us_per_message"] = {
        k: round(v * 1e6 / args.messages, 2) for k, v in {**cpu, "total": sum(cpu.values())}.items()
    }
    return result


# ---------------------------------------------------------------------------------------------
# celery


def stop_group(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the group's leader (a warm shutdown), then SIGKILL the group if anything lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    # the prefork children share the group: make sure none survives its parent
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _wait_counter(
    client: redis.Redis,
    key: str,
    target: int,
    timeout: float,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    poll: float,
    depth: list[int] | None = None,
) -> float:
    deadline = time.perf_counter() + timeout
    while True:
        done = int(client.get(key) or 0)
        now = time.perf_counter()
        if done >= target:
            return now
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"celery worker exited with {proc.returncode}: {tail}")
        if now > deadline:
            raise TimeoutError(f"celery ran {done:,} of {target:,} tasks in {timeout:.0f}s")
        if depth is not None:
            depth.append(int(client.llen("celery")))
        time.sleep(poll)


def bench_celery(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """One `sink(id, to, body)` task per message through a real prefork worker on Redis."""
    os.environ["LOA_BENCH_CELERY_BROKER"] = args.celery_broker
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import celery_peer

    count = args.celery_messages
    client = redis.Redis.from_url(args.celery_broker)
    client.flushdb()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    log_path = data_dir / "celery-worker.log"
    # coreutils timeout: the worker ends by itself even if this process is killed outright
    lifetime = str(int(args.timeout) + 120)
    command = [
        "timeout", "--kill-after=10", lifetime,
        sys.executable, "-m", "celery", "-A", "celery_peer", "worker",
        "--pool", "prefork", "--concurrency", str(args.celery_concurrency),
        "--loglevel", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--hostname", f"loa-bench-{os.getpid()}@127.0.0.1",
    ]  # fmt: skip
    log: IO[bytes]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        # warm-up: the worker is up and the producer's broker connection is open
        celery_peer.sink.delay("w-000000", "+84900000000", BODY)
        _wait_counter(client, celery_peer.COUNTER_KEY, 1, 90, proc, log_path, 0.05)
        client.delete(celery_peer.COUNTER_KEY)
        depth: list[int] = []
        sampler = RssSampler(lambda: process_tree(proc.pid))
        tree = process_tree(proc.pid)
        cpu_before = cpu_seconds([os.getpid(), *tree])
        with sampler:
            started = time.perf_counter()
            for message in audience("c1", count):
                celery_peer.sink.delay(message.id, message.to, message.body)
            enqueued = time.perf_counter()
            ended = _wait_counter(
                client, celery_peer.COUNTER_KEY, count, args.timeout, proc, log_path, 0.01, depth
            )
        cpu_after = cpu_seconds([os.getpid(), *tree])
    finally:
        stop_group(proc)
        client.flushdb()
        client.close()
    elapsed = ended - started
    return {
        "messages": count,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(count / elapsed, 1),
        "enqueue_seconds": round(enqueued - started, 3),
        "enqueue_msgs_per_s": round(count / (enqueued - started), 1),
        "max_broker_queue_length": max(depth, default=0),
        "worker_peak_rss_mb": sampler.peak_mb(),
        "cpu_us_per_message": {
            "producer": round(cpu_used(cpu_before, cpu_after, [os.getpid()]) * 1e6 / count, 1),
            "worker": round(cpu_used(cpu_before, cpu_after, tree) * 1e6 / count, 1),
        },
        "concurrency": args.celery_concurrency,
        "pool": "prefork",
    }


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000, help="loa end-to-end messages")
    parser.add_argument("--celery-messages", type=int, default=5_000)
    parser.add_argument(
        "--queued-messages", type=int, default=200_000,
        help="messages queued with no workers: enqueue-only rate, Redis bytes, then drain rate",
    )  # fmt: skip
    parser.add_argument("--processes", type=int, default=2, help="loa worker processes")
    parser.add_argument("--routes", type=int, default=1)
    parser.add_argument("--shards", type=int, default=4, help="shards per route")
    parser.add_argument("--concurrency", type=int, default=4, help="batches in flight per process")
    parser.add_argument("--batch-size", type=int, default=200, help="messages per batch and chunk")
    parser.add_argument("--celery-broker", default=CELERY_BROKER)
    parser.add_argument("--celery-concurrency", type=int, default=2)
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between status polls")
    parser.add_argument("--timeout", type=float, default=480.0, help="seconds per phase at most")
    parser.add_argument("--no-drain", action="store_true", help="skip the drain-only phase")
    parser.add_argument("--skip-celery", action="store_true")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.messages < 1 or args.queued_messages < 1 or args.celery_messages < 1:
        parser.error("message counts must be positive")
    if not args.celery_broker.startswith(("redis://127.0.0.1", "redis://localhost")):
        parser.error("the Celery broker must be a local Redis (redis://127.0.0.1:...)")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase, each cleaning up after itself."""
    os.environ.setdefault("LOA_LOG_LEVEL", "warning")
    if not args.skip_celery:  # fail before the long phases, not after them
        with contextlib.closing(redis.Redis.from_url(args.celery_broker, socket_timeout=5)) as r:
            r.ping()
    host = machine()
    source = source_version()
    with tempfile.TemporaryDirectory(prefix="loa-bench-") as tmp:
        data_dir = Path(tmp)
        server = EmbeddedRedis(data_dir / "redis")
        url = server.start()
        assert server.process is not None
        try:
            client = redis.Redis.from_url(url)
            try:
                queued = bench_loa_queued(args, url, data_dir, client)
                loa = bench_loa(args, url, data_dir, client, server.process.pid)
            finally:
                client.close()
        finally:
            server.stop()
        celery = None if args.skip_celery else bench_celery(args, data_dir)
    loa_rate = loa["msgs_per_s"]
    celery_rate = celery["msgs_per_s"] if celery else None
    ratio = round(loa_rate / celery_rate, 1) if celery_rate else None
    overhead = queued["overhead_bytes_per_queued_message"]
    return {
        "messages": args.messages,
        "loa_msgs_per_s": loa_rate,
        "celery_msgs_per_s": celery_rate,
        "ratio": ratio,
        "peak_rss_mb": loa["worker_peak_rss_mb"],
        "producer_peak_rss_mb": loa["producer_peak_rss_mb"],
        "redis_bytes_per_queued_message": overhead,
        "redis_raw_bytes_per_queued_message": queued["raw_bytes_per_queued_message"],
        "message_field_bytes": queued["message_field_bytes"],
        "loa_enqueue_msgs_per_s": queued["enqueue_msgs_per_s"],
        "loa_drain_msgs_per_s": queued.get("drain_msgs_per_s"),
        "audience_generation_msgs_per_s": round(generation_rate(min(args.messages, 200_000))),
        "celery_messages": args.celery_messages if celery else None,
        "targets": {
            "ratio": TARGET_RATIO,
            "loa_msgs_per_s": TARGET_LOA_RATE,
            "redis_bytes_per_queued_message": TARGET_OVERHEAD_BYTES,
        },
        "meets_targets": {
            "ratio": ratio is not None and ratio >= TARGET_RATIO,
            "loa_msgs_per_s": loa_rate >= TARGET_LOA_RATE,
            "redis_bytes_per_queued_message": overhead <= TARGET_OVERHEAD_BYTES,
        },
        "loa": loa,
        "loa_queued": queued,
        "celery": celery,
        "config": {
            "processes": args.processes,
            "routes": args.routes,
            "shards": args.shards,
            "concurrency": args.concurrency,
            "batch_size": args.batch_size,
            "chunk": args.batch_size,
            "adapter": "null",
            "server": "embedded valkey (unix socket, appendonly everysec)",
            "celery_broker": args.celery_broker,
        },
        "machine": host,
        "loa_source": source,
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the result, and keep it in benchmarks/results/."""
    args = parse_args(argv)
    exit_on_signals()
    result = run(args)
    emit(result, args.json, write_results("engine", result, args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
