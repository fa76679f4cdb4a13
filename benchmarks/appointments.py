"""Appointments benchmark: N registrants over S sites through `Appointments.allocate`.

Generates a sites file (S sites over the 34 provinces, each with --days days of a morning and an
afternoon session of --capacity places) and a registrants file (three priority groups; three in
five ask for a site, the others for any site of their province), not timed. Then times one
allocation run, the real code path, against a fresh embedded server (or --redis), and a second,
idempotent run of the same files (nobody placed twice: every place kept). Reports the wall time
of each, the process's peak RSS, the ledger's size in Redis, and the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import resource
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    add_output_arguments,
    emit,
    exit_on_signals,
    machine,
    source_version,
    write_results,
)
from loa.appointments import Appointments
from loa.appointments.provinces import PROVINCES
from loa.engine.connection import connect
from loa.engine.embedded import EmbeddedRedis
from loa.settings import Settings

MB = 1024 * 1024
FIRST_DAY = date(2031, 3, 3)


def write_sites(path: Path, sites: int, days: int, capacity: int, seed: int) -> int:
    """The sites file, with sessions; the places it offers."""
    rng = random.Random(seed)
    codes = list(PROVINCES)
    places = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["site_id", "name", "province", "address", "date", "start", "end", "capacity"]
        )
        for n in range(sites):
            province = codes[n % len(codes)]
            name, address = f"Trạm Y tế {n}", f"{rng.randint(1, 300)} Đường số {n % 97}"
            for day in range(days):
                when = (FIRST_DAY + timedelta(days=day)).isoformat()
                for start, end in (("07:30", "11:30"), ("13:30", "16:30")):
                    writer.writerow(
                        [f"S{n:05d}", name, province, address, when, start, end, capacity]
                    )
                    places += capacity
    return places


def write_people(path: Path, people: int, sites: int, seed: int) -> None:
    """The registrants file: three groups, registered over a month, site or province."""
    rng = random.Random(seed + 1)
    codes = list(PROVINCES)
    start = datetime(2031, 1, 1, 7, 0)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "priority_group", "registered_at", "site_id", "province", "name"])
        for n in range(people):
            registered = start + timedelta(seconds=rng.randrange(30 * 86400))
            group = rng.choices((1, 2, 3), (0.2, 0.3, 0.5))[0]
            if rng.random() < 0.6:
                site, province = f"S{rng.randrange(sites):05d}", ""
            else:
                site, province = "", rng.choice(codes)
            writer.writerow(
                [f"09{n % 10}{n:07d}", group, registered.isoformat(), site, province, f"Người {n}"]
            )


async def allocate(url: str, namespace: str, folder: Path) -> dict[str, Any]:
    """Two runs of the same files; their times and counts, and the ledger's memory."""
    settings = Settings.from_mapping(
        {"redis_url": url, "namespace": namespace, "data_dir": str(folder / "data")}
    )
    client = connect(url)
    try:
        appointments = Appointments(settings, client)
        before = int((await client.info("memory"))["used_memory"])
        runs = []
        for number in (1, 2):
            started = time.perf_counter()
            report = await appointments.allocate(
                "bench",
                folder / "sites.csv",
                folder / "people.csv",
                first=FIRST_DAY,
                output=folder / f"schedule-{number}.csv",
            )
            runs.append(
                {
                    "seconds": round(time.perf_counter() - started, 2),
                    "people": dict(report.people),
                    "refused": report.refused_count,
                    "rows_written": report.written,
                }
            )
        after = int((await client.info("memory"))["used_memory"])
        booked = sum(s.booked for s in report.by_session)
        over = sum(1 for s in report.by_session if s.booked > s.capacity)
    finally:
        await client.aclose()
    return {
        "runs": runs,
        "booked": booked,
        "sessions_over_capacity": over,
        "redis_ledger_mb": round((after - before) / MB, 1),
    }


def main() -> int:
    exit_on_signals()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--capacity", type=int, default=8, help="places per session")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--redis", help="a Redis URL (default: a fresh embedded server)")
    add_output_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loa-appointments-") as scratch:
        folder = Path(scratch)
        places = write_sites(folder / "sites.csv", args.sites, args.days, args.capacity, args.seed)
        write_people(folder / "people.csv", args.people, args.sites, args.seed)
        if args.redis:
            measured = asyncio.run(allocate(args.redis, f"bench-appt-{time.time_ns()}", folder))
        else:
            with EmbeddedRedis(folder / "redis") as server:
                measured = asyncio.run(allocate(server.url, "bench-appt", folder))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    first = measured["runs"][0]
    data = {
        "benchmark": "appointments",
        "people": args.people,
        "sites": args.sites,
        "sessions": args.sites * args.days * 2,
        "places": places,
        **measured,
        "registrants_per_second": round(args.people / first["seconds"]),
        "peak_rss_mb": round(peak, 1),
        "machine": machine(),
        "loa_source": source_version(),
    }
    path = write_results("appointments", data, args.output_dir)
    emit(data, args.json, path)
    return 0 if measured["sessions_over_capacity"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
