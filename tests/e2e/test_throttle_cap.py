"""A throttled route settles at the carrier's real cap instead of halving and creeping back."""

from __future__ import annotations

import time

import pytest

from helpers import enqueue_async, messages, running, status_async, until
from loa.engine.connection import RedisClient
from loa.settings import Settings
from loa.sim.smsc import SmscOptions, SmscSimulator

pytestmark = pytest.mark.anyio

CAP = 200  # submits a second the carrier takes; the route is configured for 700


@pytest.fixture
def anyio_backend() -> object:
    """Seconds of real traffic: once, on uvloop (the worker's loop)."""
    return ("asyncio", {"use_uvloop": True})


@pytest.fixture
def redis_url(service_url: str) -> str:
    """The local Redis service only."""
    return service_url


@pytest.mark.soak
async def test_a_route_above_the_carriers_cap_runs_at_the_cap(
    make_settings, redis_client: RedisClient
) -> None:
    seconds = 40  # the promise holds over a minute; the first overload weighs less over time
    count = CAP * seconds
    async with SmscSimulator(SmscOptions(tps=CAP, tps_burst=1)) as smsc:
        settings: Settings = make_settings(
            routes={
                "carrier": {
                    "adapter": "smpp",
                    "rate": 700,
                    "options": {"port": smsc.port, "system_id": "loa", "enquire_link": 0},
                }
            }
        )
        await enqueue_async(settings, "carrier", messages(count))

        async def all_sent() -> bool:
            return (await status_async(settings, "carrier")).accepted >= count

        async with running(settings, redis_client):
            started = time.monotonic()
            await until(all_sent, seconds * 3, f"{count} messages through a {CAP}/s carrier")
            elapsed = time.monotonic() - started
        stats = smsc.stats()
    refused = stats["throttled"] / stats["submits"]
    rate = stats["accepted"] / elapsed
    print(f"accepted {rate:.0f}/s of a {CAP}/s cap, {refused:.2%} refused, {elapsed:.1f}s")
    assert stats["accepted"] == count
    assert rate >= 0.9 * CAP, f"the route ran at {rate / CAP:.0%} of the carrier's cap"
    assert refused < 0.02, f"{refused:.1%} of submits were refused"
