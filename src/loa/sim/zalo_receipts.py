"""The Zalo simulator's delivery events: `user_received_message` posted to a webhook, signed
as Zalo signs them, for the messages it delivers; silence for those it never does."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson

log = logging.getLogger(__name__)

ATTEMPTS = 5  # a webhook that answers an error is tried again, as Zalo does (briefly here)
RETRY_PAUSE = 0.2  # seconds between two attempts


def zalo_signature(app_id: str, body: bytes, timestamp: str, secret: str) -> str:
    """X-ZEvent-Signature: hex sha256 of app_id + body + timestamp + the OA's secret key."""
    return hashlib.sha256(app_id.encode() + body + f"{timestamp}{secret}".encode()).hexdigest()


def received_event(app_id: str, msg_id: str, tracking_id: str) -> dict[str, Any]:
    """Zalo's event for a ZNS that reached the phone, stamped now (milliseconds, as text)."""
    stamp = str(int(time.time() * 1000))
    return {
        "app_id": app_id,
        "oa_id": "579745863508352884",
        "event_name": "user_received_message",
        "sender": {"id": "579745863508352884"},
        "recipient": {"id": "8413927584230111"},
        "message": {"msg_id": msg_id, "delivery_time": stamp, "tracking_id": tracking_id},
        "timestamp": stamp,
    }


class ReceiptPoster:
    """Posts delivery events after a delay, one task per event, until closed."""

    def __init__(self, url: str, app_id: str, secret: str, outcomes: Counter[str]) -> None:
        self.url = url
        self.app_id = app_id
        self.secret = secret
        self.outcomes = outcomes  # the Zalo endpoint's: receipt_posted, receipt_refused
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def later(self, delay: float, msg_id: str, tracking_id: str) -> None:
        """Post the delivered event of `msg_id` in `delay` seconds."""
        if self._session is None:  # one client for every event, made on the server's loop
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        task = asyncio.get_running_loop().create_task(self._post(delay, msg_id, tracking_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def waiting(self) -> int:
        """Events not posted yet."""
        return len(self._tasks)

    async def _post(self, delay: float, msg_id: str, tracking_id: str) -> None:
        await asyncio.sleep(delay)
        assert self._session is not None
        event = received_event(self.app_id, msg_id, tracking_id)
        body = orjson.dumps(event)
        signature = zalo_signature(self.app_id, body, event["timestamp"], self.secret)
        headers = {"X-ZEvent-Signature": signature, "Content-Type": "application/json"}
        for _ in range(ATTEMPTS):
            try:
                async with self._session.post(self.url, data=body, headers=headers) as answer:
                    if answer.status < 300:
                        self.outcomes["receipt_posted"] += 1
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("zalo webhook not reached", extra={"error": repr(exc)})
            await asyncio.sleep(RETRY_PAUSE)
        self.outcomes["receipt_refused"] += 1

    async def aclose(self) -> None:
        """Drop the events not posted yet and close the client."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
