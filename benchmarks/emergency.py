"""Emergency benchmark: how fast an emergency alert overtakes a bulk campaign saturating its routes.

Two routes of the file adapter (one JSON line per message, with the time it left), each limited
to `--route-rate` parts per second, are served by real worker processes under the supervisor.
A bulk-lane campaign, planned through the campaign service like any operator's, keeps every
sender of both routes busy with a backlog that outlasts the test. Then an emergency-lane alert
is created, approved and launched through the same service, and the sink files tell, to the
message:

- the time from the launch call to the alert's first message and to its last, against the
  product's bound: the alert's parts at the route rate, plus one second;
- every bulk message that left a route between the alert's first and last message on that
  route, whatever batch it came from: a sender that holds a bulk batch must put its rest back
  as soon as the alert is queued, so only the slices already handed to the adapter may leave.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import redis
import uvloop

import planner_audience
from common import (
    add_output_arguments,
    cpu_seconds,
    cpu_used,
    emit,
    exit_on_signals,
    loadavg,
    machine,
    source_version,
    write_results,
)
from engine import delete_namespace
from loa.access.identity import Role, program
from loa.campaigns.controls import campaign_controls
from loa.campaigns.service import Campaigns
from loa.engine.connection import connect
from loa.engine.embedded import EmbeddedRedis
from loa.engine.keys import shard_keys
from loa.engine.queue import Queues
from loa.engine.supervisor import Supervisor
from loa.message import FINAL
from loa.settings import RouteSettings, Settings

OPERATOR = program("bench-operator", Role.OPERATOR)
APPROVER = program("bench-approver", Role.APPROVER)

ROUTES = ("sms-a", "sms-b")  # Viettel on one, every other carrier on the other
TARGET_FIRST_S = 1.0
# sms_ascii folds both texts to ASCII: the alert's starts with this, the bulk advice's does not
ALERT_MARK = "KHAN CAP"
BULK_SMS = (
    "Bộ Y tế: hãy đeo khẩu trang nơi đông người, rửa tay thường xuyên và tiêm đủ liều vắc xin."
)
ALERT_SMS = (
    "KHẨN CẤP - Bộ Y tế: lũ lớn tại {{ district }}. Di chuyển lên cao ngay, "
    "mang thuốc thiết yếu. Cấp cứu: 115."
)
DISTRICTS = ("Hội An", "Điện Bàn", "Tam Kỳ", "Hòa Vang", "Liên Chiểu")
BULK_MARGIN_S = 20.0  # the bulk backlog outlasts warm-up, alert and tail by this much


# ---------------------------------------------------------------------------------------------
# settings, plans and audiences


def route_settings(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """One file-adapter route at `route_rate` parts per second, the product's other defaults."""
    route: dict[str, Any] = {
        "adapter": "file",
        "rate": args.route_rate,
        "unit": "parts",
        "concurrency": args.concurrency,
        "shards": args.shards,
        "options": {"path": str(data_dir / "sink" / "{route}-{pid}.jsonl")},
    }
    if args.chunk:
        route["chunk"] = args.chunk
    return route


def bench_settings(args: argparse.Namespace, url: str, data_dir: Path, namespace: str) -> Settings:
    """Two file-adapter routes, SMS routed by carrier."""
    return Settings.from_mapping(
        {
            "redis_url": url,
            "data_dir": str(data_dir),
            "namespace": namespace,
            "worker": {"metrics_port": 0, "drain_timeout": 10.0},
            "queue": {"batch_size": args.batch_size},
            "routes": dict.fromkeys(ROUTES, route_settings(args, data_dir)),
            "channels": {"sms": {"default": ROUTES[1], "carriers": {"viettel": ROUTES[0]}}},
        },
        source="emergency benchmark settings",
    )


def write_plan(path: Path, name: str, lane: str, template: str) -> Path:
    """An SMS-only plan folded to ASCII, as examples/emergency-flood.plan.toml but one channel."""
    path.write_text(
        "\n".join(
            [
                f"name = {json.dumps(name, ensure_ascii=False)}",
                f'lane = "{lane}"',
                'channels = ["sms"]',
                "sms_ascii = true",
                "[templates]",
                f"sms = {json.dumps(template, ensure_ascii=False)}",
                "[schedule]",
                'expires = "6h"',
                "",
            ]
        ),
        encoding="utf-8",
    )
    return path


