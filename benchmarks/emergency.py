"""Emergency benchmark: how fast an emergency alert overtakes a bulk campaign saturating its routes.

Two rate-limited routes of the file adapter (one JSON line per message, with the time it left)
are served by real worker processes under the supervisor. A bulk-lane campaign, planned
through the campaign service like any operator's, keeps every sender of both routes busy with
a backlog that outlasts the test. Then an emergency-lane alert is created, approved and
launched through the same service, and the sink files tell, to the message:

- the time from the launch call to the alert's first message and to its last;
- every bulk message sent between the launch and the alert's last message, each sorted by
  where it came from: a batch a sender already held when the launch began (`held_at_launch`),
  a batch taken while the alert was being planned (`taken_while_planning`), or a batch taken
  after the whole alert was on the queues (`taken_after_queued`, what the target forbids).

Which batches the senders held is read at the launch's start and end with one atomic script
over the bulk streams' pending entries, so the sorting is exact, not estimated.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
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
from loa.campaigns.service import Campaigns
from loa.engine.connection import RedisClient, connect
from loa.engine.embedded import EmbeddedRedis
from loa.engine.envelope import unpack
from loa.engine.keys import shard_keys
from loa.engine.queue import GROUP, Queues
from loa.engine.supervisor import Supervisor
from loa.message import FINAL, Lane
from loa.settings import Settings

OPERATOR = program("bench-operator", Role.OPERATOR)
APPROVER = program("bench-approver", Role.APPROVER)

ROUTES = ("sms-a", "sms-b")  # Viettel on one, every other carrier on the other
TARGET_FIRST_S = 1.0
TARGET_BULK_BEYOND_HELD = 0
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
# every pending entry of the given streams with its envelope, read in one atomic step
HELD_SCRIPT = """
local out = {}
for _, stream in ipairs(KEYS) do
  for _, p in ipairs(redis.call('XPENDING', stream, ARGV[1], '-', '+', tonumber(ARGV[2]))) do
    local entry = redis.call('XRANGE', stream, p[1], p[1])
    if entry[1] then
      table.insert(out, {p[1], entry[1][2]})
    end
  end
end
return out
"""


# ---------------------------------------------------------------------------------------------
# settings, plans and audiences


def bench_settings(args: argparse.Namespace, url: str, data_dir: Path, namespace: str) -> Settings:
    """Two file-adapter routes at `rate` messages per second each, SMS routed by carrier."""
    route = {
        "adapter": "file",
        "rate": args.rate,
        "unit": "messages",
        "chunk": args.chunk,
        "concurrency": args.concurrency,
        "shards": args.shards,
        "options": {"path": str(data_dir / "sink" / "{route}-{pid}.jsonl")},
    }
    return Settings.from_mapping(
        {
            "redis_url": url,
            "data_dir": str(data_dir),
            "namespace": namespace,
            "worker": {"metrics_port": 0, "drain_timeout": 10.0},
            "queue": {"batch_size": args.batch_size},
            "routes": dict.fromkeys(ROUTES, route),
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


def bulk_streams(settings: Settings) -> list[str]:
    """The bulk lane's stream of every shard of both routes."""
    return [
        keys.stream(Lane.BULK)
        for route in ROUTES
        for keys in shard_keys(settings.namespace, route, settings.route(route).shards)
    ]


