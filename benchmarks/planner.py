"""Planner benchmark: an N-row CSV audience planned onto the queues through Campaigns.launch.

Each planning run is a fresh subprocess (its peak RSS is its own) against a fresh embedded
server, and goes through the real code path: Campaigns.create, approve, launch. The audience
is generated first and not timed (see planner_audience). Planning is measured alone: the
queues' bound (queue.max_depth) is set far above what N fills, unless --drain-workers starts
null-adapter workers that consume while the planner writes, with the default bound.

Runs: N/10 and N rows in one process (the peak RSS of both, CPU per recipient), N with one
per-person field, the dry run of N, and N planned by two partition processes forked as
`loa campaign launch` forks them. `recipients_per_s` is the launch with loa's default
partitions for that file on this machine (one per core from `planning.partition_min_mb`).
After the N/10 run, worker processes send its campaign to the null adapter, and the frequency
memory they leave (whom each campaign reached) is measured per person reached: it is part of
`redis_bytes_per_recipient`, with the planner's deduplication memory.

The peers, on a sample of the same phone cells: phonenumbers alone (parse, is_valid_number,
format_number E164) and loa's own `normalize`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import itertools
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import phonenumbers
import psutil
import redis
import uvloop

import planner_audience
from common import (
    add_output_arguments,
    cpu_seconds,
    emit,
    exit_on_signals,
    machine,
    source_version,
    write_results,
)
from drain import drain
from engine import RssSampler
from loa.access.identity import Role, program
from loa.campaigns.audience import BadRow, open_audience
from loa.campaigns.controls import campaign_controls
from loa.campaigns.partitions import default_count
from loa.campaigns.plan import load_plan
from loa.campaigns.planner import Group, Planner, Report
from loa.campaigns.processes import plan_one
from loa.campaigns.service import Campaigns
from loa.engine.connection import connect
from loa.engine.embedded import EmbeddedRedis
from loa.engine.keys import (
    campaign_seen_key,
    campaign_seen_numbers_key,
    reached_key,
    shard_keys,
)
from loa.engine.supervisor import Supervisor
from loa.errors import InvalidPhone
from loa.phone import normalize
from loa.settings import PlanningSettings, Settings

OPERATOR = program("bench-operator", Role.OPERATOR)
APPROVER = program("bench-approver", Role.APPROVER)

HERE = Path(__file__).resolve().parent
MB = 1024 * 1024
NAMESPACE = "bench-plan"
TARGET_RATE = 300_000.0
TARGET_RSS_RATIO = 1.10
TARGETS = {
    "recipients_per_s_named": 150_000,
    "dry_run_recipients_per_s": 1_000_000,
    "redis_bytes_per_recipient": 16,
}
UNBOUNDED_DEPTH = 1_000_000_000  # batches per shard: the planner never waits for room
# Vietnamese advice, folded to ASCII per recipient (sms_ascii): about 110 characters, one part
STATIC_SMS = (
    "Bộ Y tế: hãy đeo khẩu trang nơi đông người, rửa tay thường xuyên và tiêm đủ liều"
    " vắc xin. Chi tiết: moh.gov.vn"
)
NAMED_SMS = STATIC_SMS.replace("Bộ Y tế: hãy", "Bộ Y tế: {{ name }} ơi, hãy")
TEMPLATES = {"static": STATIC_SMS, "named": NAMED_SMS}
CARRIER_ROUTES = {
    "viettel": "sms-viettel",
    "vinaphone": "sms-vinaphone",
    "mobifone": "sms-mobifone",
}
DEFAULT_ROUTE = "sms-other"


# ---------------------------------------------------------------------------------------------
# what is planned, and with which settings


def bench_settings(url: str, data_dir: Path, args: argparse.Namespace) -> Settings:
    """Four null routes (three carriers and a default), SMS routed by carrier."""
    route = {"adapter": "null", "rate": 0, "shards": args.shards, "chunk": args.batch_size}
    return Settings.from_mapping(
        {
            "redis_url": url,
            "data_dir": str(data_dir),
            "namespace": NAMESPACE,
            "worker": {"metrics_port": 0, "drain_timeout": 10.0},
            "queue": {"batch_size": args.batch_size, "max_depth": args.max_depth},
            "planning": {"frequency_memory": args.frequency_memory},
            "routes": {name: route for name in [*CARRIER_ROUTES.values(), DEFAULT_ROUTE]},
            "channels": {"sms": {"default": DEFAULT_ROUTE, "carriers": CARRIER_ROUTES}},
        },
        source="planner benchmark settings",
    )


def plan_text(template: str) -> str:
    """A nationwide SMS advisory, as an operator writes it (see examples/covid-advice)."""
    return "\n".join(
        [
            f'name = "Planner benchmark ({template})"',
            'lane = "normal"',
            'channels = ["sms"]',
            "sms_ascii = true",
            "[templates]",
            f"sms = {json.dumps(TEMPLATES[template], ensure_ascii=False)}",
            "[schedule]",
            'expires = "3d"',
            'timezone = "Asia/Ho_Chi_Minh"',
            "",
        ]
    )


def counts(report: Report) -> dict[str, Any]:
    """The report's counters, without the first errors."""
    data = report.to_json()
    data.pop("errors")
    data.pop("problems")
    return data


