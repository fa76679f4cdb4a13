"""The null adapter: accepts and discards, with optional latency and injected faults."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import Field, model_validator

from loa.adapters.registry import parse_options
from loa.message import ACCEPTED, Failed, Message, RetryLater, SendResult, Throttled
from loa.settings import ConfigModel


class NullOptions(ConfigModel):
    """Options of the null adapter; all faults are off by default."""

    latency: float = Field(default=0.0, ge=0, le=60, description="seconds per send call")
    retry_ratio: float = Field(default=0.0, ge=0, le=1)
    fail_ratio: float = Field(default=0.0, ge=0, le=1)
    capacity: float = Field(
        default=0.0, ge=0, description="messages per second accepted; beyond it: Throttled"
    )
    seed: int | None = None

    @model_validator(mode="after")
    def _ratios_fit(self) -> NullOptions:
        if self.retry_ratio + self.fail_ratio > 1:
            raise ValueError(
                f"retry_ratio + fail_ratio must not exceed 1 "
                f"(got {self.retry_ratio} + {self.fail_ratio})"
            )
        return self


class NullAdapter:
    """Discards messages; a stand-in provider for demos, benchmarks and fault tests."""

    def __init__(self, options: NullOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.sent = 0
        self._rng = random.Random(options.seed)
        self._clock = clock  # seconds, for the capacity window
        self._window_start = clock()
        self._window_count = 0

    @classmethod
    def create(cls, route: str, options: Mapping[str, Any]) -> NullAdapter:
        """Factory for the registry."""
        return cls(parse_options(NullOptions, route, options))

    async def send(self, messages: Sequence[Message]) -> Sequence[SendResult]:
        """Accept every message (or answer with the configured faults)."""
        opts = self.options
        if opts.latency:
            await asyncio.sleep(opts.latency)
        if not (opts.retry_ratio or opts.fail_ratio or opts.capacity):
            self.sent += len(messages)
            return [ACCEPTED] * len(messages)
        return [self._answer() for _ in messages]

    def _answer(self) -> SendResult:
        opts = self.options
        if opts.capacity and self._over_capacity():
            return Throttled()
        draw = self._rng.random()
        if draw < opts.fail_ratio:
            return Failed("injected permanent failure")
        if draw < opts.fail_ratio + opts.retry_ratio:
            return RetryLater("injected temporary failure")
        self.sent += 1
        return ACCEPTED

    def _over_capacity(self) -> bool:
        """A one-second window counter, like a carrier's TPS cap."""
        now = self._clock()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_count = now, 0
        if self._window_count >= self.options.capacity:
            return True
        self._window_count += 1
        return False

    async def ping(self) -> None:
        """Always reachable."""

    async def aclose(self) -> None:
        """Nothing to release."""