async def held(client: RedisClient, streams: list[str]) -> set[tuple[str, str]]:
    """(route, message id) of every message in a batch some sender holds right now."""
    entries: Any = await client.eval(HELD_SCRIPT, len(streams), *streams, GROUP, 100_000)
    found: set[tuple[str, str]] = set()
    for _entry_id, fields in entries:
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        batch = unpack(values[b"b"])
        found.update((batch.route, message.id) for message in batch.messages)
    return found


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
    """Bulk first, then the alert once the bulk runs steadily; times and held batches."""
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
        bulk_queued = report.queued
        # the alert is ready to go (created and approved) before the clock starts
        alert_plan = write_plan(
            workdir / "alert.plan.toml", "Cảnh báo lũ khẩn cấp", "emergency", ALERT_SMS
        )
        alert_audience = write_alert_audience(workdir / "alert.csv", args.alert)
        alert = await campaigns.create(alert_plan, alert_audience, OPERATOR)
        await campaigns.approve(alert.id, APPROVER)
        deadline = time.monotonic() + args.timeout
        while await finished(queues, settings, bulk.id) == 0:  # the workers may still start
            if time.monotonic() > deadline:
                raise TimeoutError(f"no bulk message sent in {args.timeout:.0f}s: no workers?")
            await asyncio.sleep(0.05)
        await asyncio.sleep(args.warmup)  # every sender of both routes holds a bulk batch
        bulk_done_before = await finished(queues, settings, bulk.id)
        streams = bulk_streams(settings)
        watched = supervisor.pids()
        cpu_before = cpu_seconds(watched)
        held_at_launch = await held(client, streams)
        launched_at = time.time()
        planning_cpu = time.process_time()
        alert_report = await campaigns.launch(alert.id)
        planning_cpu = time.process_time() - planning_cpu
        queued_at = time.time()
        held_at_queued = await held(client, streams)
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
            "bulk_campaign": bulk.id,
            "alert_campaign": alert.id,
            "bulk_queued": bulk_queued,
            "bulk_planning_s": round(bulk_planned_s, 3),
            "bulk_finished_at_launch": bulk_done_before,
            "bulk_left_when_alert_settled": bulk_queued - bulk_done_after,
            "alert_queued": alert_report.queued,
            "alert_invalid": alert_report.invalid,
            "launched_at": launched_at,
            "queued_at": queued_at,
            "settled_at": settled_at,
            "alert_planning_cpu_s": round(planning_cpu, 3),
            "worker_cpu_s_during_alert": round(cpu_used(cpu_before, cpu_after, watched), 3),
            "held_at_launch": held_at_launch,
            "held_at_queued": held_at_queued,
        }
    finally:
        await client.aclose()


def analyse(scene: dict[str, Any], lines: list[dict[str, Any]], senders: int) -> dict[str, Any]:
    """Times of the alert's first and last message, and every bulk message in between, sorted."""
    t0 = scene["launched_at"]
    alert = [line for line in lines if line["body"].startswith(ALERT_MARK)]
    bulk = [line for line in lines if not line["body"].startswith(ALERT_MARK)]
    if not alert:
        raise RuntimeError("no alert message reached the sink")
    first, last = alert[0]["ts"], alert[-1]["ts"]
    held0, held1 = scene["held_at_launch"], scene["held_at_queued"]
    sent_before = {(line["route"], line["id"]) for line in bulk if line["ts"] <= t0}
    during = [line for line in bulk if t0 < line["ts"] <= last]
    sources: Counter[str] = Counter()
    by_route: dict[str, Counter[str]] = {route: Counter() for route in ROUTES}
    for line in during:
        key = (line["route"], line["id"])
        if key in held0:
            source = "held_at_launch"
        elif key in held1 or line["ts"] <= scene["queued_at"]:  # sent then: taken before
            source = "taken_while_planning"
        else:
            source = "taken_after_queued"
        sources[source] += 1
        by_route[line["route"]][source] += 1
    routes = {}
    for route in ROUTES:
        mine = [line for line in alert if line["route"] == route]
        routes[route] = {
            "alert_messages": len(mine),
            "first_message_s": round(mine[0]["ts"] - t0, 3) if mine else None,
            "last_message_s": round(mine[-1]["ts"] - t0, 3) if mine else None,
            "bulk_between_launch_and_last": dict(by_route[route]),
        }
    bulk_during = len(during)
    beyond = sources["taken_after_queued"]
    ids = Counter((line["route"], line["id"]) for line in alert)
    return {
        "first_message_s": round(first - t0, 3),
        "last_message_s": round(last - t0, 3),
        "planning_s": round(scene["queued_at"] - t0, 3),
        "alert_sent": len(alert),
        "alert_duplicates": sum(n - 1 for n in ids.values()),
        "alert_msgs_per_s": round(len(alert) / (last - first), 1) if last > first else None,
        "bulk_between_launch_and_last": bulk_during,
        "bulk_sources": {
            "held_at_launch": sources["held_at_launch"],
            "taken_while_planning": sources["taken_while_planning"],
            "taken_after_queued": beyond,
        },
        "bulk_after_first_alert_message": sum(1 for line in during if line["ts"] > first),
        "held_at_launch_unsent": len(held0 - sent_before),
        "held_bound": senders * scene["batch_size"],
        "bulk_sent_after_alert": sum(1 for line in bulk if line["ts"] > last),
        "by_route": routes,
    }


