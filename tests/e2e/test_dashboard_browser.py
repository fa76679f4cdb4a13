"""The dashboard in a real headless Chromium: counts move, Pause pauses, viewers get no buttons.

A real server (uvicorn on loopback), a real worker and a real Redis: a campaign of 400 people
goes out through the null adapter at 20 a second, so it would take about 20 seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from loa.access.identity import Role, program
from loa.access.tokens import Tokens
from loa.api import create_app
from loa.engine.connection import connect
from loa.engine.embedded import free_port
from loa.engine.worker import Worker, connections_needed
from loa.settings import Settings

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

CHROMIUM = Path("/usr/bin/chromium")
PEOPLE = 400
RATE = 20  # messages a second: the campaign would take PEOPLE / RATE = 20 seconds
PLAN = (
    'name = "Khuyến cáo <b>COVID</b>"\nlane = "normal"\nchannels = ["sms"]\nsms_ascii = true\n'
    '[templates]\nsms = "Bộ Y tế: {{ name }} ơi, hãy tiêm vắc-xin."\n'
)
WAIT_MS = 8000  # the longest any step waits for the page
NOTHING = "\N{EN DASH}"  # what the page shows before it has a value


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, which `make tools` (run by `make test`) installs."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make tools` installs it (apt, as root)")
    return CHROMIUM


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


class Background:
    """A coroutine factory run on its own event loop in a thread, stopped on request."""

    def __init__(
        self, name: str, main: Callable[[Background], Any], up: Callable[[], bool] = lambda: True
    ) -> None:
        self.main = main
        self.up = up  # true once it serves
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_soon: Callable[[], None] = lambda: None
        self.ready = threading.Event()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.main(self))
        except Exception as exc:  # noqa: BLE001  # re-raised by stop() in the test's thread
            self.error = exc
            self.ready.set()

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        assert self.ready.wait(timeout), f"{self.thread.name} did not start"
        while not self.up() and self.error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.error is not None:
            raise self.error
        assert self.up(), f"{self.thread.name} did not start serving"

    def stop(self, timeout: float = 30.0) -> None:
        if self.loop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_soon)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.thread.name} did not stop"
        if self.error is not None:
            raise self.error


def worker_thread(settings: Settings) -> Background:
    async def main(me: Background) -> None:
        redis = connect(
            settings.redis_url or "", max_connections=connections_needed(settings, None)
        )
        worker = Worker(settings, redis)
        me.loop, me.stop_soon = asyncio.get_running_loop(), worker.stop
        me.ready.set()
        try:
            await worker.run()
        finally:
            await redis.aclose()

    return Background("worker", main)


def api_thread(settings: Settings, port: int) -> Background:
    url = settings.redis_url or ""
    config = uvicorn.Config(
        create_app(settings, lambda: connect(url)),
        host="127.0.0.1",
        port=port,
        log_config=None,
        ws="none",
        lifespan="on",
    )
    server = uvicorn.Server(config)

    def stop() -> None:
        server.should_exit = True

    async def main(me: Background) -> None:
        me.loop, me.stop_soon = asyncio.get_running_loop(), stop
        me.ready.set()
        await server.serve()

    return Background("api", main, up=lambda: server.started)


@dataclass
class Site:
    """The running server: its address and a token per role."""

    base: str
    tokens: dict[str, str]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def status(self, campaign: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.base}/api/v1/campaigns/{campaign}", headers=self.headers("viewer"), timeout=5
        )
        response.raise_for_status()
        return dict(response.json())


def make_tokens(redis_url: str, namespace: str) -> dict[str, str]:
    async def make() -> dict[str, str]:
        client = connect(redis_url)
        try:
            tokens, minter = Tokens(client, namespace), program("test", Role.ADMIN)
            return {
                role.label: (await tokens.create(f"{role.label}-person", role, minter))[0]
                for role in (Role.VIEWER, Role.OPERATOR)
            }
        finally:
            await client.aclose()

    return asyncio.run(make())


@pytest.fixture
def site(make_settings, redis_url, namespace) -> Iterator[Site]:
    settings = make_settings(
        routes={
            "sms": {
                "adapter": "null",
                "options": {"latency": 0.05},
                "rate": RATE,
                "unit": "messages",
                "chunk": 5,
                "concurrency": 2,
                "shards": 2,
            }
        },
        channels={"sms": {"default": "sms"}},
        queue={"batch_size": 10},  # campaign counters move as batches settle: keep them small
        api={"approval_threshold": 10 * PEOPLE},
    )
    tokens = make_tokens(redis_url, namespace)
    port = free_port()
    api, worker = api_thread(settings, port), worker_thread(settings)
    api.start()
    try:
        worker.start()
        try:
            yield Site(f"http://127.0.0.1:{port}", tokens)
        finally:
            worker.stop()
    finally:
        api.stop()


def launch(site: Site) -> str:
    """A running campaign, created and launched through the API as an operator."""
    audience = "phone,name,region\n" + "".join(f"0912{n:06d},Người {n},49\n" for n in range(PEOPLE))
    files = {
        "plan": ("advice.plan.toml", PLAN.encode(), "application/toml"),
        "audience": ("people.csv", audience.encode(), "text/csv"),
    }
    headers = site.headers("operator")
    created = httpx.post(f"{site.base}/api/v1/campaigns", files=files, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    campaign = str(created.json()["id"])
    launched = httpx.post(
        f"{site.base}/api/v1/campaigns/{campaign}/launch", headers=headers, timeout=15
    )
    assert launched.status_code == 200, launched.text
    return campaign


def watch(page: Any, problems: list[str]) -> Any:
    """Script errors and console errors (a CSP violation is one) end up in `problems`."""
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    return page


def sign_in(page: Any, site: Site, role: str, campaign: str) -> None:
    page.goto(f"{site.base}/", wait_until="domcontentloaded")
    page.fill("#token", site.tokens[role])
    page.click("#login-submit")
    page.click(f"#campaign-table button[data-id='{campaign}']", timeout=WAIT_MS)
    sync_api.expect(page.locator("#d-id")).to_have_text(campaign, timeout=WAIT_MS)


def shown(page: Any, element: str) -> int:
    """A counter as the page shows it ("1,234" -> 1234)."""
    digits = "".join(ch for ch in page.locator(element).inner_text() if ch.isdigit())
    return int(digits or 0)


def wait_above(page: Any, element: str, value: int) -> int:
    page.wait_for_function(
        "([id, before]) => Number(document.getElementById(id).textContent.replace(/\\D/g, ''))"
        " > before",
        arg=[element.removeprefix("#"), value],
        timeout=WAIT_MS,
    )
    return shown(page, element)


def settled(site: Site, campaign: str, within: float = 3.0) -> int:
    """The sent count once it stays the same for a second (it must, within `within` s)."""
    deadline = time.monotonic() + within
    last = site.status(campaign)["sent"]
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = site.status(campaign)["sent"]
        if now == last:
            return int(now)
        last = now
    raise AssertionError(f"sent kept moving for {within}s after the pause: {last}")


def test_the_dashboard_shows_a_campaign_moving_and_pauses_it(chromium, site):
    campaign = launch(site)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            problems: list[str] = []
            operator = watch(browser.new_context(locale="en-US").new_page(), problems)
            sign_in(operator, site, "operator", campaign)
            # the name is shown as text: markup in it stays markup-free characters
            sync_api.expect(operator.locator("#d-name")).to_have_text("Khuyến cáo <b>COVID</b>")
            sync_api.expect(operator.locator("#d-state")).to_have_text("running")
            first = wait_above(operator, "#v-sent", 0)
            second = wait_above(operator, "#v-sent", first)
            assert first < second < PEOPLE, "the count moves while the campaign runs"
            sync_api.expect(operator.locator("#v-rate")).not_to_have_text(NOTHING, timeout=WAIT_MS)
            # an SMS-only campaign: nothing went on to another channel, and the page says 0
            sync_api.expect(operator.locator("#v-fallback-timeout")).to_have_text("0")
            sync_api.expect(operator.locator("#v-fallback-failed")).to_have_text("0")

            operator.click("#pause")
            sync_api.expect(operator.locator("#d-state")).to_have_text("paused", timeout=WAIT_MS)
            assert site.status(campaign)["state"] == "paused"
            held = settled(site, campaign)
            assert held < PEOPLE, "the pause stopped it before the end"
            sync_api.expect(operator.locator("#resume")).to_be_visible()
            sync_api.expect(operator.locator("#pause")).to_be_hidden()

            viewer = watch(browser.new_context(locale="en-US").new_page(), problems)
            sign_in(viewer, site, "viewer", campaign)
            sync_api.expect(viewer.locator("#v-sent")).not_to_have_text(NOTHING, timeout=WAIT_MS)
            sync_api.expect(viewer.locator("#pause")).to_be_hidden()
            sync_api.expect(viewer.locator("#resume")).to_be_hidden()
            sync_api.expect(viewer.locator("#cancel")).to_be_hidden()

            operator.click("#resume")
            sync_api.expect(operator.locator("#d-state")).to_have_text("running", timeout=WAIT_MS)
            wait_above(operator, "#v-sent", held)

            operator.once("dialog", lambda dialog: dialog.accept())
            operator.click("#cancel")
            sync_api.expect(operator.locator("#d-state")).to_have_text("cancelled", timeout=WAIT_MS)
            assert site.status(campaign)["state"] == "cancelled"
            assert problems == [], "no script errors, no blocked loads"
        finally:
            browser.close()