# ---------------------------------------------------------------------------------------------
# the child: one planning run in a process of its own


async def _plan(args: argparse.Namespace) -> dict[str, Any]:
    """Create, approve and launch one campaign; time the launch (the planning) alone."""
    data_dir = Path(args.data_dir)
    settings = bench_settings(args.url, data_dir, args)
    plan_path = data_dir / f"{args.template}.plan.toml"
    plan_path.write_text(plan_text(args.template), encoding="utf-8")
    client = connect(args.url)
    try:
        campaigns = Campaigns(settings, client)
        began = time.perf_counter()
        campaign = await campaigns.create(plan_path, Path(args.child), OPERATOR)
        await campaigns.approve(campaign.id, APPROVER)
        created = time.perf_counter()
        rss_before = psutil.Process().memory_info().rss
        profiler = cProfile.Profile() if args.profile_out else None
        cpu = time.process_time()
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        report = await _timed_work(args, campaigns, campaign.id, plan_path, data_dir)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu + _children_cpu(children)
        if profiler is not None:
            profiler.dump_stats(args.profile_out)
    finally:
        await client.aclose()
    return {
        "campaign": campaign.id,
        "create_approve_seconds": round(created - began, 3),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "rss_before_launch_mb": round(rss_before / MB, 1),
        "vm_hwm_mb": round(vm_hwm() / MB, 1),
        "report": counts(report),
    }


async def _timed_work(
    args: argparse.Namespace, campaigns: Campaigns, campaign: str, plan: Path, data_dir: Path
) -> Report:
    """What is timed: the launch, the dry run, or a launch planned by partition processes."""
    if args.mode == "dry":
        return await campaigns.validate(plan, Path(args.child))
    if args.mode == "launch":
        return await campaigns.launch(campaign)
    count = int(args.mode.removeprefix("partitions-"))
    await campaigns.start(campaign, count)
    await asyncio.to_thread(_fork_partitions, args, campaign, count)
    return await campaigns.partitions_report(campaign)


def _fork_partitions(args: argparse.Namespace, campaign: str, count: int) -> None:
    """One process per partition, forked from this one as `loa campaign launch` forks them
    (each has loa loaded already), side by side; each plans its share with its own client."""
    pids = []
    for k in range(count):
        pid = os.fork()
        if pid == 0:
            os._exit(_plan_one(args, campaign, k, count))
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    if any(codes):
        raise RuntimeError(f"partition processes exited with {codes}")


def _plan_one(args: argparse.Namespace, campaign: str, k: int, count: int) -> int:
    """A partition's process: plan partition k of count as the API's partition processes do;
    0 when it planned."""
    settings = bench_settings(args.url, Path(args.data_dir), args)
    try:
        plan_one(settings, campaign, k, count)
    except SystemExit as exc:  # it logged why
        return int(exc.code or 0)
    finally:
        sys.stderr.flush()
    return 0


