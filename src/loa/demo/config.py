"""The demo's settings, rates and plan files, sized from the audience and the wanted duration."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from loa.demo.country import (
    CARRIERS,
    DEFAULT_SMS_ROUTE,
    EMERGENCY_PROVINCE,
    PROVINCES,
    SMS_ROUTES,
    ZALO_ROUTE,
    Carrier,
    route_of,
)
from loa.demo.people import Mix
from loa.demo.simulators import (
    ALERT_TEMPLATE,
    NO_ACCOUNT,
    PASSWORD,
    SILENT,
    ZALO_OA_SECRET,
    ZALO_TEMPLATE,
    ZALO_TOKEN,
    Endpoints,
    system_id,
)
from loa.engine.embedded import free_port
from loa.settings import Settings

SLACK = 1.2  # routes are configured this much faster than the load needs: retries, the alert
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
MIN_RATE = 100.0  # messages per second: a small demo still moves
ZALO_SIM_HEADROOM = 1.5  # the Zalo endpoint's TPS cap over the route's rate
BATCH = 50  # messages per queue entry: an alert waits for at most one batch per sender
SMS_CHUNK = BATCH  # SMS per adapter call: fewer round trips a message on a busy event loop
ZALO_CHUNK = BATCH  # Zalo requests per adapter call: the adapter runs them concurrently
ZALO_SENDERS = 4  # batches in flight on the Zalo route per process
SMS_SENDERS = 4  # most batches in flight per SMS route and process: each waits on round trips
HOLD = 0.5  # seconds a batch may keep a sender from an alert, at the route's rate
# how long the flood alert's Zalo messages wait for their delivered event before going by SMS
# (minutes in real life; seconds here, so the demo shows it)
FALLBACK_AFTER = "5s"
FLOOD_ALERT = "flood-alert.xml"  # the CAP file of the flood alert, in this package
VIETNAM = timezone(timedelta(hours=7))


@dataclass(frozen=True, slots=True)
class Rates:
    """Per route: the rate loa is configured for and the cap of the simulated provider."""

    route: dict[str, float]
    provider: dict[str, float]
    senders: dict[str, int]  # batches in flight per route and worker process


def default_duration(people: int) -> float:
    """Seconds the carriers' TPS caps are scaled to: 30 at 200,000 people, at least 10.

    At the default size two cores send slower than that: the machine, not the caps, paces it.
    """
    return max(10.0, 30.0 * people / 200_000)


def expected_load(people: int, mix: Mix) -> dict[str, float]:
    """Messages each route should carry for an audience of this size, on average."""
    reached = people * (1 - mix.malformed) * (1 - mix.opted_out)
    alert = next(p.millions for p in PROVINCES if p.code == EMERGENCY_PROVINCE) / sum(
        p.millions for p in PROVINCES
    )
    # people an SMS route carries: the advisory's (no Zalo id, no Zalo account) and the
    # alert's (the same, and those Zalo left undelivered)
    by_sms = (1 - mix.zalo) + mix.zalo * NO_ACCOUNT
    by_sms += alert * ((1 - mix.zalo) + mix.zalo * (NO_ACCOUNT + SILENT))
    load = dict.fromkeys(SMS_ROUTES, 0.0)
    shares = sum(c.share for c in CARRIERS)
    for carrier in CARRIERS:
        load[route_of(carrier)] += reached * carrier.share / shares * by_sms
    return {ZALO_ROUTE: reached * mix.zalo * (1 + alert), **load}


def rates_for(load: Mapping[str, float], duration: float, processes: int) -> Rates:
    """Rates that let every route carry its load in about `duration` (if the CPU keeps up).

    An SMS route gets as many senders as keep each batch under HOLD seconds at its rate: more
    senders move more at once, but each holds a batch an emergency alert has to wait for.
    """
    route = {name: max(MIN_RATE, float(round(n * SLACK / duration))) for name, n in load.items()}
    provider = {ZALO_ROUTE: float(round(route[ZALO_ROUTE] * ZALO_SIM_HEADROOM))}
    senders = {ZALO_ROUTE: ZALO_SENDERS}
    for carrier in CARRIERS:
        if carrier.route:
            rate = route[carrier.route]
            provider[carrier.route] = float(round(rate * carrier.headroom))
            fit = int(rate * HOLD / (BATCH * processes))
            senders[carrier.route] = max(1, min(SMS_SENDERS, fit))
    return Rates(route, provider, senders)


def demo_settings(
    base: Settings, endpoints: Endpoints, rates: Rates, namespace: str, audience: Path
) -> Settings:
    """Routes to the simulators (SMPP per carrier, Zalo ZNS), channels, the API that takes
    Zalo's delivered events, CAP alerts to `audience` (Zalo, then SMS), and quick timings."""
    routes: dict[str, Any] = {ZALO_ROUTE: _zalo_route(endpoints.zalo_url, rates)}
    for carrier in CARRIERS:
        if carrier.route:
            port = endpoints.smsc[carrier.name]
            routes[carrier.route] = _smpp_route(carrier, port, rates)
    data = base.model_dump(mode="json", exclude={"routes", "channels"})
    data.update(
        namespace=namespace,
        routes=routes,
        channels={
            "sms": {
                "default": DEFAULT_SMS_ROUTE,
                "carriers": {c.name: c.route for c in CARRIERS if c.route},
            },
            "zalo": {"default": ZALO_ROUTE},
        },
    )
    data["worker"] = {
        **data["worker"],
        "claim_idle": 10.0,
        "drain_timeout": 10.0,
        "idle_block": 0.1,  # an idle sender looks again soon: the alert is not kept waiting
        "metrics_port": free_port(),
    }
    data["queue"] = {**data["queue"], "batch_size": BATCH}
    data["planning"] = {"frequency_memory": 0}  # no plan here has a frequency cap
    data["events"] = {**data["events"], "receipt_ttl": 3600.0}
    data["api"] = {
        **data["api"],
        "host": "127.0.0.1",
        "port": endpoints.api,
        "webhook_secrets": {ZALO_ROUTE: ZALO_OA_SECRET},
    }
    data["cap"] = {
        **data["cap"],
        "audience": str(audience),
        "channels": ["zalo", "sms"],
        "language": "vi",
        "zalo": {
            "template_id": ALERT_TEMPLATE,
            "data": {"headline": "headline", "instruction": "instruction"},
        },
        "fallback_after": {"zalo": FALLBACK_AFTER},
    }
    return Settings.from_mapping(data, source="demo settings")


