"""SMPP benchmark: N submit_sm through loa's SmppAdapter and through aiosmpplib, same server."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import uvloop
from aiosmpplib import (  # type: ignore[import-untyped]
    ESME,
    NPI,
    TON,
    AbstractBroker,
    AbstractHook,
    GenericNack,
    PhoneNumber,
    SmppCommandStatus,
    SmppMessage,
    SmppSessionState,
    SubmitSm,
    SubmitSmResp,
)
from aiosmpplib.correlator import SimpleCorrelator  # type: ignore[import-untyped]

import common
from common import (
    CpuTimes,
    add_output_arguments,
    commit,
    dirty,
    emit,
    process_cpu,
    write_results,
)
from loa.adapters.smpp.adapter import SmppAdapter
from loa.engine.connection import connect
from loa.engine.keys import limiter_key
from loa.engine.ratelimit import RateLimiter, RateSpec
from loa.message import Message
from loa.settings import RouteSettings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = ROOT / "tests" / "peers"
NODE_SERVER = PEERS / "smpp_server.js"
SMPP34_SERVER = HERE / "peers" / "smpp34_server.py"
REDIS_URL = "redis://127.0.0.1:6379/0"
ROUTE = "bench-smpp"
# a GSM-7 advisory of 60 characters: one SMS part, one submit_sm
BODY = "Bo Y te: tiem vac-xin day du de bao ve ban va gia dinh minh."
TARGET_LOA_RATE = 20_000.0
TARGET_RATIO = 3.0
TARGET_CAP_DEVIATION = 2.0  # percent


def audience(count: int, prefix: str) -> list[Message]:
    """`count` single-part messages to distinct Vietnamese mobile numbers."""
    return [
        Message(f"{prefix}-{n}", "+849" + str(n * 7_919 % 100_000_000).zfill(8), BODY)
        for n in range(count)
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# the servers: child processes we did not write the SMPP of


class PeerServer:
    """An SMPP server in a child process that prints `{"event":"listening","port":N}` first."""

    def __init__(self, command: list[str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self.thread.start()
        first = self.next_line(30)
        if first.get("event") != "listening":
            self.close()
            raise RuntimeError(f"{name} did not start: {first}")
        self.port = int(first["port"])
        self.pid = self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(line))

    def next_line(self, timeout: float) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return {}

    def stats(self) -> dict[str, Any]:
        """The node script's counters (submits seen, binds, open sessions)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return self.next_line(10)

    def cpu(self) -> float:
        return process_cpu(psutil.Process(self.pid))

    def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # both servers exit when their stdin ends
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)
        self.thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def node_server() -> Iterator[PeerServer]:
    """The npm `smpp` package's server, through our script (tests/peers/smpp_server.js)."""
    if shutil.which("node") is None:
        raise SystemExit("node is not installed: the benchmark's SMPP server is the npm smpp one")
    if not (PEERS / "node_modules" / "smpp" / "package.json").is_file():
        raise SystemExit("the npm smpp server is not installed: `make tools` installs it")
    server = PeerServer(["node", str(NODE_SERVER), "0"], "node-smpp")
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def smpp34_server() -> Iterator[PeerServer]:
    """smpp34.Server in its own Python process (benchmarks/peers/smpp34_server.py)."""
    server = PeerServer([sys.executable, str(SMPP34_SERVER), str(free_port())], "smpp34")
    try:
        yield server
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------
# loa


def loa_adapter(port: int, args: argparse.Namespace) -> SmppAdapter:
    """A realistic route: a few transceiver binds, a window, receipts asked for."""
    return SmppAdapter.create(
        ROUTE,
        {
            "port": port,
            "system_id": "loa-bench",
            "password": "secret",
            "source_addr": "BoYTe",
            "binds": args.binds,
            "window": args.window,
            "enquire_link": 30.0,
        },
    )


