"""The end of the demo as data: counts per route and campaign, and every reconciliation check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loa.demo.config import Rates
from loa.demo.country import CARRIERS, SMS_ROUTES, ZALO_ROUTE
from loa.demo.scenario import CampaignRun, State


@dataclass(frozen=True, slots=True)
class Check:
    """loa's count beside the same count kept elsewhere; `source` says where.

    "smsc" and "zalo": what a simulator received, refused or receipted; "audience": what the
    generated file must yield. The demo reconciles when every check agrees, to the message.
    """

    what: str
    loa: int
    other: int
    source: str

    @property
    def ok(self) -> bool:
        """Whether the two agree."""
        return self.loa == self.other

    def as_json(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "what": self.what,
            "loa": self.loa,
            "other": self.other,
            "source": self.source,
            "ok": self.ok,
        }


def route_rows(state: State, rates: Rates, sims: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per route: loa's counts and the simulator's own beside them."""
    by_route = state.by_route()
    rows = []
    for route in (ZALO_ROUTE, *SMS_ROUTES):
        counts = by_route.get(route, {})
        row: dict[str, Any] = {
            "channel": "zalo" if route == ZALO_ROUTE else "sms",
            "route": route,
            "rate": rates.route[route],
            "provider_tps": rates.provider[route],
            "senders_per_process": rates.senders[route],
            "sent": counts.get("accepted", 0),
            "delivered": counts.get("delivered", 0),
            "undelivered": counts.get("undelivered", 0),
            "failed": counts.get("failed", 0) + counts.get("dead", 0),
            "fallback": counts.get("fallback", 0),
            "fallback_timeout": counts.get("fallback_timeout", 0),
            "expired": counts.get("expired", 0),
            "suppressed": counts.get("suppressed", 0),
            "throttled": counts.get("throttled", 0),
            "retried": counts.get("retried", 0),
            "done_at_s": round(state.route_done_at.get(route, 0.0), 2) or None,
            "sim": _sim_counts(route, sims),
        }
        rows.append(row)
    return rows


def _sim_counts(route: str, sims: dict[str, Any]) -> dict[str, int]:
    if route == ZALO_ROUTE:
        zalo = sims.get("zalo", {})
        outcomes = zalo.get("outcomes", {})
        return {
            "received": int(zalo.get("received", 0)),
            "accepted": int(outcomes.get("accepted", 0)),
            "no_account": int(outcomes.get("no_account", 0)),
            "over_tps": int(outcomes.get("over_tps", 0)),
            "silent": int(outcomes.get("silent", 0)),
            "delivered_events": int(outcomes.get("receipt_posted", 0)),
        }
    carrier = next(c.name for c in CARRIERS if c.route == route)
    smsc = sims.get("smsc", {}).get(carrier, {})
    names = (
        "submits",
        "accepted",
        "throttled",
        "bad_destinations",
        "errors",
        "unanswered",
        "receipts_delivered",
        "receipts_undelivered",
        "receipts_expired",
        "receipts_acked",
        "mo_acked",
        "binds",
    )
    return {name: int(smsc.get(name, 0)) for name in names}


def checks(state: State, rows: list[dict[str, Any]]) -> list[Check]:
    """Every reconciliation check of the run."""
    found: list[Check] = []
    for row in rows:
        found += _zalo_checks(row) if row["channel"] == "zalo" else _smsc_checks(row)
    found += _audience_checks(state)
    mo = sum(row["sim"].get("mo_acked", 0) for row in rows)
    found.append(Check("replies read from the SMSCs' deliver_sm", len(state.replies), mo, "smsc"))
    return found


def _zalo_checks(row: dict[str, Any]) -> list[Check]:
    sim, route = row["sim"], row["route"]
    tried = row["sent"] + row["fallback"] + row["throttled"] + row["failed"]
    return [
        Check(f"{route}: requests", tried, sim["received"], "zalo"),
        Check(f"{route}: accepted", row["sent"], sim["accepted"], "zalo"),
        Check(f"{route}: no account (-118) -> SMS", row["fallback"], sim["no_account"], "zalo"),
        Check(f"{route}: over the TPS cap (429)", row["throttled"], sim["over_tps"], "zalo"),
        Check(f"{route}: delivered events", row["delivered"], sim["delivered_events"], "zalo"),
        Check(
            f"{route}: never delivered -> SMS after fallback_after",
            row["fallback_timeout"],
            sim["silent"],
            "zalo",
        ),
    ]


def _smsc_checks(row: dict[str, Any]) -> list[Check]:
    sim, route = row["sim"], row["route"]
    undelivered = sim["receipts_undelivered"] + sim["receipts_expired"]
    submitted = row["sent"] + row["throttled"] + row["failed"]
    return [
        Check(f"{route}: submit_sm received", submitted, sim["submits"], "smsc"),
        Check(f"{route}: submit_sm accepted", row["sent"], sim["accepted"], "smsc"),
        Check(f"{route}: throttled (ESME_RTHROTTLED)", row["throttled"], sim["throttled"], "smsc"),
        Check(
            f"{route}: refused (ESME_RINVDSTADR)", row["failed"], sim["bad_destinations"], "smsc"
        ),
        Check(f"{route}: delivered receipts", row["delivered"], sim["receipts_delivered"], "smsc"),
        Check(f"{route}: undelivered receipts", row["undelivered"], undelivered, "smsc"),
    ]