def write_alert_audience(path: Path, count: int) -> Path:
    """`count` people of the flooded districts: Viettel and Vinaphone numbers in turn."""
    rows = ["phone,district"]
    for n in range(count):
        prefix = "096" if n % 2 == 0 else "091"
        rows.append(f"{prefix}{n:07d},{DISTRICTS[n % len(DISTRICTS)]}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# measuring


async def finished(queues: Queues, settings: Settings, campaign: str) -> int:
    """Messages of `campaign` with a final outcome."""
    shards = [
        keys
        for route in ROUTES
        for keys in shard_keys(settings.namespace, route, settings.route(route).shards)
    ]
    counts = await queues.campaign_stats(shards, campaign)
    return sum(counts[str(outcome)] for outcome in FINAL)


def read_sink(sink: Path) -> list[dict[str, Any]]:
    """Every line the file adapter wrote, in the order the messages left."""
    lines: list[dict[str, Any]] = []
    for path in sorted(sink.glob("*.jsonl")):
        with path.open("rb") as handle:
            lines.extend(orjson.loads(line) for line in handle if line.strip())
    lines.sort(key=lambda line: line["ts"])
    return lines


async def _scenario(
    args: argparse.Namespace, settings: Settings, workdir: Path, supervisor: Supervisor
) -> dict[str, Any]:
    """Bulk first, then the alert once the bulk runs steadily; the launch's times."""
    client = connect(settings.redis_url or "")
    try:
        campaigns = Campaigns(settings, client)
        queues = Queues(client, settings.namespace)
        bulk_audience = workdir / "bulk.csv"
        planner_audience.write_audience(bulk_audience, args.bulk)
        bulk_plan = write_plan(workdir / "bulk.plan.toml", "Bulk advisory", "bulk", BULK_SMS)
        bulk = await campaigns.create(bulk_plan, bulk_audience, OPERATOR)
        await campaigns.approve(bulk.id, APPROVER)
        started = time.perf_counter()
        report = await campaigns.launch(bulk.id)
        bulk_planned_s = time.perf_counter() - started
        # the alert is ready to go (created and approved) before the clock starts
        alert_plan = write_plan(
            workdir / "alert.plan.toml", "Cảnh báo lũ khẩn cấp", "emergency", ALERT_SMS
        )
        alert_audience = write_alert_audience(workdir / "alert.csv", args.alert)
        alert = await campaigns.create(alert_plan, alert_audience, OPERATOR)
        await campaigns.approve(alert.id, APPROVER)
        deadline = time.monotonic() + args.timeout
        # the workers may still start; a batch is counted only once settled, the sink at once
        while not any(path.stat().st_size for path in (workdir / "sink").glob("*.jsonl")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no bulk message sent in {args.timeout:.0f}s: no workers?")
            await asyncio.sleep(0.05)
        await asyncio.sleep(args.warmup)  # every sender of both routes holds a bulk batch
        bulk_done_before = await finished(queues, settings, bulk.id)
        watched = supervisor.pids()
        cpu_before = cpu_seconds(watched)
        launched_at = time.time()
        planning_cpu = time.process_time()
        alert_report = await campaigns.launch(alert.id)
        planning_cpu = time.process_time() - planning_cpu
        queued_at = time.time()
        deadline = time.monotonic() + args.timeout
        while (done := await finished(queues, settings, alert.id)) < alert_report.queued:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the alert sent {done} of {alert_report.queued} in time")
            await asyncio.sleep(0.01)
        settled_at = time.time()
        cpu_after = cpu_seconds(watched)
        bulk_done_after = await finished(queues, settings, bulk.id)
        await asyncio.sleep(args.tail)  # bulk resumes after the alert: show it in the sink
        await campaigns.act(bulk.id, "cancel")  # the workers then drain at once
        return {
            "bulk_queued": report.queued,
            "bulk_planning_s": round(bulk_planned_s, 3),
            "bulk_finished_at_launch": bulk_done_before,
            "bulk_left_when_alert_settled": report.queued - bulk_done_after,
            "alert_queued": alert_report.queued,
            "alert_invalid": alert_report.invalid,
            "launched_at": launched_at,
            "queued_at": queued_at,
            "settled_at": settled_at,
            "alert_planning_cpu_s": round(planning_cpu, 3),
            "worker_cpu_s_during_alert": round(cpu_used(cpu_before, cpu_after, watched), 3),
        }
    finally:
        await client.aclose()


def analyse(lines: list[dict[str, Any]], launched_at: float, rate: float) -> dict[str, Any]:
    """The alert's first and last message, and every bulk message that left a route between
    the alert's first and last message on that route (ties counted against us)."""
    alert = [line for line in lines if line["body"].startswith(ALERT_MARK)]
    if not alert:
        raise RuntimeError("no alert message reached the sink")
    bulk = [line for line in lines if not line["body"].startswith(ALERT_MARK)]
    routes: dict[str, Any] = {}
    during = 0
    for route in ROUTES:
        mine = [line for line in alert if line["route"] == route]
        if not mine:
            continue
        first, last = mine[0]["ts"], mine[-1]["ts"]
        parts = sum(int(line["parts"]) for line in mine)
        between = sum(1 for line in bulk if line["route"] == route and first <= line["ts"] <= last)
        during += between
        routes[route] = {
            "alert_messages": len(mine),
            "alert_parts": parts,
            "first_message_s": round(first - launched_at, 3),
            "last_message_s": round(last - launched_at, 3),
            "bound_s": round(parts / rate + 1, 3),
            "bulk_sent_during_alert": between,
        }
    parts = sum(int(line["parts"]) for line in alert)
    ids = Counter((line["route"], line["id"]) for line in alert)
    first, last = alert[0]["ts"], alert[-1]["ts"]
    return {
        "alert_first_message_s": round(first - launched_at, 3),
        "alert_last_message_s": round(last - launched_at, 3),
        "alert_messages": len(alert),
        "alert_parts": parts,
        "bulk_sent_during_alert": during,
        "bound_s": round(parts / rate + 1, 3),
        "alert_duplicates": sum(n - 1 for n in ids.values()),
        "alert_parts_per_s": round(parts / (last - first), 1) if last > first else None,
        "bulk_sent_after_alert": sum(1 for line in bulk if line["ts"] > last),
        "by_route": routes,
    }


def in_adapter_hands(args: argparse.Namespace, data_dir: Path) -> int:
    """Bulk messages the adapters may hold at once: every sender of a route with one slice
    (the route's burst in parts, at most a chunk), on both routes."""
    limits = RouteSettings(**route_settings(args, data_dir))
    one_slice = min(limits.chunk, max(1, int(limits.rate * limits.burst)))
    return len(ROUTES) * args.processes * args.concurrency * one_slice


# ---------------------------------------------------------------------------------------------
# the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    """A server (embedded, or the given local Redis with a namespace of its own), the workers,
    the scenario, then the sink read back and every bulk message in the window counted."""
    host = machine()
    source = source_version()
    namespace = f"bench-emg-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="loa-emergency-") as tmp:
        workdir = Path(tmp)
        server = None
        url = args.redis_url
        if not url:
            server = EmbeddedRedis(workdir / "redis")
            url = server.start()
        try:
            settings = bench_settings(args, url, workdir, namespace)
            allowance = in_adapter_hands(args, workdir)
            supervisor = Supervisor(settings, processes=args.processes, controls=campaign_controls)
            supervisor.start()
            try:
                wall = time.perf_counter()
                scene = uvloop.run(_scenario(args, settings, workdir, supervisor))
                wall = time.perf_counter() - wall
            finally:
                killed = supervisor.stop()
                with redis.Redis.from_url(url) as sync:
                    delete_namespace(sync, namespace)
            lines = read_sink(workdir / "sink")
        finally:
            if server is not None:
                server.stop()
    result = analyse(lines, scene["launched_at"], args.route_rate)
    limits = settings.route(ROUTES[0])
    targets = {
        "alert_first_message_s": TARGET_FIRST_S,
        "alert_last_message_s": result["bound_s"],
        "bulk_sent_during_alert": allowance,
    }
    return {
        **{key: result[key] for key in targets},
        "alert_messages": result["alert_messages"],
        "bound_s": result["bound_s"],
        "route_rate": args.route_rate,
        "targets": targets,
        "meets_targets": {key: result[key] <= bound for key, bound in targets.items()},
        "saturated": scene["bulk_left_when_alert_settled"] > 0,
        "detail": {
            **{key: value for key, value in result.items() if key not in targets},
            "planning_s": round(scene["queued_at"] - scene["launched_at"], 3),
            "alert_queued": scene["alert_queued"],
            "alert_invalid": scene["alert_invalid"],
        },
        "bulk": {
            "recipients": args.bulk,
            "queued": scene["bulk_queued"],
            "planning_s": scene["bulk_planning_s"],
            "finished_at_launch": scene["bulk_finished_at_launch"],
            "left_when_alert_settled": scene["bulk_left_when_alert_settled"],
        },
        "cpu_seconds": {
            "alert_planning": scene["alert_planning_cpu_s"],
            "workers_launch_to_settled": scene["worker_cpu_s_during_alert"],
            "launch_to_settled_wall_s": round(scene["settled_at"] - scene["launched_at"], 3),
        },
        "note": (
            "bound_s is the alert's parts at the route rate plus one second (each route carries "
            "about half of them, so its own bound, by_route.bound_s, is tighter); "
            "bulk_sent_during_alert counts every bulk message that left a route between the "
            "alert's first and last message on that route; its target is what the adapters may "
            "hold at once (routes x processes x concurrency senders, one slice each: the "
            "route's burst in parts, at most a chunk)"
        ),
        "config": {
            "routes": list(ROUTES),
            "adapter": "file (one JSON line per message with its send time)",
            "route_rate_parts_per_s": args.route_rate,
            "burst_s": limits.burst,
            "chunk": limits.chunk,
            "processes": args.processes,
            "concurrency": args.concurrency,
            "shards": args.shards,
            "batch_size": args.batch_size,
            "warmup_s": args.warmup,
            "server": args.redis_url or "embedded (loa.engine.embedded, unix socket)",
            "killed_at_stop": killed,
            "wall_s": round(wall, 1),
        },
        "machine": {**host, "loadavg_at_end": loadavg()},
        "loa_source": source,
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; the alert and bulk sizes follow the route rate unless given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--route-rate", type=float, default=200.0, help="parts/s of each route (default 200)"
    )
    parser.add_argument(
        "--alert", type=int, default=0,
        help="the alert's recipients (default: two seconds of both routes, at least 50)",
    )  # fmt: skip
    parser.add_argument(
        "--bulk", type=int, default=0,
        help="the bulk campaign's rows (default: enough to outlast the run on both routes)",
    )  # fmt: skip
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="senders per route and process")
    parser.add_argument("--shards", type=int, default=4, help="shards per route")
    parser.add_argument(
        "--chunk", type=int, default=0, help="messages per adapter call (default: the product's)"
    )
    parser.add_argument("--batch-size", type=int, default=200, help="messages per batch")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of bulk before")
    parser.add_argument("--tail", type=float, default=0.5, help="seconds of bulk after")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds the alert may take")
    parser.add_argument(
        "--redis-url", default="",
        help="a local Redis (redis://127.0.0.1:...) instead of the embedded server",
    )  # fmt: skip
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.route_rate <= 0:
        parser.error("--route-rate must be positive: the bulk campaign must outlast the test")
    if min(args.alert, args.bulk, args.chunk) < 0:
        parser.error("sizes must not be negative")
    if min(args.processes, args.concurrency, args.shards, args.batch_size) < 1:
        parser.error("counts must be positive")
    if args.redis_url and not args.redis_url.startswith(("redis://127.0.0.1", "redis://localhost")):
        parser.error("--redis-url must be a local Redis (redis://127.0.0.1:...)")
    rate = args.route_rate
    args.alert = args.alert or max(50, math.ceil(2 * rate))
    if not args.bulk:
        seconds = args.warmup + args.alert / rate + args.tail + BULK_MARGIN_S
        senders = len(ROUTES) * args.processes * args.concurrency
        args.bulk = max(math.ceil(len(ROUTES) * rate * seconds), 2 * senders * args.batch_size)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the result, and keep it in benchmarks/results/."""
    args = parse_args(argv)
    os.environ.setdefault("LOA_LOG_LEVEL", "warning")
    exit_on_signals()
    result = run(args)
    path = write_results("emergency", result, args.output_dir, ensure_ascii=False)
    emit(result, args.json, path, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
