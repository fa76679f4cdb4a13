"""Retry delays: exponential back-off with jitter, capped, honouring a provider's retry-after."""

from __future__ import annotations

import random

from loa.settings import RouteSettings


def retry_delay(
    limits: RouteSettings,
    attempt: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt `attempt + 1` (attempt 0 is the first send)."""
    ceiling = min(limits.backoff_max, limits.backoff * 2.0**attempt)
    # "equal jitter": at least half the back-off, so retries spread out but never bunch up early
    delay = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, limits.backoff_max))
    return delay


def throttle_delay(retry_after: float | None) -> float:
    """Seconds a throttled message waits before it is offered to the route again."""
    return 0.05 if retry_after is None else max(0.0, retry_after)