# ---------------------------------------------------------------------------------------------
# the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    """A server (embedded, or the given local Redis with a namespace of its own), the workers,
    the scenario, then the sink read back and every bulk message in the window sorted."""
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
            supervisor = Supervisor(settings, processes=args.processes)
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
    senders = len(ROUTES) * args.processes * args.concurrency
    scene["batch_size"] = args.batch_size
    result = analyse(scene, lines, senders)
    first, beyond = result["first_message_s"], result["bulk_sources"]["taken_after_queued"]
    return {
        "alert_recipients": args.alert,
        **{k: result[k] for k in ("first_message_s", "last_message_s", "planning_s")},
        "bulk_between_launch_and_last": result["bulk_between_launch_and_last"],
        "bulk_beyond_held": beyond,
        "targets": {
            "first_message_s": TARGET_FIRST_S,
            "bulk_beyond_held": TARGET_BULK_BEYOND_HELD,
        },
        "meets_targets": {
            "first_message_s": first <= TARGET_FIRST_S,
            "bulk_beyond_held": beyond <= TARGET_BULK_BEYOND_HELD,
        },
        "saturated": scene["bulk_left_when_alert_settled"] > 0,
        "detail": result,
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
            "bulk_between_launch_and_last counts bulk messages that left after the launch call "
            "and before the alert's last message; held_at_launch were in batches senders held "
            "when the launch began (bounded by held_bound = routes x processes x concurrency "
            "x batch_size, and exactly by held_at_launch_unsent); taken_after_queued were in "
            "bulk batches taken after the whole alert was queued: a sender that finds no "
            "urgent batch waiting (the alert's last batches already in flight with other "
            "senders) takes bulk again, and on a shared rate limit those chunks compete with "
            "the alert's remaining chunks"
        ),
        "config": {
            "routes": list(ROUTES),
            "adapter": "file (one JSON line per message with its send time)",
            "rate_per_route": args.rate,
            "unit": "messages",
            "processes": args.processes,
            "concurrency": args.concurrency,
            "shards": args.shards,
            "chunk": args.chunk,
            "batch_size": args.batch_size,
            "senders": senders,
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
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--alert", type=int, default=2_000, help="the alert's recipients")
    parser.add_argument("--bulk", type=int, default=100_000, help="the bulk campaign's rows")
    parser.add_argument("--rate", type=float, default=2_000.0, help="messages/s of each route")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="senders per route and process")
    parser.add_argument("--shards", type=int, default=4, help="shards per route")
    parser.add_argument("--chunk", type=int, default=50, help="messages per adapter call")
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
    if min(args.alert, args.bulk, args.processes, args.concurrency, args.shards) < 1:
        parser.error("counts must be positive")
    if args.rate <= 0:
        parser.error("--rate must be positive: the bulk campaign must outlast the test")
    if args.redis_url and not args.redis_url.startswith(("redis://127.0.0.1", "redis://localhost")):
        parser.error("--redis-url must be a local Redis (redis://127.0.0.1:...)")
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