def _children_cpu(before: Any) -> float:
    """CPU seconds of child processes (partition planners) since `before`."""
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def vm_hwm() -> int:
    """This process's peak RSS in bytes (VmHWM). Not ru_maxrss: Linux keeps that across exec,
    so a child's ru_maxrss starts at its parent's RSS at fork time."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_main(args: argparse.Namespace) -> int:
    """Plan once and print the result as one JSON line."""
    print(json.dumps(uvloop.run(_plan(args))), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# the parent: audience files, servers, children, measurements


def redis_breakdown(client: redis.Redis, settings: Settings, campaign: str) -> dict[str, Any]:
    """used_memory, and how much of it the seen hash, the queues and the rest hold."""
    time.sleep(0.3)  # let the server free query buffers
    info = client.info("memory")
    seen_bytes = 0
    for key in (campaign_seen_key, campaign_seen_numbers_key):
        seen_bytes += int(client.memory_usage(key(NAMESPACE, campaign), samples=0) or 0)
    queued_bytes = planned_bytes = 0
    batches = 0
    for name in settings.routes:
        for keys in shard_keys(NAMESPACE, name, settings.route(name).shards):
            for stream in keys.streams():
                queued_bytes += int(client.memory_usage(stream, samples=0) or 0)
                batches += int(client.xlen(stream))
            for later in keys.delayed_sets():
                queued_bytes += int(client.memory_usage(later, samples=0) or 0)
            planned_bytes += int(client.memory_usage(keys.planned, samples=0) or 0)
    used = int(info["used_memory"])
    return {
        "used_memory_mb": round(used / MB, 1),
        "used_memory_peak_mb": round(int(info["used_memory_peak"]) / MB, 1),
        "keys": int(client.dbsize()),
        "seen_hash_mb": round(seen_bytes / MB, 1),  # deduplication: row or columnar planner
        "seen_bytes": seen_bytes,
        "queues_mb": round(queued_bytes / MB, 1),
        "planned_ids_mb": round(planned_bytes / MB, 2),
        "other_mb": round((used - seen_bytes - queued_bytes - planned_bytes) / MB, 1),
        "batches_waiting": batches,
    }


def command_costs(client: redis.Redis, rows: int) -> dict[str, dict[str, float]]:
    """Per command on the (fresh) server: calls and server microseconds, per audience row."""
    stats = client.info("commandstats")
    costs = {
        name.removeprefix("cmdstat_"): {
            "calls_per_row": round(int(value["calls"]) / rows, 4),
            "usec_per_row": round(int(value["usec"]) / rows, 3),
        }
        for name, value in stats.items()
    }
    return dict(sorted(costs.items(), key=lambda item: -item[1]["usec_per_row"])[:8])


def run_child(
    args: argparse.Namespace,
    audience: Path,
    template: str,
    workdir: Path,
    profile: Path | None,
    after: Callable[[str, Settings, dict[str, Any]], dict[str, Any]] | None = None,
    mode: str = "launch",
) -> dict[str, Any]:
    """One planning run: a fresh server, a fresh planner process, its RSS sampled throughout.

    `after(url, settings, result)`, if given, runs while the server still holds the queued
    campaign (memory.py drains it through workers); what it returns is kept as result["after"].
    """
    label = f"{template}-{mode}-{audience.stem}"
    server_dir = workdir / f"redis-{label}"
    data_dir = workdir / f"data-{label}"
    data_dir.mkdir()
    server = EmbeddedRedis(server_dir)
    url = server.start()
    assert server.process is not None
    server_pid = server.process.pid
    settings = bench_settings(url, data_dir, args)
    supervisor = None
    client = redis.Redis.from_url(url)
    try:
        if args.drain_workers:
            supervisor = Supervisor(
                settings, processes=args.drain_workers, controls=campaign_controls
            )
            supervisor.start()
        command = [
            sys.executable, str(Path(__file__).resolve()), "--child", str(audience),
            "--url", url, "--data-dir", str(data_dir), "--template", template, "--mode", mode,
            "--max-depth", str(args.max_depth), "--batch-size", str(args.batch_size),
            "--shards", str(args.shards), "--frequency-memory", str(args.frequency_memory),
        ]  # fmt: skip
        if profile is not None:
            command += ["--profile-out", str(profile)]
        server_cpu = cpu_seconds([server_pid])
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=HERE)
        sampler = RssSampler(lambda: [proc.pid], interval=0.02)
        with sampler:
            out, _ = proc.communicate(timeout=args.timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"the planner process exited with {proc.returncode}")
        server_cpu_used = cpu_seconds([server_pid])[server_pid] - server_cpu[server_pid]
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        result["peak_rss_mb_sampled"] = sampler.peak_mb([proc.pid])
        result["server_cpu_seconds"] = round(server_cpu_used, 3)
        result["server_commands"] = command_costs(client, result["report"]["total"])
        result["redis"] = redis_breakdown(client, settings, result["campaign"])
        result["aof_mb"] = round(_tree_bytes(server_dir) / MB, 1)
        if after is not None:
            result["after"] = after(url, settings, result)
    finally:
        client.close()
        if supervisor is not None:
            supervisor.stop()
        server.stop()
        shutil.rmtree(server_dir, ignore_errors=True)  # an AOF of 10M recipients is GBs
    return result


def default_partitions(audience: Path) -> int:
    """The partitions `loa campaign launch` plans this audience in with loa's defaults."""
    return default_count(audience.stat().st_size, PlanningSettings())


