"""An SMSC that stops answering mid-campaign: what went out unanswered is counted `unknown`,
nothing more is sent until it answers again, and every copy it took twice is counted."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from test_smpp_adapter import NodeSmsc, free_port, node_options, node_script  # noqa: F401

from helpers import enqueue_async, messages, running, status_async, until
from loa.adapters.smpp.adapter import SmppAdapter, SmppOptions
from loa.engine.connection import RedisClient
from loa.message import RetryLater
from loa.settings import Settings
from loa.sim.smsc import SmscOptions, SmscSimulator

pytestmark = pytest.mark.anyio


async def test_a_submit_never_answered_has_an_unknown_outcome() -> None:
    async with SmscSimulator(SmscOptions(latency=3.0)) as smsc:  # answers after we gave up
        options = SmppOptions(port=smsc.port, system_id="loa", response_timeout=0.3)
        adapter = SmppAdapter("carrier", options)
        try:
            (result,) = await adapter.send(messages(1))
        finally:
            await adapter.aclose()
    assert isinstance(result, RetryLater) and result.unknown, "it may have been taken"
    # nothing written at all (no SMSC there): a plain retry, nobody can have it twice
    adapter = SmppAdapter("carrier", SmppOptions(port=free_port(), system_id="loa"))
    try:
        (result,) = await adapter.send(messages(1))
    finally:
        await adapter.aclose()
    assert isinstance(result, RetryLater) and not result.unknown


@pytest.fixture
def anyio_backend() -> object:
    """Seconds of real traffic against a process: once, on uvloop (the worker's loop)."""
    return ("asyncio", {"use_uvloop": True})


@pytest.fixture
def redis_url(service_url: str) -> str:
    """The local Redis service only."""
    return service_url


@pytest.mark.soak
async def test_an_smsc_paused_mid_campaign_duplicates_only_what_is_counted(
    make_settings,
    redis_client: RedisClient,
    node_script: Path,  # noqa: F811
) -> None:
    smsc = NodeSmsc(node_script, "--record")
    total = 1500
    try:
        settings: Settings = make_settings(
            worker={"claim_idle": 30.0},
            routes={
                "carrier": {
                    "adapter": "smpp",
                    "rate": 200,
                    "shards": 2,
                    "timeout": 4.0,
                    "backoff": 0.5,
                    "backoff_max": 2.0,
                    "max_attempts": 20,
                    "options": node_options(
                        "loa", port=smsc.port, response_timeout=1.5, enquire_link=0
                    ),
                }
            },
        )
        await enqueue_async(settings, "carrier", messages(total))

        def recorded() -> list[dict[str, Any]]:
            return [e for e in list(smsc.events) if e["event"] == "message"]

        async with running(settings, redis_client):

            async def under_way() -> bool:
                return len(recorded()) >= 300

            await until(under_way, 30, "the campaign under way")
            os.kill(smsc.proc.pid, signal.SIGSTOP)  # the SMSC hangs: connected, silent
            try:
                await asyncio.sleep(8)
                held = await status_async(settings, "carrier")
            finally:
                os.kill(smsc.proc.pid, signal.SIGCONT)

            async def all_accepted() -> bool:
                return (await status_async(settings, "carrier")).accepted >= total

            await until(all_accepted, 120, "every message after the pause")
        final = await status_async(settings, "carrier")

        async def settled() -> bool:  # the SMSC's records trail its answers a little
            before = len(recorded())
            await asyncio.sleep(0.5)
            return len(recorded()) == before >= total

        await until(settled, 30, "the SMSC's records")
    finally:
        smsc.close()
    copies = collections.Counter(event["destination_addr"] for event in recorded())
    assert len(copies) == total, "a message was lost"
    duplicates = sum(n - 1 for n in copies.values())
    print(
        f"unknown {final.unknown}, possible_duplicate {final.possible_duplicate}, "
        f"redelivered {final.redelivered}; the SMSC saw {duplicates} duplicates"
    )
    assert final.unknown > 0, "the pause left sends unanswered"
    assert held.unknown <= final.unknown
    assert duplicates == final.possible_duplicate + final.redelivered
    # held while the SMSC was silent: only what was in flight when it stopped went twice
    assert duplicates <= final.unknown
    assert final.accepted == total and final.dead == 0
