"""What the benchmark scripts share: results files, CPU time, the machine and the commit."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
CPU_BOUND_SHARE = 0.85  # a single-threaded process's CPU over wall time: its core nearly full


# ---------------------------------------------------------------------------------------------
# command line and results


def add_output_arguments(
    parser: argparse.ArgumentParser, json_help: str = "print one JSON object only"
) -> None:
    """--output-dir and --json, which benchmarks/run.py passes to every script."""
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--json", action="store_true", help=json_help)


def write_results(
    name: str, data: dict[str, Any], output_dir: Path, *, ensure_ascii: bool = True
) -> Path:
    """`data` as indented JSON in <output_dir>/<name>-<UTC date>.json; the path written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{name}-{dt.datetime.now(dt.UTC):%Y-%m-%d}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=ensure_ascii) + "\n")
    return path


def emit(data: dict[str, Any], as_json: bool, path: Path, *, ensure_ascii: bool = True) -> None:
    """One JSON line for run.py (--json), else the indented JSON and where it was written."""
    if as_json:
        print(json.dumps(data, ensure_ascii=ensure_ascii))
    else:
        print(json.dumps(data, indent=2, ensure_ascii=ensure_ascii))
        print(f"written to {path}", file=sys.stderr)


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP raise SystemExit, so every finally runs: workers and servers stop."""

    def on_signal(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)


# ---------------------------------------------------------------------------------------------
# CPU time


def process_cpu(process: psutil.Process) -> float:
    """User plus system CPU seconds of a process (all its threads) so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


def machine_busy_cpu() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all cores, idle excluded)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """User plus system CPU seconds used so far by each of `pids` that is alive."""
    used = {}
    for pid in pids:
        try:
            used[pid] = process_cpu(psutil.Process(pid))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return used


def cpu_used(before: dict[int, float], after: dict[int, float], pids: Sequence[int]) -> float:
    """CPU seconds the processes `pids` used between two `cpu_seconds` snapshots."""
    return sum(after.get(p, 0.0) - before.get(p, 0.0) for p in pids)


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds of this process (the client), one server process and the busy machine."""

    client: float
    server: float
    machine: float

    @classmethod
    def now(cls, server_cpu: Callable[[], float]) -> CpuTimes:
        """The three readings so far; subtract two of them for what a phase used."""
        return cls(time.process_time(), server_cpu(), machine_busy_cpu())

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(
            self.client - other.client, self.server - other.server, self.machine - other.machine
        )

    @property
    def others(self) -> float:
        """What every other process on the machine used (the cores are shared)."""
        return max(0.0, self.machine - self.client - self.server)

    def machine_shares(self, elapsed: float) -> dict[str, float]:
        """How busy the whole machine was over `elapsed`, and how much of that was neither side."""
        cores = psutil.cpu_count() or 1
        return {
            "machine_cpu_busy_share": round(self.machine / (elapsed * cores), 2),
            "other_processes_cpu_share": round(self.others / (elapsed * cores), 2),
        }


def bound_by(side: dict[str, Any]) -> str:
    """What limited one side's rate, from the CPU shares of client, server and machine."""
    if side["server_cpu_share"] >= CPU_BOUND_SHARE:
        return "server"
    if side["client_cpu_share"] >= CPU_BOUND_SHARE:
        return "client"
    if side["machine_cpu_busy_share"] >= CPU_BOUND_SHARE:
        return "machine CPU (shared with other processes)"
    return "round trips"


# ---------------------------------------------------------------------------------------------
# the machine and the source


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded: other work on the machine skews a run."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": loadavg(),
    }


def git(*command: str) -> str | None:
    """What a git command in the checkout prints, or None (no git, not a checkout, it failed)."""
    try:
        done = subprocess.run(
            ["git", *command], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def dirty(*paths: str) -> bool | None:
    """Whether `paths` have uncommitted changes (None outside git)."""
    status = git("status", "--porcelain", "--", *paths)
    return None if status is None else bool(status)


def commit() -> str | None:
    """The short hash of the commit checked out."""
    return git("rev-parse", "--short", "HEAD")


def source_version() -> dict[str, Any]:
    """The loa commit measured, and whether src/ had uncommitted changes (None outside git)."""
    return {"commit": commit(), "src_dirty": dirty("src")}
