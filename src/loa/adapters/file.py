"""The file adapter: appends each message as one JSON line, for development and reconciliation."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field

from loa.adapters.registry import parse_options
from loa.errors import ConfigError
from loa.message import Accepted, Message, SendResult
from loa.settings import ConfigModel


class FileOptions(ConfigModel):
    """Where to write; `{route}` and `{pid}` in the path are filled in."""

    path: str = Field(min_length=1)
    fsync: bool = False


class FileAdapter:
    """One JSON object per message, written with `os.write`: a killed process loses nothing sent."""

    def __init__(self, route: str, options: FileOptions) -> None:
        self.route = route
        try:
            self.path = Path(options.path.format(route=route, pid=os.getpid()))
        except (KeyError, IndexError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"routes.{route}.options.path: {options.path!r} may use only {{route}} and "
                f"{{pid}} (write {{{{ and }}}} for literal braces): {type(exc).__name__}: {exc}"
            ) from None
        self.fsync = options.fsync
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"routes.{route}.options.path: cannot create {self.path.parent}: {exc.strerror}"
            ) from None

    @classmethod
    def create(cls, route: str, options: Mapping[str, Any]) -> FileAdapter:
        """Factory for the registry."""
        return cls(route, parse_options(FileOptions, route, options))

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    async def send(self, messages: Sequence[Message]) -> Sequence[SendResult]:
        """Append the messages; each provider id is the message id."""
        stamp = time.time()
        lines = b"".join(
            orjson.dumps(
                {
                    "id": m.id,
                    "to": m.to,
                    "body": m.body,
                    "parts": m.parts,
                    "route": self.route,
                    "ts": stamp,
                    "extra": m.extra,
                }
            )
            + b"\n"
            for m in messages
        )
        fd = self._open()
        view = memoryview(lines)
        while view:  # a regular file takes it all at once, but os.write may write less
            view = view[os.write(fd, view) :]
        if self.fsync:
            os.fsync(fd)
        return [Accepted.one(m.id) for m in messages]

    async def ping(self) -> None:
        """The file can be opened for appending."""
        self._open()

    async def aclose(self) -> None:
        """Close the file; safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