def reach_after(args: argparse.Namespace) -> Callable[[str, Settings, dict[str, Any]], Any]:
    """What runs after a planning run: workers send its campaign (null adapter), then the
    frequency memory they left (whom the campaign reached) is measured per person reached."""

    def measure(url: str, settings: Settings, result: dict[str, Any]) -> dict[str, Any]:
        queued = result["report"]["queued"]
        drained = drain(args.frequency_workers, args.timeout, url, settings, queued)
        client = redis.Redis.from_url(url)
        try:
            keys = list(client.scan_iter(match=reached_key(NAMESPACE, 0).rsplit(":", 1)[0] + ":*"))
            used = sum(int(client.memory_usage(key, samples=0) or 0) for key in keys)
            entries = sum(int(client.llen(key)) for key in keys)
        finally:
            client.close()
        return {
            "people_reached": queued,
            "frequency_bytes": used,
            "entries": entries,
            "frequency_bytes_per_recipient": round(used / max(queued, 1), 2),
            "worker_msgs_per_s": drained["msgs_per_s"],
        }

    return measure


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def summarize(run: dict[str, Any], recipients: int) -> dict[str, Any]:
    """A run's headline numbers."""
    seconds = run["seconds"]
    return {
        "recipients": recipients,
        "seconds": seconds,
        "recipients_per_s": round(recipients / seconds),
        "planner_cpu_us_per_recipient": round(run["cpu_seconds"] * 1e6 / recipients, 2),
        "server_cpu_us_per_recipient": round(run["server_cpu_seconds"] * 1e6 / recipients, 2),
        # what both processes spent together: on a busy machine the CPU figures say more
        # than wall time, which counts the time other processes held the cores
        "cpu_us_per_recipient": round(
            (run["cpu_seconds"] + run["server_cpu_seconds"]) * 1e6 / recipients, 2
        ),
        "peak_rss_mb": max(run["vm_hwm_mb"], run["peak_rss_mb_sampled"]),
        "rss_before_launch_mb": run["rss_before_launch_mb"],
        "redis_used_memory_mb": run["redis"]["used_memory_mb"],
        "redis_used_bytes_per_recipient": round(
            run["redis"]["used_memory_mb"] * MB / max(run["report"]["queued"], 1), 1
        ),
        # deduplication (and frequency) memory per recipient, beyond the queued messages
        "redis_bytes_per_recipient": round(
            run["redis"]["seen_bytes"] / max(run["report"]["total"], 1), 2
        ),
    }


def check_counts(report: dict[str, Any], recipients: int) -> dict[str, Any]:
    """The report against what the generated audience must give."""
    want = planner_audience.expected(recipients)
    got = {k: report[k] for k in ("total", "invalid", "duplicate", "queued")}
    return {"ok": got == vars(want), "expected": vars(want), "got": got}


# ---------------------------------------------------------------------------------------------
# the normalisation peers


def _rate(fn: Callable[[list[str]], int], sample: list[str], repeat: int) -> tuple[float, int]:
    """Best of `repeat` passes of `fn` over `sample`, in items per second; and fn's answer."""
    best, answer = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        answer = fn(sample)
        best = min(best, time.perf_counter() - started)
    return len(sample) / best, answer


def with_phonenumbers(sample: list[str]) -> int:
    """parse + is_valid_number + format_number(E164), as a peer would normalise; valid count."""
    parse, valid, fmt = phonenumbers.parse, phonenumbers.is_valid_number, phonenumbers.format_number
    e164, error = phonenumbers.PhoneNumberFormat.E164, phonenumbers.NumberParseException
    good = 0
    for raw in sample:
        try:
            number = parse(raw, "VN")
        except error:
            continue
        if valid(number):
            fmt(number, e164)
            good += 1
    return good


def with_loa(sample: list[str]) -> int:
    """loa's normalize; valid count."""
    good = 0
    for raw in sample:
        try:
            normalize(raw)
        except InvalidPhone:
            continue
        good += 1
    return good


