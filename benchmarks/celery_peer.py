"""The Celery peer of the engine benchmark: one no-op task per message over a Redis broker."""

from __future__ import annotations

import os

import redis
from celery import Celery

BROKER_URL = os.environ.get("LOA_BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/14")
COUNTER_KEY = "loa-bench:celery:done"
TASK_NAME = "loa_bench.sink"

app = Celery("loa_bench", broker=BROKER_URL)
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_serializer="json",
    accept_content=["json"],
)

_counter: redis.Redis | None = None


def _client() -> redis.Redis:
    """One connection per worker child, made after the fork."""
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(BROKER_URL)
    return _counter


@app.task(name=TASK_NAME, ignore_result=True)  # type: ignore[untyped-decorator]
def sink(id: str, to: str, body: str) -> None:
    """The no-op sink: only counts that it ran (one INCR)."""
    _client().incr(COUNTER_KEY)