def _audience_checks(state: State) -> list[Check]:
    facts, advisory, emergency = state.facts, state.advisory, state.emergency
    planned = advisory.report
    return [
        Check(
            "advisory: malformed rows reported",
            planned.invalid if planned else 0,
            len(facts.malformed),
            "audience",
        ),
        Check(
            "advisory: opted out before it",
            planned.suppressed if planned else 0,
            len(facts.opted_out),
            "audience",
        ),
        Check(
            "advisory: people queued", _get(advisory, "queued"), facts.advisory_people, "audience"
        ),
        Check(
            "advisory: messages with an outcome",
            advisory.finished,
            facts.advisory_people,
            "audience",
        ),
        Check(
            "advisory: Zalo fallbacks to SMS",
            _get(advisory, "fallback"),
            facts.no_account,
            "audience",
        ),
        Check(
            "emergency: people queued",
            _get(emergency, "queued"),
            facts.emergency_people,
            "audience",
        ),
        Check(
            "emergency: messages with an outcome (and the SMS sent for silence)",
            emergency.finished,
            facts.emergency_people + facts.emergency_silent,
            "audience",
        ),
        Check(
            "emergency: no Zalo account -> SMS at once",
            _get(emergency, "fallback"),
            facts.emergency_no_account,
            "audience",
        ),
        Check(
            "emergency: Zalo silent past fallback_after -> SMS",
            _get(emergency, "fallback_timeout"),
            facts.emergency_silent,
            "audience",
        ),
        Check(
            "emergency: Zalo delivered events counted",
            int(emergency.status.get("by_route", {}).get(ZALO_ROUTE, {}).get("delivered", 0)),
            facts.emergency_zalo_delivered,
            "audience",
        ),
        *(
            Check(
                f"emergency: people reached in {language}",
                emergency.report.by_language.get(language, 0) if emergency.report else 0,
                count,
                "audience",
            )
            for language, count in sorted(facts.emergency_languages.items())
        ),
        Check("STOP replier on the opt-out list", int(state.replier_opted_out), 1, "audience"),
    ]


def _get(run: CampaignRun, name: str) -> int:
    return int(run.status.get(name, 0))


def campaign_summary(run: CampaignRun) -> dict[str, Any]:
    """A campaign's counters and timings (seconds after its launch)."""
    status = run.status
    names = (
        "state",
        "total",
        "queued",
        "sent",
        "delivered",
        "undelivered",
        "failed",
        "fallback",
        "fallback_timeout",
        "fallback_failed",
        "expired",
        "suppressed",
        "invalid",
        "filtered",
        "duplicate",
    )
    data: dict[str, Any] = {"id": run.id, "name": status.get("name", "")}
    data.update({name: status.get(name, 0) for name in names})
    launched = run.launched or 0.0
    data["launched_at_s"] = _round(run.launched)
    data["planned_after_s"] = _round(run.planned - launched if run.planned else None)
    data["first_message_after_s"] = _round(run.first - launched if run.first else None)
    data["reached_everyone_after_s"] = _round(run.reached - launched if run.reached else None)
    data["reached_everyone_at_s"] = _round(run.reached)
    data["done_after_s"] = _round(run.done - launched if run.done else None)
    data["done_at_s"] = _round(run.done)
    report = run.report
    data["invalid_rows"] = (
        [{"line": line, "reason": reason} for line, reason in report.errors] if report else []
    )
    data["languages"] = dict(report.by_language) if report else {}
    return data


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def build(
    state: State,
    rates: Rates,
    sims: dict[str, Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The whole summary as JSON-ready data; `reconciled` is the verdict."""
    rows = route_rows(state, rates, sims)
    found = checks(state, rows)
    overlap = {route: max(0, end - start) for route, (start, end) in state.overlap.items()}
    optouts = sum(1 for reply in state.replies if reply.get("optout") == "1")
    return {
        **meta,
        "reconciled": all(check.ok for check in found) and state.receipts_complete,
        "receipts_complete": state.receipts_complete,
        "routes": rows,
        "campaigns": {
            "advisory": campaign_summary(state.advisory),
            "emergency": {
                **campaign_summary(state.emergency),
                "advisory_sms_while_it_ran": sum(overlap.values()),
                "advisory_sms_while_it_ran_by_route": overlap,
            },
        },
        "audience": {
            "path": str(state.facts.path),
            "rows": state.facts.rows,
            "malformed_lines": state.facts.malformed[:20],
            "malformed": len(state.facts.malformed),
            "opted_out_before": len(state.facts.opted_out),
            "with_zalo_id": state.facts.with_zalo,
        },
        "inbound": {
            "replies": len(state.replies),
            "optouts": optouts,
            "replier_line": state.facts.replier_line,
            "replier_opted_out": state.replier_opted_out,
        },
        "checks": [check.as_json() for check in found],
        "events": [{"at_s": round(at, 2), "event": text} for at, text in state.events],
    }