async def drive(
    adapter: SmppAdapter,
    messages: Sequence[Message],
    chunk: int,
    concurrency: int,
    limiter: RateLimiter | None = None,
    finished: list[tuple[float, int]] | None = None,
) -> collections.Counter[str]:
    """Send as a worker's route does (RouteRunner): `concurrency` senders, each taking the next
    chunk, each chunk waiting for the route's rate limiter (in parts) first when there is one.
    `finished` collects (time, messages) as each chunk's results come back."""
    starts = iter(range(0, len(messages), chunk))
    outcomes: collections.Counter[str] = collections.Counter()

    async def sender() -> None:
        for start in starts:
            part = messages[start : start + chunk]
            if limiter is not None:
                await limiter.acquire(sum(m.parts for m in part))
            for result in await adapter.send(part):
                outcomes[type(result).__name__] += 1
            if finished is not None:
                finished.append((time.perf_counter(), len(part)))

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return outcomes


async def warm_up(adapter: SmppAdapter, binds: int) -> None:
    """Bind every session before the clock starts."""
    messages = audience(binds * 20, "warm")
    await asyncio.gather(*(adapter.send(messages[i::binds]) for i in range(binds)))


async def bench_loa(
    server: PeerServer, args: argparse.Namespace, count: int, prefix: str
) -> dict[str, Any]:
    """N messages through SmppAdapter at full speed; wall clock and both processes' CPU."""
    messages = audience(count, prefix)
    adapter = loa_adapter(server.port, args)
    try:
        await warm_up(adapter, args.binds)
        start = CpuTimes.now(server.cpu)
        started = time.perf_counter()
        outcomes = await drive(adapter, messages, args.chunk, args.concurrency)
        elapsed = time.perf_counter() - started
        used = CpuTimes.now(server.cpu) - start
    finally:
        await adapter.aclose()
    return measured(count, elapsed, used, dict(outcomes))


def slope(points: Sequence[tuple[float, int]]) -> float:
    """Least-squares slope of the running total of messages against time, per second."""
    total = 0
    xs: list[float] = []
    ys: list[float] = []
    for at, sent in sorted(points):
        total += sent
        xs.append(at)
        ys.append(total)
    if len(xs) < 2:
        return 0.0
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def measured(
    count: int, elapsed: float, used: CpuTimes, outcomes: dict[str, int]
) -> dict[str, Any]:
    """The figures of one timed phase."""
    return {
        "messages": count,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(count / elapsed),
        "outcomes": outcomes,
        "client_cpu_us_per_message": round(used.client / count * 1e6, 1),
        "server_cpu_us_per_message": round(used.server / count * 1e6, 1),
        # share of one core each process used while sending (the node server is single-threaded)
        "client_cores_used": round(used.client / elapsed, 2),
        "server_cores_used": round(used.server / elapsed, 2),
        # what every other process on the machine used meanwhile (the cores are shared)
        "other_processes_cores_used": round(used.others / elapsed, 2),
    }


async def bench_cap(server: PeerServer, args: argparse.Namespace, burst: float) -> dict[str, Any]:
    """The same adapter behind loa's shared GCRA limiter at `--cap` parts/s for ~`--cap-seconds`.

    `achieved_per_s` is messages over the whole run, the start-up burst (`burst` seconds of
    rate at once) included; `steady_per_s` is the slope of messages answered against time, which
    the burst at the start and the last chunk's wait at the end hardly move.
    """
    count = round(args.cap * args.cap_seconds)
    messages = audience(count, "cap")
    limits = RouteSettings(
        adapter="smpp", rate=args.cap, burst=burst, chunk=args.chunk, concurrency=args.concurrency
    )
    namespace = f"bench-smpp-{uuid.uuid4().hex[:8]}"
    redis = connect(args.redis_url)
    adapter = loa_adapter(server.port, args)
    finished: list[tuple[float, int]] = []
    try:
        limiter = RateLimiter(redis, namespace, ROUTE, RateSpec.of(limits))
        await warm_up(adapter, args.binds)
        started = time.perf_counter()
        outcomes = await drive(adapter, messages, args.chunk, args.concurrency, limiter, finished)
        elapsed = time.perf_counter() - started
    finally:
        await adapter.aclose()
        await redis.delete(limiter_key(namespace, ROUTE))
        await redis.aclose()
    achieved = count / elapsed
    steady = slope([(at - started, sent) for at, sent in finished])
    return {
        "cap_parts_per_s": args.cap,
        "burst_s": burst,
        "chunk": args.chunk,
        "concurrency": args.concurrency,
        "messages": count,
        "seconds": round(elapsed, 3),
        "achieved_per_s": round(achieved, 1),
        "deviation_pct": round((achieved - args.cap) / args.cap * 100, 2),
        "steady_per_s": round(steady, 1),
        "steady_deviation_pct": round((steady - args.cap) / args.cap * 100, 2),
        "outcomes": dict(outcomes),
    }