def disagreements(sample: list[str]) -> dict[str, int]:
    """Cells where the two disagree: accepted by one only, or both accept but differ."""
    only_pn = only_loa = differ = 0
    for raw in sample:
        try:
            number = phonenumbers.parse(raw, "VN")
            theirs = (
                phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                if phonenumbers.is_valid_number(number)
                else None
            )
        except phonenumbers.NumberParseException:
            theirs = None
        try:
            ours: str | None = normalize(raw)
        except InvalidPhone:
            ours = None
        if theirs and not ours:
            only_pn += 1
        elif ours and not theirs:
            only_loa += 1
        elif ours != theirs:
            differ += 1
    return {"valid_only_for_phonenumbers": only_pn, "valid_only_for_loa": only_loa,
            "both_valid_but_different": differ}  # fmt: skip


def peers(sample_size: int) -> dict[str, Any]:
    """Both normalisers on the first `sample_size` phone cells of the audience."""
    sample = planner_audience.phones(sample_size)
    pn_rate, pn_valid = _rate(with_phonenumbers, sample, 2)
    loa_rate, loa_valid = _rate(with_loa, sample, 3)
    return {
        "sample": len(sample),
        "phonenumbers_per_s": round(pn_rate),
        "loa_normalize_per_s": round(loa_rate),
        "valid_phonenumbers": pn_valid,
        "valid_loa": loa_valid,
        **disagreements(sample[: min(len(sample), 50_000)]),
    }


# ---------------------------------------------------------------------------------------------
# profile mode: where a recipient's time goes


def stages(audience: Path, settings: Settings, template: str, workdir: Path) -> dict[str, Any]:
    """Rates of the Redis-free stages: reading rows, and rows to candidates (no Redis)."""
    plan_path = workdir / f"{template}-stages.plan.toml"
    plan_path.write_text(plan_text(template), encoding="utf-8")
    plan = load_plan(plan_path)
    started = time.perf_counter()
    rows = sum(1 for _ in open_audience(audience))
    read = time.perf_counter() - started
    planner = Planner(settings, plan, "stages", audience, dt.datetime.now(dt.UTC))
    started = time.perf_counter()
    found = 0
    items = planner.items()
    while chunk := list(itertools.islice(items, 2000)):
        group = Group()
        planner.take(chunk, group)
        found += len(group.messages)
    made = time.perf_counter() - started
    phones = [
        item.fields["phone"] for item in open_audience(audience) if not isinstance(item, BadRow)
    ]
    started = time.perf_counter()
    with_loa(phones)
    norm = time.perf_counter() - started
    return {
        "rows": rows,
        "read_rows_per_s": round(rows / read),
        "read_us_per_row": round(read * 1e6 / rows, 2),
        "candidates_per_s": round(rows / made),
        "candidates_us_per_row": round(made * 1e6 / rows, 2),
        "normalize_us_per_row": round(norm * 1e6 / len(phones), 2),
        "candidates": found,
    }


