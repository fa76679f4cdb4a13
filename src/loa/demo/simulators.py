"""The simulated carriers in a child process: an SMSC per carrier and a Zalo ZNS endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any

import uvloop

from loa.demo.country import CARRIERS
from loa.engine.embedded import free_port
from loa.errors import LoaError
from loa.sim.http import HttpSimulator, SimOptions
from loa.sim.smsc import SmscSimulator

ZALO_TOKEN = "demo-zalo-oa-token"
ZALO_TEMPLATE = "248613"
ALERT_TEMPLATE = "248700"  # the ZNS template CAP alerts go out with (cap.zalo)
ZALO_APP_ID = "demo-zalo-app"
ZALO_OA_SECRET = "demo-zalo-oa-secret"  # signs the delivered events Zalo posts to loa's webhook
PASSWORD = "demo"
START_TIMEOUT = 30.0
NO_ACCOUNT = 0.08  # of the Zalo ids the audience holds, those Zalo answers -118 for
# of the flood alert's Zalo messages, those Zalo accepts and never delivers (a phone off, an
# app not opened): no delivered event comes, and loa sends them by SMS after fallback_after
SILENT = 0.12


class DemoError(LoaError, RuntimeError):
    """The demo could not set itself up (a simulator could not start)."""


def system_id(carrier: str) -> str:
    """The SMPP account loa binds with at a carrier."""
    return f"loa-{carrier}"[:15]


def zalo_options(seed: int, tps: float, webhook: str | None = None) -> SimOptions:
    """The Zalo endpoint's options; the audience generator asks the same ones who has Zalo,
    and whose alert Zalo leaves undelivered. Delivered events are posted to `webhook` for the
    alert's template only: the advisory's hundred thousand would only load the demo."""
    return SimOptions(
        seed=seed,
        zalo_token=ZALO_TOKEN,
        no_zalo_ratio=NO_ACCOUNT,
        zalo_templates=[ZALO_TEMPLATE, ALERT_TEMPLATE],
        tps=tps,
        keep_ids=0,  # counts only: 200,000 ids would be memory for nothing
        zalo_webhook=webhook,
        zalo_app_id=ZALO_APP_ID,
        zalo_oa_secret=ZALO_OA_SECRET,
        zalo_silent_ratio=SILENT,
        zalo_receipt_templates=[ALERT_TEMPLATE],
    )


def smsc_options(carrier: str, tps: float, seed: int) -> dict[str, Any]:
    """One carrier's SMSC: its account, TPS cap, receipt delay and delivered/undelivered mix."""
    spec = next(c for c in CARRIERS if c.name == carrier)
    return {
        "smsc_id": spec.label[:15].upper(),
        "accounts": {system_id(carrier): PASSWORD},
        "tps": tps,
        "latency": 0.002,
        "latency_jitter": 0.004,
        "receipt_delay": spec.receipt_delay,
        "undelivered_ratio": spec.undelivered,
        "expired_ratio": spec.expired,
        "bad_destination_ratio": spec.bad_destinations,
        "seed": seed,
        "store": 0,  # counts only
    }


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the simulators listen: an SMPP port per carrier, the Zalo endpoint's port; and
    where loa's API takes Zalo's delivered events."""

    smsc: dict[str, int]
    zalo: int
    api: int

    @property
    def zalo_url(self) -> str:
        """The Zalo endpoint's base URL."""
        return f"http://127.0.0.1:{self.zalo}"

    def webhook(self, route: str) -> str:
        """loa's receipt webhook of `route`, where the Zalo endpoint posts delivered events."""
        return f"http://127.0.0.1:{self.api}/api/v1/webhooks/{route}"

    @classmethod
    def pick(cls, carriers: list[str]) -> Endpoints:
        """Free ports now, so workers can be configured while the simulators start."""
        return cls({name: free_port() for name in carriers}, free_port(), free_port())


def serve(
    conn: Connection, smscs: Mapping[str, dict[str, Any]], zalo: SimOptions, at: Endpoints
) -> None:  # pragma: no cover - runs in the child process; the demo test drives it
    """Child process entry: run the simulators until the parent says stop (or goes away)."""
    uvloop.run(_serve(conn, smscs, zalo, at))


