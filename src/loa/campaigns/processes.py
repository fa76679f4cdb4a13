"""A launched campaign's partitions planned in processes of their own, side by side.

The API server launches a large audience this way (`Campaigns.launch_in_processes`): each
partition is a fresh interpreter (spawned, never forked from a server that runs threads) given
the server's settings through a pipe, so no secret is written anywhere, and the server's own
event loop stays free for its requests. A partition that fails says only the kind of error in
the log (its message may quote an audience row); a launch again resumes every partition from
its checkpoint. Cancelling the wait (the server stopping) stops the processes the same way.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Sequence
from multiprocessing.process import BaseProcess

from loa.campaigns.partitions import Partition
from loa.errors import CampaignError, ConfigError
from loa.settings import Settings

log = logging.getLogger(__name__)
STOP_SECONDS = 10.0  # a partition asked to stop has this long before it is killed


async def plan_in_processes(settings: Settings, campaign_id: str, count: int) -> None:
    """Plan partitions 0..count-1 of a launched campaign, one process each, and wait for all.

    Raises CampaignError naming the partitions that failed (launch again to go on).
    """
    spawn = multiprocessing.get_context("spawn")
    children = [
        spawn.Process(
            target=plan_one,
            args=(settings, campaign_id, index, count),
            name=f"loa-plan-{campaign_id}-{index}of{count}",
            daemon=True,  # the server going away takes them along; a launch again resumes
        )
        for index in range(count)
    ]
    for child in children:
        child.start()
    try:
        await asyncio.to_thread(_join, children)
    except asyncio.CancelledError:
        await asyncio.to_thread(_stop, children)
        raise
    failed = [index for index, child in enumerate(children) if child.exitcode != 0]
    for child in children:
        child.close()
    if failed:
        raise CampaignError(
            f"partitions {failed} of {count} of campaign {campaign_id} failed: "
            "launch again to go on"
        )


def _join(children: Sequence[BaseProcess]) -> None:
    for child in children:
        child.join()


def _stop(children: Sequence[BaseProcess]) -> None:
    """Ask each to stop (they resume from their checkpoints later), then make sure."""
    for child in children:
        if child.is_alive():
            child.terminate()
    for child in children:
        child.join(STOP_SECONDS)
        if child.is_alive():
            child.kill()
            child.join()


def plan_one(settings: Settings, campaign_id: str, index: int, count: int) -> None:
    """A partition's process: plan its share; exit 1 with the error's kind alone logged."""
    import uvloop

    from loa.campaigns.service import Campaigns
    from loa.engine.connection import connect

    async def plan() -> None:
        if not settings.redis_url:
            raise ConfigError("partition processes need the server's redis_url")
        client = connect(settings.redis_url)
        try:
            await Campaigns(settings, client).plan_partition(campaign_id, Partition(index, count))
        finally:
            await client.aclose()

    try:
        uvloop.run(plan())
    except Exception as exc:  # noqa: BLE001 (its message may quote audience rows)
        logging.basicConfig(level=logging.INFO)
        log.error(
            "partition planning failed",
            extra={"campaign": campaign_id, "partition": f"{index}/{count}",
                   "error": type(exc).__name__},
        )  # fmt: skip
        raise SystemExit(1) from None
