"""The HTTP control API: campaigns, approvals, opt-outs, tokens and the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loa.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # lazily: every `loa` command imports loa.cli.api, and FastAPI takes a second to import
    if name == "create_app":
        from loa.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
