"""The console adapter: prints each message with its recipient masked, for trying templates."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, Field

from loa.adapters.registry import parse_options
from loa.log import mask_address
from loa.message import ACCEPTED, Message, SendResult


class ConsoleOptions(BaseModel):
    """How much of each body to print."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(default=120, ge=10, le=10_000)


class ConsoleAdapter:
    """Prints `route  ***678  body` per message to standard output."""

    def __init__(self, route: str, options: ConsoleOptions, stream: TextIO | None = None) -> None:
        self.route = route
        self.width = options.width
        self.stream = stream

    @classmethod
    def create(cls, route: str, options: Mapping[str, Any]) -> ConsoleAdapter:
        """Factory for the registry."""
        return cls(route, parse_options(ConsoleOptions, route, options))

    async def send(self, messages: Sequence[Message]) -> Sequence[SendResult]:
        """Print and accept every message."""
        out = self.stream or sys.stdout
        for m in messages:
            body = m.body.replace("\n", " ")[: self.width]
            out.write(f"{self.route}  {mask_address(m.to)}  [{m.parts}] {body}\n")
        out.flush()
        return [ACCEPTED] * len(messages)

    async def aclose(self) -> None:
        """Nothing to release."""
