"""Each benchmark script, run tiny, prints one JSON object with what benchmarks/run.py reads."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from helpers import REPO
from loa.engine.embedded import answers

BENCHMARKS = REPO / "benchmarks"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"

# (runner name, script, tiny arguments): about 30 s together on two shared cores, and the two
# marked soak (a Celery worker's start; two planner runs and two worker pools) 20-40 s more
TINY = [
    pytest.param(
        "engine", "engine.py",
        ["--messages", "2000", "--queued-messages", "1000", "--celery-messages", "50"],
        marks=pytest.mark.soak, id="engine",
    ),
    pytest.param(
        "memory", "memory.py", ["--small", "2000", "--large", "4000", "--peer-sample", "1000"],
        marks=pytest.mark.soak, id="memory",
    ),
    pytest.param(
        "smpp", "smpp.py",
        ["--messages", "500", "--cap-seconds", "1", "--cap-runs", "1", "--smpp34-messages", "200",
         "--stock-messages", "0"],
        id="smpp",
    ),
    pytest.param("smtp", "smtp.py", ["--messages", "200", "--render-messages", "200"], id="smtp"),
    pytest.param(
        "http", "http_gateway.py", ["--messages", "200", "--latency-messages", "40"], id="http"
    ),
    pytest.param(
        "emergency", "emergency.py",
        ["--alert", "100", "--route-rate", "100", "--warmup", "0.5", "--tail", "0.2"],
        id="emergency",
    ),
]  # fmt: skip
NEEDS_LOCAL_REDIS = {"engine", "smpp"}  # Celery's broker, the SMPP rate limiter


def load(script: str) -> ModuleType:
    """A benchmark script as a module named loa_bench_<script>, its sibling imports undone."""
    name = f"loa_bench_{script.removesuffix('.py')}"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    sys.modules[name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(BENCHMARKS))  # a script imports its siblings (engine, planner_audience)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
        for sibling in set(sys.modules) - before - {name}:
            if (BENCHMARKS / f"{sibling}.py").is_file():
                del sys.modules[sibling]
    return module


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    """benchmarks/run.py."""
    return load("run.py")


def run_script(script: str, arguments: list[str], out: Path) -> dict[str, Any]:
    """Run a benchmark with --json; its one JSON object (the last line of its output)."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments, "--json", "--output-dir", str(out)],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize(("name", "script", "arguments"), TINY)
def test_benchmark_json_has_what_the_runner_reads(
    runner: ModuleType, tmp_path: Path, name: str, script: str, arguments: list[str]
) -> None:
    if name in NEEDS_LOCAL_REDIS and not answers(LOCAL_REDIS):
        pytest.skip("needs the local Redis at 127.0.0.1:6379")
    if name == "smpp" and shutil.which("node") is None:
        pytest.skip("needs node for the SMPP peer server")
    result = run_script(script, arguments, tmp_path)
    assert list(tmp_path.glob(f"{name}-*.json")), "its dated file is written to --output-dir"
    rows = runner.table({name: {"ok": True, "result": result}}, None)
    assert rows
    for row in rows:
        assert len(row) == 6
        assert "unreadable" not in row[0], row[0]
    assert rows[0][1] != "—", "the headline loa figure is there"
    if "targets" in result:
        assert set(result["meets_targets"]) == set(result["targets"])
    text = runner.markdown(
        rows,
        {
            "date": "today",
            "mode": "test",
            "machine": {
                **runner.machine(),
                "loadavg_at_end": [0.0, 0.0, 0.0],
            },
            "loa_source": {"commit": "x", "dirty": False},
            "runs": {name: {"command": script, "seconds": 1.0, "cpu_seconds": 1.0}},
        },
    )
    assert text.count("\n| ") == len(rows) + 1  # the header and one line per row


def test_emergency_counts_every_bulk_message_between_the_alerts_first_and_last() -> None:
    emergency = load("emergency.py")
    alert = "KHAN CAP - lu lon"
    lines = [
        {"route": "sms-a", "id": "1", "ts": 9.0, "body": "bulk", "parts": 1},  # before
        {"route": "sms-a", "id": "7", "ts": 10.2, "body": alert, "parts": 2},
        {"route": "sms-b", "id": "3", "ts": 10.3, "body": "bulk", "parts": 1},  # before b's first
        {"route": "sms-a", "id": "2", "ts": 10.3, "body": "bulk", "parts": 1},  # during, on a
        {"route": "sms-b", "id": "8", "ts": 10.4, "body": alert, "parts": 1},
        {"route": "sms-a", "id": "9", "ts": 10.5, "body": alert, "parts": 1},
        {"route": "sms-b", "id": "4", "ts": 10.5, "body": "bulk", "parts": 1},  # after b's last
        {"route": "sms-b", "id": "5", "ts": 11.0, "body": "bulk", "parts": 1},  # after the alert
    ]
    got = emergency.analyse(lines, 10.0, rate=2.0)
    assert (got["alert_first_message_s"], got["alert_last_message_s"]) == (0.2, 0.5)
    assert (got["alert_messages"], got["alert_parts"]) == (3, 4)
    assert got["bound_s"] == 3.0  # 4 parts at 2/s, plus a second
    assert got["bulk_sent_during_alert"] == 1
    assert got["by_route"]["sms-a"]["bulk_sent_during_alert"] == 1
    assert got["by_route"]["sms-b"]["bulk_sent_during_alert"] == 0
    assert got["by_route"]["sms-a"]["bound_s"] == 2.5
    assert got["bulk_sent_after_alert"] == 1
    assert got["alert_duplicates"] == 0
