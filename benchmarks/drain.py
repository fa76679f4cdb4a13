"""Draining a planned campaign through real worker processes (null adapter), RSS sampled.

memory.py drains to measure the workers' memory; planner.py to measure the frequency memory the
workers leave behind (whom each campaign reached).
"""

from __future__ import annotations

import time
from typing import Any

import redis
import uvloop

from common import cpu_seconds, cpu_used
from engine import MB, RssSampler
from loa.campaigns.controls import campaign_controls
from loa.engine.connection import connect
from loa.engine.keys import shard_keys
from loa.engine.queue import Queues
from loa.engine.supervisor import Supervisor
from loa.message import FINAL
from loa.settings import Settings


async def _finished(url: str, settings: Settings) -> int:
    """Messages with a final outcome, over every shard of every route."""
    client = connect(url)
    try:
        shards = [
            keys
            for name, limits in settings.routes.items()
            for keys in shard_keys(settings.namespace, name, limits.shards)
        ]
        totals = await Queues(client, settings.namespace).stats(shards)
    finally:
        await client.aclose()
    return sum(
        value for key, value in totals.items() if key.split(":", 1)[1] in {str(o) for o in FINAL}
    )


def drain(
    workers: int, timeout: float, url: str, settings: Settings, queued: int
) -> dict[str, Any]:
    """Worker processes send the queued campaign to the null adapter; their RSS is sampled."""
    client = redis.Redis.from_url(url)
    supervisor = Supervisor(settings, processes=workers, controls=campaign_controls)
    supervisor.start()
    try:
        pids = supervisor.pids()
        sampler = RssSampler(supervisor.pids, interval=0.05)
        started = time.perf_counter()
        mark: tuple[float, int, dict[int, float]] | None = None  # at the first progress seen
        with sampler:
            done = 0
            while done < queued:
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"the workers finished {done:,} of {queued:,} in time")
                time.sleep(0.05)
                done = uvloop.run(_finished(url, settings))
                if mark is None and done > 0:
                    # from here on the workers are up: start-up (imports) is not per-message cost
                    mark = (time.perf_counter(), done, cpu_seconds(pids))
                    baseline = sampler.peak_mb(pids)
        ended = time.perf_counter()
        assert mark is not None
        cpu = cpu_used(mark[2], cpu_seconds(pids), pids)
        info = client.info("memory")
    finally:
        killed = supervisor.stop()
        client.close()
    measured = queued - mark[1]
    return {
        "messages": queued,
        "seconds": round(ended - started, 3),
        "seconds_from_first_progress": round(ended - mark[0], 3),
        "msgs_per_s": round(measured / (ended - mark[0])) if measured else None,
        "worker_processes": len(pids),
        "worker_rss_mb_at_first_progress": baseline,
        "worker_peak_rss_mb": sampler.peak_mb(pids),
        "worker_peak_rss_mb_each": [sampler.peak_mb([pid]) for pid in pids],
        "worker_cpu_us_per_message": round(cpu * 1e6 / measured, 2) if measured else None,
        "redis_used_memory_mb_after_drain": round(int(info["used_memory"]) / MB, 1),
        "redis_used_memory_peak_mb": round(int(info["used_memory_peak"]) / MB, 1),
        "killed_at_stop": killed,
    }
