"""Memory benchmark: planner and worker peak RSS, and Redis memory, at two audience sizes.

For each size (1M and 10M recipients; 100k and 1M with --quick) planner.py's own planning run
does the planning: a fresh embedded server, the planner in a process of its own launching a
campaign through Campaigns.launch, its peak RSS sampled (see planner.py). While that server
still holds the queued campaign, worker processes under the supervisor (null adapter, no rate
limit) drain it, and psutil samples their RSS throughout. The target: the peak RSS of the
planner and of the workers grows by at most 10% from the small size to the large one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import planner
import planner_audience
from common import (
    add_output_arguments,
    emit,
    exit_on_signals,
    loadavg,
    machine,
    source_version,
    write_results,
)
from drain import drain
from loa.settings import Settings

TARGET_RSS_RATIO = 1.10
QUICK_SIZES = (100_000, 1_000_000)
FULL_SIZES = (1_000_000, 10_000_000)


def one_size(args: argparse.Namespace, size: int, workdir: Path) -> dict[str, Any]:
    """Plan `size` rows with planner.py's run, then drain them through the workers."""
    audience = workdir / f"audience-{size}.csv"
    started = time.perf_counter()
    planner_audience.write_audience(audience, size)
    generated = time.perf_counter() - started
    plan_args = planner.parse_args(
        ["--recipients", str(size), "--batch-size", str(args.batch_size),
         "--shards", str(args.shards), "--timeout", str(args.timeout)]
    )  # fmt: skip

    def after(url: str, settings: Settings, result: dict[str, Any]) -> dict[str, Any]:
        return drain(args.workers, args.timeout, url, settings, result["report"]["queued"])

    try:
        run = planner.run_child(plan_args, audience, "static", workdir, None, after=after)
    finally:
        audience.unlink()
    workers = run.pop("after")
    summary = planner.summarize(run, size)
    return {
        "recipients": size,
        "audience_generation_s": round(generated, 1),
        "planner": summary,
        "planner_counts_ok": planner.check_counts(run["report"], size)["ok"],
        "redis_after_planning": run["redis"],
        "workers": workers,
    }


def ratio(big: float, small: float) -> float:
    """big / small, rounded; 0 when small is 0."""
    return round(big / small, 3) if small else 0.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both sizes, each against its own fresh server, then the ratios."""
    host = machine()
    source = source_version()
    sizes: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="loa-memory-") as tmp:
        for label, size in (("small", args.small), ("large", args.large)):
            sizes[label] = one_size(args, size, Path(tmp))
            row = sizes[label]
            print(
                f"{size:,}: planner {row['planner']['peak_rss_mb']} MB, "
                f"workers {row['workers']['worker_peak_rss_mb']} MB",
                file=sys.stderr,
                flush=True,
            )
    small, large = sizes["small"], sizes["large"]
    planner_ratio = ratio(large["planner"]["peak_rss_mb"], small["planner"]["peak_rss_mb"])
    worker_ratio = ratio(
        large["workers"]["worker_peak_rss_mb"], small["workers"]["worker_peak_rss_mb"]
    )
    peers = planner.peers(args.peer_sample) if args.peer_sample else None
    return {
        "small_recipients": args.small,
        "large_recipients": args.large,
        "planner_peak_rss_mb": {
            "small": small["planner"]["peak_rss_mb"],
            "large": large["planner"]["peak_rss_mb"],
        },
        "worker_peak_rss_mb": {
            "small": small["workers"]["worker_peak_rss_mb"],
            "large": large["workers"]["worker_peak_rss_mb"],
        },
        "planner_rss_ratio": planner_ratio,
        "worker_rss_ratio": worker_ratio,
        "redis_used_memory_mb": {
            "small": small["redis_after_planning"]["used_memory_mb"],
            "large": large["redis_after_planning"]["used_memory_mb"],
        },
        "planner_recipients_per_s": large["planner"]["recipients_per_s"],
        "planner_cpu_us_per_recipient": large["planner"]["planner_cpu_us_per_recipient"],
        "worker_msgs_per_s": large["workers"]["msgs_per_s"],
        "worker_cpu_us_per_message": large["workers"]["worker_cpu_us_per_message"],
        "phonenumbers_per_s": peers["phonenumbers_per_s"] if peers else None,
        "loa_normalize_per_s": peers["loa_normalize_per_s"] if peers else None,
        "counts_ok": small["planner_counts_ok"] and large["planner_counts_ok"],
        "targets": {
            "planner_rss_ratio": TARGET_RSS_RATIO,
            "worker_rss_ratio": TARGET_RSS_RATIO,
            "planner_recipients_per_s": planner.TARGET_RATE,
        },
        "meets_targets": {
            "planner_rss_ratio": planner_ratio <= TARGET_RSS_RATIO,
            "worker_rss_ratio": worker_ratio <= TARGET_RSS_RATIO,
            "planner_recipients_per_s": large["planner"]["recipients_per_s"] >= planner.TARGET_RATE,
        },
        "small": small,
        "large": large,
        "peers": peers,
        "config": {
            "planning": "planner.py's run_child: static template, 4 null routes, fresh embedded "
            "server per size, queue.max_depth unbounded (planning measured alone)",
            "workers": f"{args.workers} worker processes under the supervisor, null adapter, "
            "no rate limit, started once planning ended; RSS sampled every 50 ms",
            "batch_size": args.batch_size,
            "shards_per_route": args.shards,
            "quick": args.quick,
        },
        "machine": {**host, "loadavg_at_end": loadavg()},
        "loa_source": source,
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="100k and 1M instead of 1M and 10M")
    parser.add_argument("--small", type=int, default=None, help="rows of the small run")
    parser.add_argument("--large", type=int, default=None, help="rows of the large run")
    parser.add_argument("--workers", type=int, default=2, help="worker processes draining")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--shards", type=int, default=4, help="shards per route")
    parser.add_argument("--peer-sample", type=int, default=50_000, help="phone cells; 0 skips")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per phase at most")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    small, large = QUICK_SIZES if args.quick else FULL_SIZES
    args.small = args.small or small
    args.large = args.large or large
    if not 10 <= args.small <= args.large:
        parser.error("sizes: 10 <= --small <= --large")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the result, and keep it in benchmarks/results/."""
    args = parse_args(argv)
    os.environ.setdefault("LOA_LOG_LEVEL", "warning")
    exit_on_signals()
    result = run(args)
    path = write_results("memory", result, args.output_dir, ensure_ascii=False)
    emit(result, args.json, path, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