def profile_main(args: argparse.Namespace) -> int:
    """One cProfiled launch of `--recipients` rows, and the Redis-free stages timed alone."""
    with tempfile.TemporaryDirectory(prefix="loa-plan-") as tmp:
        workdir = Path(tmp)
        audience = workdir / "audience.csv"
        planner_audience.write_audience(audience, args.recipients)
        template = args.profile_template
        stats_path = Path(args.profile) if args.profile != "-" else workdir / "planner.prof"
        run = run_child(args, audience, template, workdir, stats_path)
        settings = bench_settings("redis://127.0.0.1:1", workdir, args)
        timed = stages(audience, settings, template, workdir)
        stats = pstats.Stats(str(stats_path), stream=sys.stderr)
        print(json.dumps({"run": summarize(run, args.recipients), "stages": timed}), flush=True)
        stats.sort_stats("tottime").print_stats(args.profile_top)
        stats.sort_stats("cumulative").print_stats(args.profile_top)
    return 0


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=10_000_000, help="rows planned (N)")
    parser.add_argument(
        "--small", type=int, default=None, help="rows of the RSS comparison run (default N/10)"
    )
    parser.add_argument("--skip-named", action="store_true", help="no {{ name }} run at N")
    parser.add_argument(
        "--dry-only", action="store_true", help="only the dry run of N rows (planner-dry-<date>)"
    )
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--shards", type=int, default=4, help="shards per route")
    parser.add_argument(
        "--max-depth", type=int, default=None,
        help=f"queue.max_depth (default {UNBOUNDED_DEPTH:,}, or 5000 with --drain-workers)",
    )  # fmt: skip
    parser.add_argument(
        "--drain-workers", type=int, default=0,
        help="null-adapter worker processes consuming while the planner runs (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--frequency-memory", type=float, default=7 * 86_400,
        help="planning.frequency_memory seconds (loa's default; 0 remembers nobody)",
    )  # fmt: skip
    parser.add_argument(
        "--frequency-workers", type=int, default=2,
        help="worker processes that send the small run's campaign, so the frequency memory "
        "they leave is measured (0: not measured)",
    )  # fmt: skip
    parser.add_argument("--peer-sample", type=int, default=200_000, help="phone cells")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run at most")
    add_output_arguments(parser)
    parser.add_argument(
        "--profile", metavar="PSTATS", default=None,
        help="profile one launch of N rows instead ('-': keep no stats file); top to stderr",
    )  # fmt: skip
    parser.add_argument("--profile-template", choices=sorted(TEMPLATES), default="static")
    parser.add_argument("--profile-top", type=int, default=35)
    # the child's own options (one planning run in a process of its own)
    parser.add_argument("--child", metavar="AUDIENCE", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--template", choices=sorted(TEMPLATES), help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="launch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.max_depth is None:
        args.max_depth = 5_000 if args.drain_workers else UNBOUNDED_DEPTH
    if args.recipients < 10:
        parser.error("--recipients must be at least 10")
    if args.small is None:
        args.small = args.recipients // 10
    return args


def run_dry_only(args: argparse.Namespace) -> dict[str, Any]:
    """The dry run of N rows alone: an operator's first look at a national audience."""
    with tempfile.TemporaryDirectory(prefix="loa-plan-") as tmp:
        workdir = Path(tmp)
        path = workdir / f"audience-{args.recipients}.csv"
        started = time.perf_counter()
        planner_audience.write_audience(path, args.recipients)
        generated = round(time.perf_counter() - started, 1)
        size = path.stat().st_size
        dry = run_child(args, path, "static", workdir, None, mode="dry")
        dry["counts"] = check_counts(dry["report"], args.recipients)
    summary = summarize(dry, args.recipients)
    return {
        "recipients": args.recipients,
        "dry_run_recipients_per_s": summary["recipients_per_s"],
        "dry_run_seconds": summary["seconds"],
        "counts_ok": dry["counts"]["ok"],
        "target": TARGETS["dry_run_recipients_per_s"],
        "dry": summary,
        "run": dry,
        "audience_mb": round(size / MB, 1),
        "generation_seconds": generated,
        "machine": {**machine(), "loadavg_at_end": list(os.getloadavg())},
        "loa_source": source_version(),
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate both audiences, plan each in a fresh process and server, then the peers."""
    host = machine()
    source = source_version()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="loa-plan-") as tmp:
        workdir = Path(tmp)
        files: dict[int, Path] = {}
        generation: dict[str, float] = {}
        for size in sorted({args.small, args.recipients}):
            path = workdir / f"audience-{size}.csv"
            started = time.perf_counter()
            planner_audience.write_audience(path, size)
            generation[str(size)] = round(time.perf_counter() - started, 1)
            files[size] = path
        n = args.recipients
        plans = [("small", args.small, "static", "launch"), ("static", n, "static", "launch")]
        if not args.skip_named:
            plans.append(("named", n, "named", "launch"))
        plans += [("dry", n, "static", "dry"), ("partitions-2", n, "static", "partitions-2")]
        default = default_partitions(files[n])
        if default > 2:
            plans.append((f"partitions-{default}", n, "static", f"partitions-{default}"))
        for label, size, template, mode in plans:
            after = reach_after(args) if label == "small" and args.frequency_workers else None
            runs[label] = run_child(args, files[size], template, workdir, None, after, mode)
            runs[label]["counts"] = check_counts(runs[label]["report"], size)
            print(f"{label}: {summarize(runs[label], size)}", file=sys.stderr, flush=True)
            files_left = [s for _, s, _, _ in plans[len(runs) :]]
            if size not in files_left:
                files[size].unlink()
    peer = peers(min(args.peer_sample, args.recipients))
    big, small = summarize(runs["static"], args.recipients), summarize(runs["small"], args.small)
    named = summarize(runs["named"], args.recipients) if "named" in runs else None
    ratio = round(big["peak_rss_mb"] / small["peak_rss_mb"], 3)
    dry, two = (
        summarize(runs["dry"], args.recipients),
        summarize(runs["partitions-2"], args.recipients),
    )
    launch = big if default == 1 else summarize(runs[f"partitions-{default}"], args.recipients)
    reach = runs["small"].get("after")
    frequency = reach["frequency_bytes_per_recipient"] if reach else 0.0
    redis_bytes = round(big["redis_bytes_per_recipient"] + frequency, 2)
    return {
        "recipients": args.recipients,
        "recipients_per_s": launch["recipients_per_s"],
        "default_partitions": default,
        "recipients_per_s_one_process": big["recipients_per_s"],
        "recipients_per_s_named": named["recipients_per_s"] if named else None,
        "dry_run_recipients_per_s": dry["recipients_per_s"],
        "partitions_scaling": {"1": big["recipients_per_s"], "2": two["recipients_per_s"]},
        "planner_cpu_us_per_recipient": big["planner_cpu_us_per_recipient"],
        "server_cpu_us_per_recipient": big["server_cpu_us_per_recipient"],
        "redis_bytes_per_recipient": redis_bytes,
        "dedup_bytes_per_recipient": big["redis_bytes_per_recipient"],
        "frequency_bytes_per_recipient": frequency if reach else None,
        "frequency_measured": reach,
        "peak_rss_mb": big["peak_rss_mb"],
        "peak_rss_mb_small": small["peak_rss_mb"],
        "small_recipients": args.small,
        "rss_ratio": ratio,
        "phonenumbers_per_s": peer["phonenumbers_per_s"],
        "loa_normalize_per_s": peer["loa_normalize_per_s"],
        "redis_used_memory_mb": big["redis_used_memory_mb"],
        "counts_ok": all(r["counts"]["ok"] for r in runs.values()),
        "targets": {"recipients_per_s": TARGET_RATE, "rss_ratio": TARGET_RSS_RATIO, **TARGETS},
        "meets_targets": {
            "recipients_per_s": launch["recipients_per_s"] >= TARGET_RATE,
            "rss_ratio": ratio <= TARGET_RSS_RATIO,
            "recipients_per_s_named": bool(named)
            and named["recipients_per_s"] >= TARGETS["recipients_per_s_named"],
            "dry_run_recipients_per_s": dry["recipients_per_s"]
            >= TARGETS["dry_run_recipients_per_s"],
            "redis_bytes_per_recipient": bool(reach)
            and redis_bytes <= TARGETS["redis_bytes_per_recipient"],
        },
        "static": big,
        "small": small,
        "named": named,
        "dry": dry,
        "partitions_2": two,
        "peers": peer,
        "runs": runs,
        "config": {
            "backpressure": (
                f"{args.drain_workers} null-adapter worker processes drain while planning"
                f" (queue.max_depth {args.max_depth})"
                if args.drain_workers
                else f"none: queue.max_depth {args.max_depth:,} batches per shard, no workers"
            ),
            "drain_workers": args.drain_workers,
            "max_depth": args.max_depth,
            "batch_size": args.batch_size,
            "routes": [*CARRIER_ROUTES.values(), DEFAULT_ROUTE],
            "shards_per_route": args.shards,
            "frequency_memory_s": args.frequency_memory,
            "templates": {"static": STATIC_SMS, "named": NAMED_SMS, "sms_ascii": True},
            "audience": planner_audience.__doc__.split("\n\n", 1)[1].strip()
            if planner_audience.__doc__
            else "",
            "generation_seconds": generation,
            "server": "embedded (loa.engine.embedded: unix socket, appendonly everysec)",
            "timing": "wall time of Campaigns.launch (create + approve reported apart)",
        },
        "machine": {**host, "loadavg_at_end": list(os.getloadavg())},
        "loa_source": source,
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the result, and keep it in benchmarks/results/."""
    args = parse_args(argv)
    os.environ.setdefault("LOA_LOG_LEVEL", "warning")
    if args.child:
        return child_main(args)
    exit_on_signals()
    if args.profile:
        return profile_main(args)
    result = run_dry_only(args) if args.dry_only else run(args)
    name = "planner-dry" if args.dry_only else "planner"
    path = write_results(name, result, args.output_dir, ensure_ascii=False)
    emit(result, args.json, path, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