# ---------------------------------------------------------------------------------------------
# aiosmpplib


class WindowedBroker(AbstractBroker):  # type: ignore[misc]
    """aiosmpplib's queue, handing out a message only while the window has room.

    aiosmpplib has no window of its own (it writes as fast as its queue fills, and its
    correlator scans every request in flight on each send): the same window loa uses keeps the
    comparison about the clients, not about an unbounded backlog.
    """

    def __init__(self, window: int) -> None:
        self.queue: asyncio.Queue[SmppMessage] = asyncio.Queue(maxsize=10_000)
        self.window = asyncio.Semaphore(window)

    async def enqueue(self, message: SmppMessage) -> None:
        await self.queue.put(message)

    async def dequeue(self) -> SmppMessage:
        await self.window.acquire()
        return await self.queue.get()


class CountingHook(AbstractHook):  # type: ignore[misc]
    """Counts submit_sm responses and frees a window slot for each."""

    def __init__(self, broker: WindowedBroker) -> None:
        self.broker = broker
        self.accepted = 0
        self.refused = 0
        self.target = 0
        self.done = asyncio.Event()

    def _settled(self) -> None:
        self.broker.window.release()
        if self.target and self.accepted + self.refused >= self.target:
            self.done.set()

    async def sending(self, smpp_message: SmppMessage, pdu: bytes, client_id: str) -> None:
        return None

    async def received(self, smpp_message: SmppMessage | None, pdu: bytes, client_id: str) -> None:
        if isinstance(smpp_message, SubmitSmResp | GenericNack):
            if smpp_message.command_status == SmppCommandStatus.ESME_ROK:
                self.accepted += 1
            else:
                self.refused += 1
            self._settled()

    async def send_error(self, smpp_message: SmppMessage, error: Exception, client_id: str) -> None:
        self.refused += 1
        self._settled()

    def expect(self, count: int) -> None:
        self.accepted = self.refused = 0
        self.target = count
        self.done.clear()


