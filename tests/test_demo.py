"""`loa demo`, the README's main job, on its own embedded server with nothing set up."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson


def test_demo_runs_on_the_embedded_default_and_reconciles(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    env["LOA_DATA_DIR"] = str(tmp_path / "data")
    run = subprocess.run(
        [sys.executable, "-m", "loa.cli", "demo", "--messages", "5000", "--processes", "2",
         "--json"],
        env=env, capture_output=True, timeout=180, check=False,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    summary = orjson.loads(run.stdout.splitlines()[-1])
    routes = {row["route"]: row for row in summary["routes"]}
    assert set(routes) == {"sms-viettel", "sms-vinaphone", "zalo-zns", "email"}
    finished = sum(r["accepted"] + r["failed"] + r["dead"] + r["expired"] for r in routes.values())
    assert finished == summary["messages"] == 5000
    assert all(r["in_flight"] == 0 and r["waiting"] == 0 for r in routes.values())
    assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir(), "the embedded server's AOF"
    assert not (tmp_path / "data" / "redis" / "url").exists(), "the server was stopped"
