"""The console adapter: prints each message with its recipient masked, for trying templates."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from pydantic import Field

from loa.adapters.registry import parse_options
from loa.log import mask, mask_address
from loa.message import ACCEPTED, Message, SendResult
from loa.settings import ConfigModel

# Control characters (newlines, carriage returns, terminal escapes) and line separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class ConsoleOptions(ConfigModel):
    """How much of each body to print."""

    width: int = Field(default=120, ge=10, le=10_000)


class ConsoleAdapter:
    """Prints `route  ***678  [parts] body` per message to standard output.

    Output often ends up in logs, so the recipient is masked and so is any phone number or
    e-mail address in the body (a hotline number in a template shows as `***095` too);
    control characters are printed as spaces, so a body cannot move the cursor or add lines.
    """

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
            body = _CONTROL.sub(" ", mask(m.body))[: self.width]
            to = _CONTROL.sub(" ", mask_address(m.to))
            out.write(f"{self.route}  {to}  [{m.parts}] {body}\n")
        out.flush()
        return [ACCEPTED] * len(messages)

    async def aclose(self) -> None:
        """Nothing to release."""