async def _serve(
    conn: Connection, smscs: Mapping[str, dict[str, Any]], zalo: SimOptions, at: Endpoints
) -> None:
    carriers = {
        name: SmscSimulator(options, name=name, port=at.smsc[name])
        for name, options in smscs.items()
    }
    http = HttpSimulator(zalo, port=at.zalo)
    async with contextlib.AsyncExitStack() as stack:
        try:
            for sim in carriers.values():
                await stack.enter_async_context(sim)
            await stack.enter_async_context(http)
        except OSError as exc:  # a port taken since it was picked
            conn.send(f"a simulator cannot listen: {exc}")
            return
        conn.send("ready")
        while True:
            try:
                request = await asyncio.to_thread(conn.recv)
            except (EOFError, OSError):
                return  # the parent is gone: nobody to report to
            if request[0] == "stop":
                break
            conn.send(await _answer(request, carriers, http))
    conn.send(_stats(carriers, http))  # after the stop: every connection is closed


async def _answer(
    request: tuple[Any, ...], carriers: Mapping[str, SmscSimulator], http: HttpSimulator
) -> Any:
    if request[0] == "mo":
        _, carrier, source, destination, text = request
        try:
            return await carriers[carrier].send_mo(source, destination, text)
        except (LoaError, TimeoutError, ConnectionError) as exc:
            return f"{type(exc).__name__}: {exc}"
    return _stats(carriers, http)


def _stats(carriers: Mapping[str, SmscSimulator], http: HttpSimulator) -> dict[str, Any]:
    snapshot = http.snapshot()
    zalo = snapshot["zalo"]
    zalo.pop("ids", None)
    zalo.pop("accepted", None)
    found = {"smsc": {name: sim.stats() for name, sim in carriers.items()}, "zalo": zalo}
    if "citizens" in snapshot:  # the second act's citizens who answer by Zalo
        found["zalo_citizens"] = snapshot["citizens"]
    return found


class Simulators:
    """The parent's handle on the simulator process.

    The simulators run on their own event loop in their own process, so their work never
    delays the workers' and a worker never delays a receipt. The parent talks to the child over
    a pipe: it asks for stats, for a citizen's reply (an MO through a carrier's SMSC), and
    finally for the stop, whose answer is the simulators' last counts.
    """

    def __init__(
        self, smscs: Mapping[str, dict[str, Any]], zalo: SimOptions, at: Endpoints
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process: SpawnProcess = context.Process(
            target=serve, args=(child, dict(smscs), zalo, at), name="loa-demo-sims", daemon=True
        )
        self._lock = threading.Lock()
        self.endpoints = at
        self.final: dict[str, Any] | None = None

    def start(self) -> None:
        """Start the process; `ready()` waits until every simulator listens."""
        self.process.start()

    def ready(self) -> None:
        """Wait until every simulator listens; DemoError if they cannot."""
        if not self._conn.poll(START_TIMEOUT):
            raise DemoError(f"the simulators did not start within {START_TIMEOUT:g}s")
        answer = self._conn.recv()
        if answer != "ready":
            raise DemoError(str(answer))

    def _call(self, *request: Any) -> Any:
        with self._lock:
            self._conn.send(request)
            return self._conn.recv()

    async def stats(self) -> dict[str, Any]:
        """The simulators' counts now."""
        return dict(await asyncio.to_thread(self._call, "stats"))

    async def reply(self, carrier: str, source: str, destination: str, text: str) -> int | str:
        """A citizen's SMS through their carrier's SMSC: the deliver_sm_resp status, or why not."""
        answer: int | str = await asyncio.to_thread(
            self._call, "mo", carrier, source, destination, text
        )
        return answer

    def stop(self) -> dict[str, Any] | None:
        """Stop the simulators; returns their last counts (None if the process was lost)."""
        if self.final is None and self.process.is_alive():
            with self._lock, contextlib.suppress(EOFError, OSError):
                self._conn.send(("stop",))
                if self._conn.poll(START_TIMEOUT):
                    self.final = self._conn.recv()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        return self.final