def _limits(rate: float, chunk: int) -> dict[str, Any]:
    return {
        "rate": rate,
        "shards": 2,
        "chunk": chunk,
        "burst": min(10.0, max(0.05, chunk / rate)),  # a chunk's tokens at once
        "max_attempts": 5,
        "backoff": 0.5,
        "backoff_max": 2.0,
        "timeout": 5.0,
    }


def _smpp_route(carrier: Carrier, port: int, rates: Rates) -> dict[str, Any]:
    return {
        "adapter": "smpp",
        "unit": "parts",
        "concurrency": rates.senders[carrier.route],
        **_limits(rates.route[carrier.route], SMS_CHUNK),
        "options": {
            "host": "127.0.0.1",
            "port": port,
            "system_id": system_id(carrier.name),
            "password": PASSWORD,
            "binds": 2,
            "window": 64,
            "source_addr": "BoYTe",
            "response_timeout": 4.0,
            "reconnect_max": 2.0,
        },
    }


def _zalo_route(url: str, rates: Rates) -> dict[str, Any]:
    return {
        "adapter": "zalo",
        "unit": "messages",
        "concurrency": rates.senders[ZALO_ROUTE],
        **_limits(rates.route[ZALO_ROUTE], ZALO_CHUNK),
        "options": {
            "base_url": url,
            "access_token": ZALO_TOKEN,
            "concurrency": 64,
            "connections": 64,
            "timeout": 4.0,
        },
    }


def write_settings(settings: Settings, path: Path) -> None:
    """The demo's settings as a file, for `loa ... -c` afterwards (the simulators are gone)."""
    data = settings.model_dump(mode="json", exclude_none=True)
    data["worker"]["metrics_port"] = 9750
    # no webhook secret in a file for later commands: the demo's API alone holds it (a dump
    # would write it masked, which no later command could load)
    data["api"].pop("webhook_secrets", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `loa demo`: its routes, namespace and data, for the commands it prints."]
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]", *(f"{_key(k)} = {_toml(v)}" for k, v in value.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml(key)


def _toml(value: Any) -> str:
    """A TOML value (inline tables for nested tables); JSON strings are TOML basic strings."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return orjson.dumps(value).decode()


def advisory_plan() -> str:
    """The vaccination advisory: Zalo first, SMS for whoever Zalo cannot reach."""
    return f'''# Written by `loa demo`: the vaccination advisory, Zalo first with SMS fallback.
name = "Tiêm nhắc vắc-xin sởi"
lane = "normal"
channels = ["zalo", "sms"]
sms_ascii = true

[templates]
zalo = {{ template_id = "{ZALO_TEMPLATE}", data = {{ name = "{{{{ name }}}}", province = "{{{{ province }}}}", hotline = "1900 9095" }} }}
sms = "Bo Y te: {{{{ name }}}} oi, hay tiem mui nhac lai vac-xin soi tai tram y te gan nha truoc 31/12. Hotline 1900 9095. Tu choi: soan STOP"

[schedule]
expires = "6h"
'''  # noqa: E501


def flood_alert(now: datetime, identifier: str) -> str:
    """The flood alert as its warning centre would publish it: a CAP 1.2 file in Vietnamese
    and English for the scenario's province, sent `now`, current for six hours."""
    template = resources.files("loa.demo").joinpath(FLOOD_ALERT).read_text(encoding="utf-8")
    local = now.astimezone(VIETNAM).replace(microsecond=0)
    return string.Template(template).substitute(
        identifier=identifier,
        sent=local.isoformat(),
        expires=(local + timedelta(hours=6)).isoformat(),
        province=EMERGENCY_PROVINCE,
    )
