"""A launched campaign's partitions planned in processes of their own, side by side.

The API server launches a large audience this way (`Campaigns.launch_in_processes`): each
partition is a fresh interpreter (spawned, never forked from a server that runs threads) given
the server's settings through a pipe, so no secret is written anywhere, and the server's own
event loop stays free for its requests, and no thread of it waits for them (their sentinels
do). A partition that fails logs only the kind of error (its message may quote an audience
row); a launch again resumes every partition from its checkpoint. The server stopping stops
them, and a server killed outright too: each watches the pipe to its parent.
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
            daemon=True,  # a server that exits takes them along; one killed, see plan_one
        )
        for index in range(count)
    ]
    try:
        for child in children:
            child.start()
        await asyncio.gather(*(_ended(child) for child in children))
    except BaseException:  # cancelled (the server stops), or a start failed: none goes on
        await asyncio.to_thread(_stop, [child for child in children if child.pid is not None])
        raise
    failed = [index for index, child in enumerate(children) if child.exitcode != 0]
    for child in children:
        child.close()
    if failed:
        raise CampaignError(
            f"partitions {failed} of {count} of campaign {campaign_id} failed (the log says "
            "why): launch again to go on from where each stopped"
        )


async def _ended(child: BaseProcess) -> None:
    """Wait for a process to end without holding a thread: its sentinel becomes readable."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def done() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(child.sentinel, done)
    try:
        await ended
    finally:
        loop.remove_reader(child.sentinel)
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
    """A partition's process: plan its share; exit 1 with the error's kind alone logged.

    It stops as soon as the server that started it is gone, however it went (kill -9 too): a
    server started again and launching again must not find it still planning beside the new
    one. The pipe multiprocessing gives it reads end-of-file the moment its parent exits.
    """
    import uvloop

    from loa.campaigns.service import Campaigns
    from loa.engine.connection import connect
    from loa.log import setup_logging

    setup_logging()
    partition = f"{index}/{count}"

    async def plan() -> None:
        if not settings.redis_url:
            raise ConfigError("partition processes need the server's redis_url")
        _stop_with_parent(asyncio.get_running_loop())
        client = connect(settings.redis_url)
        try:
            await Campaigns(settings, client).plan_partition(campaign_id, Partition(index, count))
        finally:
            await client.aclose()

    try:
        uvloop.run(plan())
    except asyncio.CancelledError:
        log.warning(
            "the server is gone: partition planning stops", extra=_about(campaign_id, partition)
        )
        raise SystemExit(1) from None
    except Exception as exc:  # noqa: BLE001 (its message may quote audience rows)
        log.error(
            "partition planning failed",
            extra={**_about(campaign_id, partition), "error": type(exc).__name__},
        )
        raise SystemExit(1) from None


def _stop_with_parent(loop: asyncio.AbstractEventLoop) -> None:
    parent = multiprocessing.parent_process()
    task = asyncio.current_task()
    if parent is None or parent.sentinel is None or task is None:
        return
    loop.add_reader(parent.sentinel, task.cancel)


def _about(campaign_id: str, partition: str) -> dict[str, str]:
    return {"campaign": campaign_id, "partition": partition}
