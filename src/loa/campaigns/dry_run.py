"""What the dry run says beyond the counts: how long each route takes, and what looks wrong.

The counts come from planning itself (the columnar planner where it applies); this module adds
the estimated sending time per route at the route's rate, and the warnings an operator should
read before approving: region codes that are no province's, audience rules that match nobody.
"""

from __future__ import annotations

from loa.campaigns.plan import Plan
from loa.campaigns.planner import Report
from loa.campaigns.regions import KNOWN_CODES
from loa.settings import Settings

SHOWN = 5  # region codes listed in one warning at most


def eta(report: Report, settings: Settings) -> dict[str, float | None]:
    """Seconds each route needs for its share at its rate (None: the route is unlimited)."""
    times: dict[str, float | None] = {}
    for route, messages in report.by_route.items():
        limits = settings.routes.get(route)
        if limits is None or not limits.rate:
            times[route] = None
            continue
        units = messages if limits.unit == "messages" else report.parts_by_route[route]
        times[route] = round(units / limits.rate, 1)
    return times


def warnings(plan: Plan, report: Report) -> list[str]:
    """Region codes no province has, and audience rules that matched nobody."""
    found = []
    unknown = sorted(code for code in report.by_region if code != "?" and code not in KNOWN_CODES)
    if unknown:
        count = sum(report.by_region[code] for code in unknown)
        listed = ", ".join(unknown[:SHOWN]) + (", ..." if len(unknown) > SHOWN else "")
        found.append(f"{count:,} recipients have a region code that is no province's: {listed}")
    rules = plan.audience
    for code in sorted(rules.regions or ()):
        if not report.by_region[code]:
            found.append(f"audience.regions: nobody in the audience has region {code!r}")
    if (rules.tags is not None or rules.where) and report.filtered and not report.queued:
        found.append("the audience rules (tags, where) match nobody in the audience")
    return found


def missing_columns(plan: Plan, columns: list[str]) -> list[str]:
    """Errors: columns the audience rules read that the audience does not have."""
    return [
        f"audience rules read the column {column!r}, which the audience does not have"
        for column in sorted(plan.audience.columns - set(columns))
    ]
