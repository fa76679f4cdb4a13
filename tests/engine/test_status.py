"""`loa status`: what an operator sees of the queues from the command line."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from helpers import enqueue, messages
from loa.message import Lane


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


def test_status_reports_backlog_per_route(make_settings, tmp_path):
    settings = make_settings(
        routes={"sms": {"adapter": "null", "shards": 3}, "mail": {"adapter": "null"}}
    )
    batch_size = settings.queue.batch_size
    enqueue(settings, "sms", messages(batch_size * 4 + 1), lane=Lane.BULK)
    config = tmp_path / "loa.toml"
    config.write_text(
        f'redis_url = "{settings.redis_url}"\nnamespace = "{settings.namespace}"\n'
        '[routes.sms]\nadapter = "null"\nshards = 3\n[routes.mail]\nadapter = "null"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOA_")}
    run = subprocess.run(
        [sys.executable, "-m", "loa.cli", "status", "--config", str(config), "--json"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode()
    rows = {row["route"]: row for row in orjson.loads(run.stdout)}
    assert rows["sms"]["waiting"] == 5, "five batches: four full and one of a single message"
    assert rows["sms"]["accepted"] == 0
    assert rows["mail"]["waiting"] == 0