class SweepingCorrelator(SimpleCorrelator):  # type: ignore[misc]
    """aiosmpplib's SimpleCorrelator, expiring old entries once a second.

    The stock one scans every stored receipt correlation (kept three days) on every request and
    response: quadratic, about 8 ms a message after 20,000. Sweeping once a second keeps its
    behaviour and removes that cost, so the figure is aiosmpplib's, not its demo correlator's.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._next_sweep = 0.0

    async def _remove_expired(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            await super()._remove_expired()


def aio_submit(message: Message) -> SubmitSm:
    """The aiosmpplib request for one of our messages (part of that client's cost per message)."""
    return SubmitSm(
        short_message=message.body,
        source=PhoneNumber("BoYTe", TON.ALPHANUMERIC, NPI.UNKNOWN),
        destination=PhoneNumber(message.to.removeprefix("+"), TON.INTERNATIONAL, NPI.ISDN),
        log_id=message.id,
    )


async def bench_aiosmpplib(
    server: PeerServer, args: argparse.Namespace, count: int, stock_correlator: bool = False
) -> dict[str, Any]:
    """The same N through aiosmpplib's ESME: as many binds, the same window per bind."""
    messages = audience(count, "aio")
    broker = WindowedBroker(args.binds * args.window)
    hook = CountingHook(broker)
    esmes = [
        ESME(
            smsc_host="127.0.0.1",
            smsc_port=server.port,
            system_id=f"aio-bench-{n}",
            password="secret",
            broker=broker,
            hook=hook,
            correlator=None if stock_correlator else SweepingCorrelator(f"aio-bench-{n}"),
            log_level=logging.WARNING,
            enquire_link_interval=30.0,
        )
        for n in range(args.binds)
    ]
    tasks = [asyncio.create_task(esme.start()) for esme in esmes]
    try:
        deadline = time.monotonic() + 30
        while any(e.session_state != SmppSessionState.BOUND_TRX for e in esmes):
            if time.monotonic() > deadline:
                raise TimeoutError("aiosmpplib did not bind within 30 s")
            await asyncio.sleep(0.01)
        warm = audience(args.binds * 20, "aio-warm")
        hook.expect(len(warm))
        for message in warm:
            await broker.enqueue(aio_submit(message))
        async with asyncio.timeout(60):
            await hook.done.wait()
        hook.expect(len(messages))
        start = CpuTimes.now(server.cpu)
        started = time.perf_counter()
        for message in messages:
            await broker.enqueue(aio_submit(message))
        async with asyncio.timeout(args.timeout):
            await hook.done.wait()
        elapsed = time.perf_counter() - started
        used = CpuTimes.now(server.cpu) - start
    finally:
        for esme in esmes:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await esme.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    outcomes = {"accepted": hook.accepted, "refused": hook.refused}
    return measured(len(messages), elapsed, used, outcomes)


# ---------------------------------------------------------------------------------------------
# the run


def source_version() -> dict[str, Any]:
    """The loa commit measured, and whether the SMPP adapter had uncommitted changes."""
    return {"commit": commit(), "smpp_src_dirty": dirty("src/loa/adapters/smpp")}


def machine() -> dict[str, Any]:
    """What ran the benchmark, and the node that runs the npm smpp server."""
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {**common.machine(), "node": node}


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Each phase against a fresh server process, one after the other."""

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr)

    host = machine()
    with node_server() as server:
        say(f"loa -> node smpp server: {args.messages:,} messages")
        loa = await bench_loa(server, args, args.messages, "loa")
        loa["server_counted_submits"] = server.stats().get("submits")
    say(f"  {loa['msgs_per_s']:,}/s")
    peer = None
    if not args.skip_aiosmpplib:
        with node_server() as server:
            say(f"aiosmpplib -> node smpp server: {args.messages:,} messages")
            peer = await bench_aiosmpplib(server, args, args.messages)
            peer["server_counted_submits"] = server.stats().get("submits")
        say(f"  {peer['msgs_per_s']:,}/s")
        if args.stock_messages:
            with node_server() as server:
                say(f"aiosmpplib, stock correlator: {args.stock_messages:,} messages")
                stock = await bench_aiosmpplib(server, args, args.stock_messages, True)
            peer["stock_correlator"] = stock
            say(f"  {stock['msgs_per_s']:,}/s")
    cap = None
    if not args.skip_cap:
        with node_server() as server:
            say(f"loa behind the GCRA limiter at {args.cap:,}/s, burst {args.cap_burst}s")
            runs = []
            for _ in range(args.cap_runs):
                runs.append(await bench_cap(server, args, args.cap_burst))
                say(f"  {runs[-1]['achieved_per_s']:,}/s ({runs[-1]['deviation_pct']:+.2f}%)")
            # the median run: one stall of the machine (the cores are shared) moves one run
            cap = dict(sorted(runs, key=lambda run: run["achieved_per_s"])[len(runs) // 2])
            cap["runs"] = [
                {k: run[k] for k in ("achieved_per_s", "deviation_pct", "steady_deviation_pct")}
                for run in runs
            ]
            default_burst = RouteSettings.model_fields["burst"].default
            if args.cap_burst != default_burst:
                say(f"again with the default burst, {default_burst}s")
                cap["with_default_burst"] = await bench_cap(server, args, default_burst)
                say(f"  {cap['with_default_burst']['achieved_per_s']:,}/s")
    on_smpp34 = None
    if not args.skip_smpp34:
        with smpp34_server() as server:
            say(f"loa -> smpp34 server: {args.smpp34_messages:,} messages")
            on_smpp34 = await bench_loa(server, args, args.smpp34_messages, "s34")
        say(f"  {on_smpp34['msgs_per_s']:,}/s")
    return report(args, host, loa, peer, cap, on_smpp34)


def report(
    args: argparse.Namespace,
    host: dict[str, Any],
    loa: dict[str, Any],
    peer: dict[str, Any] | None,
    cap: dict[str, Any] | None,
    on_smpp34: dict[str, Any] | None,
) -> dict[str, Any]:
    loa_rate = loa["msgs_per_s"]
    peer_rate = peer["msgs_per_s"] if peer else None
    ratio = round(loa_rate / peer_rate, 2) if peer_rate else None
    deviation = cap["deviation_pct"] if cap else None
    # what loa alone could do on one core at the CPU it spent per message
    loa_cpu_bound = round(1e6 / loa["client_cpu_us_per_message"])
    return {
        "messages": args.messages,
        "loa_msgs_per_s": loa_rate,
        "peer_msgs_per_s": peer_rate,
        "ratio": ratio,
        "loa_cpu_us_per_message": loa["client_cpu_us_per_message"],
        "server_cpu_us_per_message": loa["server_cpu_us_per_message"],
        "loa_one_core_msgs_per_s": loa_cpu_bound,
        "cap_achieved_per_s": cap["achieved_per_s"] if cap else None,
        "cap_deviation_pct": deviation,
        "loa_on_smpp34_msgs_per_s": on_smpp34["msgs_per_s"] if on_smpp34 else None,
        "limited_by": limited_by(loa, host["cpus"] or 1),
        "notes": notes(loa, peer, cap, on_smpp34),
        "targets": {
            "loa_msgs_per_s": TARGET_LOA_RATE,
            "ratio": TARGET_RATIO,
            "cap_deviation_pct": TARGET_CAP_DEVIATION,
        },
        "meets_targets": {
            "loa_msgs_per_s": loa_rate >= TARGET_LOA_RATE,
            "ratio": ratio is not None and ratio >= TARGET_RATIO,
            "cap_deviation_pct": deviation is not None and abs(deviation) <= TARGET_CAP_DEVIATION,
        },
        "loa": loa,
        "aiosmpplib": peer,
        "tps_cap": cap,
        "loa_on_smpp34": on_smpp34,
        "config": {
            "binds": args.binds,
            "window": args.window,
            "chunk": args.chunk,
            "concurrency": args.concurrency,
            "message": f"{len(BODY)} GSM-7 characters, one part, registered_delivery 1",
            "event_loop": "uvloop (both clients)",
            "server": (
                "npm smpp 0.5.1 createServer via tests/peers/smpp_server.js: TCP_NODELAY, "
                "the responses to one read corked into one write, no receipts"
            ),
            "aiosmpplib": (
                "aiosmpplib 0.7.4 ESME, one per bind, sharing a broker that holds each bind to "
                "the same window; SubmitSm objects built inside the timed phase; its "
                "SimpleCorrelator sweeping expired entries once a second instead of on every "
                "call (the stock one is measured apart, as aiosmpplib.stock_correlator)"
            ),
            "smpp34_server": "smpp34 1.5 Server in its own Python process, accepting everything",
            "redis": args.redis_url,
            "cap_route": {
                "rate": args.cap,
                "burst_s": args.cap_burst,
                "chunk": args.chunk,
                "concurrency": args.concurrency,
                "unit": "parts",
            },
        },
        "machine": host,
        "loa_source": source_version(),
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def notes(
    loa: dict[str, Any],
    peer: dict[str, Any] | None,
    cap: dict[str, Any] | None,
    on_smpp34: dict[str, Any] | None,
) -> list[str]:
    """What a reader of the figures should know."""
    said = [
        f"loa spent {loa['client_cpu_us_per_message']} us of CPU per message: "
        f"{round(1e6 / loa['client_cpu_us_per_message']):,}/s on a core of its own"
    ]
    if peer:
        said.append(
            f"aiosmpplib spent {peer['client_cpu_us_per_message']} us per message; its stock "
            "SimpleCorrelator scans every stored receipt correlation on each request, so it "
            "is measured apart (stock_correlator) and swept once a second in the main run"
        )
    if cap and "with_default_burst" in cap:
        low = cap["with_default_burst"]
        said.append(
            f"TPS cap with the route's default burst ({low['burst_s']} s of rate, fewer tokens "
            f"than one chunk of {cap['chunk']}): {low['achieved_per_s']}/s "
            f"({low['deviation_pct']:+}%). It falls short whenever sending a chunk outlasts the "
            "burst: the senders gather their tokens in step, then all send at once while the "
            f"limiter idles. A burst of at least chunk/rate ({cap['burst_s']} s here) holds it"
        )
    if on_smpp34:
        said.append(
            "loa_on_smpp34 is smpp34's server rate, not loa's: its Python bridge used "
            f"{on_smpp34['server_cpu_us_per_message']} us of CPU per submit_sm "
            f"({on_smpp34['server_cores_used']} cores), "
            f"loa {on_smpp34['client_cpu_us_per_message']} us"
        )
    return said


def limited_by(run: dict[str, Any], cpus: int) -> str:
    """What held the rate down, from where the CPU went during the run."""
    client, server = run["client_cores_used"], run["server_cores_used"]
    others = run["other_processes_cores_used"]
    shares = (
        f"loa {client} of a core ({run['client_cpu_us_per_message']} us a message), the node "
        f"server {server} ({run['server_cpu_us_per_message']} us a submit_sm; it is "
        f"single-threaded), other processes {others}, of {cpus} cores"
    )
    if others >= 0.25 * cpus:
        return f"the machine: other processes held the cores; {shares}"
    if server >= 0.85:
        return f"the peer server, at a full core: {shares}"
    if client >= 0.85:
        return f"loa's process, at a full core: {shares}"
    if client + server + others >= 0.9 * cpus:
        return f"the cores, shared by client and server: {shares}"
    return f"latency, neither side at a full core: {shares}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--binds", type=int, default=4, help="SMPP sessions of the route")
    parser.add_argument("--window", type=int, default=64, help="submit_sm in flight per bind")
    parser.add_argument("--chunk", type=int, default=500, help="messages per adapter.send")
    parser.add_argument("--concurrency", type=int, default=4, help="chunks in flight")
    parser.add_argument("--cap", type=float, default=5_000.0, help="parts/s of the capped run")
    parser.add_argument("--cap-seconds", type=float, default=10.0)
    parser.add_argument("--cap-runs", type=int, default=3, help="capped runs; the median counts")
    parser.add_argument(
        "--cap-burst",
        type=float,
        default=0.2,
        help="the capped route's burst in seconds: at least a chunk's worth (chunk / cap)",
    )
    parser.add_argument("--smpp34-messages", type=int, default=20_000)
    parser.add_argument(
        "--stock-messages",
        type=int,
        default=5_000,
        help="also run aiosmpplib with its stock (quadratic) correlator on this many; 0 skips",
    )
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per phase at most")
    parser.add_argument("--skip-aiosmpplib", action="store_true")
    parser.add_argument("--skip-cap", action="store_true")
    parser.add_argument("--skip-smpp34", action="store_true")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if min(args.messages, args.binds, args.window, args.chunk, args.concurrency, args.cap_runs) < 1:
        parser.error("counts must be positive")
    if not args.redis_url.startswith(("redis://127.0.0.1", "redis://localhost")):
        parser.error("the rate limiter's Redis must be local (redis://127.0.0.1:...)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the result, and keep it in benchmarks/results/."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = uvloop.run(run_all(args))
    emit(result, args.json, write_results("smpp", result, args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
