"""A deadline for request headers: a client that never finishes them is disconnected.

uvicorn closes idle keep-alive connections, but not one that sent half a request line and then
nothing (slowloris): each such connection would be held forever. This protocol gives every
request `timeout` seconds from the connection (or from the end of the previous response) to
its complete headers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def header_deadline(timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header deadline of `timeout` seconds."""

    class HeaderDeadline(H11Protocol):
        """Closes the connection when a request's headers are late."""

        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._reading_headers():
                return
            self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _reading_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            self._disarm()
            self.deadline = self.loop.call_later(timeout, self._late)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _late(self) -> None:
            self.deadline = None
            if self._reading_headers() and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline
