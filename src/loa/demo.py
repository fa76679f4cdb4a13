"""`loa demo`: a synthetic campaign over simulated routes, with live progress and a summary."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import orjson
import uvloop
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from loa.engine.connection import connect
from loa.engine.embedded import free_port
from loa.engine.keys import shard_keys
from loa.engine.producer import Producer
from loa.engine.queue import Queues
from loa.engine.supervisor import Supervisor
from loa.log import setup_logging
from loa.message import Lane, Message
from loa.settings import Settings
from loa.status import RouteStatus, route_status

# route -> (share of the audience, adapter options, limits): simulated carriers and providers
DEMO_ROUTES: dict[str, tuple[float, dict[str, object]]] = {
    "sms-viettel": (
        0.40,
        {
            "rate": 9000,
            "unit": "parts",
            "concurrency": 8,
            "options": {"latency": 0.004, "retry_ratio": 0.01, "fail_ratio": 0.002},
        },
    ),
    "sms-vinaphone": (
        0.20,
        {
            "rate": 5000,
            "unit": "parts",
            "concurrency": 8,
            "options": {"latency": 0.004, "retry_ratio": 0.01, "fail_ratio": 0.002},
        },
    ),
    "zalo-zns": (
        0.30,
        {
            "rate": 8000,
            "unit": "messages",
            "concurrency": 8,
            "options": {"latency": 0.01, "retry_ratio": 0.005, "fail_ratio": 0.01},
        },
    ),
    "email": (
        0.10,
        {
            "rate": 2500,
            "unit": "messages",
            "concurrency": 4,
            "options": {"latency": 0.02, "retry_ratio": 0.02},
        },
    ),
}
BODIES = (
    "Bo Y te: tiem vac-xin day du de bao ve ban va gia dinh.",
    "Bộ Y tế khuyến cáo: đeo khẩu trang, rửa tay thường xuyên, tiêm vắc-xin đầy đủ.",
)


def demo_settings(base: Settings) -> Settings:
    """The demo's routes and a namespace of its own, on the configured or embedded Redis."""
    routes = {
        name: {
            "adapter": "null",
            "shards": 2,
            "chunk": 100,
            "max_attempts": 3,
            "backoff": 0.2,
            "backoff_max": 1.0,
            "timeout": 4.0,
            **limits,
        }
        for name, (_, limits) in DEMO_ROUTES.items()
    }
    data = base.model_dump(mode="json")
    data.update(namespace=f"demo-{int(time.time())}", routes=routes)
    data["worker"] = {
        **data["worker"],
        "claim_idle": 5.0,
        "drain_timeout": 10.0,
        "metrics_port": free_port(),
    }
    return Settings.from_mapping(data, source="demo settings")


def audience(route: str, count: int, seed: int) -> Iterator[Message]:
    """Synthetic recipients: Vietnamese mobile numbers, some long (two-part) messages."""
    rng = random.Random(seed)
    for n in range(count):
        body = BODIES[rng.random() < 0.3]
        parts = 2 if len(body) > 70 else 1
        to = f"demo-{n}@example.org" if route == "email" else f"+849{rng.randrange(10**8):08d}"
        yield Message(id=f"{route}-{n}", to=to, body=body, parts=parts)


def split(total: int) -> dict[str, int]:
    """How many messages each route gets."""
    counts = {name: int(total * share) for name, (share, _) in DEMO_ROUTES.items()}
    counts["sms-viettel"] += total - sum(counts.values())
    return counts


async def _run(
    settings: Settings, url: str, counts: dict[str, int], quiet: bool
) -> list[RouteStatus]:
    redis = connect(url)
    try:
        queues = Queues(redis, settings.namespace)
        for name in counts:
            await queues.prepare(shard_keys(settings.namespace, name, settings.route(name).shards))
        producer = Producer(queues, settings)
        enqueue = asyncio.gather(
            *(
                producer.enqueue(name, audience(name, n, seed=i), lane=Lane.NORMAL, campaign="demo")
                for i, (name, n) in enumerate(counts.items())
            )
        )
        try:
            return await _watch(queues, settings, counts, enqueue, quiet)
        finally:
            enqueue.cancel()
    finally:
        await redis.aclose()


async def _watch(
    queues: Queues,
    settings: Settings,
    counts: dict[str, int],
    enqueue: asyncio.Future[Any],
    quiet: bool,
) -> list[RouteStatus]:
    progress = Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.completed:>8.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[rate]:>7} msg/s"),
        TimeElapsedColumn(),
    )
    tasks: dict[str, TaskID] = {
        name: progress.add_task(name, total=n, rate="0") for name, n in counts.items()
    }
    started = time.monotonic()
    with Live(progress, refresh_per_second=8, console=Console(stderr=True, quiet=quiet)):
        while True:
            rows = [await route_status(queues, settings, name) for name in counts]
            elapsed = max(time.monotonic() - started, 1e-6)
            for row in rows:
                progress.update(
                    tasks[row.route], completed=row.finished, rate=f"{row.finished / elapsed:,.0f}"
                )
            if enqueue.done() and all(r.finished >= counts[r.route] for r in rows):
                await enqueue  # surface an enqueue error, if any
                return rows
            await asyncio.sleep(0.2)


async def _forget(url: str, namespace: str) -> None:
    """The demo's keys are removed when it ends; the embedded server keeps nothing of it."""
    redis = connect(url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{namespace}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await redis.delete(*keys[start : start + 500])
    finally:
        await redis.aclose()


def summary_table(rows: list[RouteStatus], elapsed: float) -> Table:
    """The end-of-demo table: one row per route, then the totals."""
    table = Table(title=f"loa demo: {sum(r.finished for r in rows):,} messages in {elapsed:.1f}s")
    columns = ("route", "accepted", "failed", "dead", "expired", "retried", "throttled", "msg/s")
    for column in columns:
        table.add_column(column, justify="left" if column == "route" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r.route,
            f"{r.accepted:,}",
            f"{r.failed:,}",
            f"{r.dead:,}",
            f"{r.expired:,}",
            f"{r.retried:,}",
            f"{r.throttled:,}",
            f"{r.finished / elapsed:,.0f}",
        )
    return table


def run_demo(base: Settings, messages: int, processes: int | None, as_json: bool) -> int:
    """Start workers, queue the demo campaign, watch it to the end, print the summary."""
    settings = demo_settings(base)
    os.environ.setdefault("LOA_LOG_LEVEL", "warning")  # the live view is the demo's output
    setup_logging()
    counts = split(messages)
    console = Console(stderr=as_json)
    supervisor = Supervisor(settings, processes)
    supervisor.start()
    started = time.monotonic()
    try:
        console.print(
            f"[bold]loa demo[/bold]: {messages:,} messages over {len(counts)} routes, "
            f"{supervisor.count} worker processes, Redis at {supervisor.redis_url}, "
            f"metrics on http://127.0.0.1:{supervisor.metrics_port}/metrics"
        )
        rows = uvloop.run(_run(settings, supervisor.redis_url, counts, quiet=as_json))
        supervisor.drain()
        uvloop.run(_forget(supervisor.redis_url, settings.namespace))
    finally:
        supervisor.stop()
    elapsed = time.monotonic() - started
    if as_json:
        print(
            orjson.dumps(
                {
                    "messages": messages,
                    "seconds": round(elapsed, 3),
                    "routes": [asdict(r) for r in rows],
                }
            ).decode()
        )
    else:
        console.print(summary_table(rows, elapsed))
    return 0 if all(r.finished == counts[r.route] for r in rows) else 1
