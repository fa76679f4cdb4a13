"""Zalo: ZNS sending (adapter.py) and the OA webhook's verification and events (webhook.py)."""

from __future__ import annotations

from loa.adapters.zalo.adapter import ZaloAdapter, ZaloOptions

__all__ = ["ZaloAdapter", "ZaloOptions"]
