"""`loa status`: each route's backlog and counters, as a table or JSON."""

from __future__ import annotations

from dataclasses import asdict

from loa.cli.common import print_json
from loa.cli.tables import show
from loa.message import FINAL
from loa.settings import Settings
from loa.status import read_statuses

# (header, RouteStatus field): the default columns fit 80 columns; --wide shows every counter
COUNTERS = (
    ("waiting", "waiting"),
    ("in flight", "in_flight"),
    ("retrying", "delayed"),
    ("accepted", "accepted"),
    ("failed", "failed"),
)
WIDE_COUNTERS = (
    *COUNTERS[:3],
    *((outcome.value, outcome.value) for outcome in FINAL),
    ("retried", "retried"),
    ("throttled", "throttled"),
    ("redelivered", "redelivered"),
    ("unknown", "unknown"),
    ("possible dup", "possible_duplicate"),
    ("fb timeout", "fallback_timeout"),
    ("fb failed", "fallback_failed"),
)


async def print_status(settings: Settings, as_json: bool, wide: bool = False) -> None:
    """Print every route's status as a table (every counter with `wide`) or JSON."""
    rows = await read_statuses(settings)
    if as_json:
        print_json([asdict(r) for r in rows])
        return
    counters = WIDE_COUNTERS if wide else COUNTERS
    headers = ["route", "binds", *(header for header, _ in counters)]
    table = [
        [r.route, r.binds, *(f"{getattr(r, field):,}" for _, field in counters)] for r in rows
    ]
    show("loa routes", headers, table)
