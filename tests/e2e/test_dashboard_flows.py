"""The dashboard's workflows in a real headless Chromium, on a real server, worker and Redis.

Create from the page (plan text and an audience file), dry run, approval refused to the
creator and given by a second person, launch; campaign states moving in the list; the hotline
inbox read, answered, assigned and closed; a campaign's answers; its provinces as bars.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from test_dashboard_browser import CHROMIUM, WAIT_MS, api_thread, watch, worker_thread

from loa.access.identity import Role, program
from loa.access.tokens import Tokens
from loa.engine.connection import connect
from loa.engine.embedded import free_port
from loa.engine.events import EventWriter
from loa.engine.metrics import Metrics
from loa.inbox import Inbox
from loa.message import Inbound
from loa.settings import Settings

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect

PLAN = (
    'name = "Tiêm chủng <b>mũi 2</b>"\nlane = "normal"\nchannels = ["sms"]\n'
    '[templates]\nsms = "Bộ Y tế: {{ name }} ơi, hãy tiêm mũi 2. Gọi 19009095."\n'
)
QUESTION = (
    'name = "Hỏi thăm sau tiêm"\nlane = "normal"\nchannels = ["sms"]\n'
    '[templates]\nsms = "Bo Y te: ban thay the nao? 1 binh thuong, 2 dau nhe, 3 sot cao"\n'
    '[followup]\nid = "day1"\nwindow = "72h"\noptions = [\n'
    '  { code = "1", label = "Binh thuong", keywords = ["binh thuong", "khoe"] },\n'
    '  { code = "2", label = "Dau nhe", keywords = ["dau nhe"] },\n'
    '  { code = "3", label = "Sot cao", keywords = ["sot cao"], urgent = true },\n]\n'
)
# region column: 79 (Ho Chi Minh City) three times, 49 (Quang Nam, part of Da Nang since 2025)
# twice, 01 (Ha Noi) once, and one person without a region
REGIONS = ["79", "79", "79", "49", "49", "01", ""]
PHONE = "0912{:06d}"
TOKENS = {
    "viewer": Role.VIEWER,
    "operator": Role.OPERATOR,
    "approver-a": Role.APPROVER,
    "approver-b": Role.APPROVER,
}


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


@dataclass
class Site:
    """The running server, its settings, and a token per person."""

    base: str
    settings: Settings
    tokens: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, path: str, who: str = "operator") -> Any:
        response = httpx.get(f"{self.base}/api/v1/{path}", headers=self.headers(who), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, who: str = "operator", **kwargs: Any) -> Any:
        response = httpx.post(
            f"{self.base}/api/v1/{path}", headers=self.headers(who), timeout=15, **kwargs
        )
        assert response.status_code in (200, 201), response.text
        return response.json()

    def run(self, work: Any) -> Any:
        """Run `work(redis)` on a client of its own (set-ups the page does not do), in a thread:
        Playwright's synchronous API holds an event loop in this one."""

        async def main() -> Any:
            client = connect(self.settings.redis_url or "")
            try:
                return await work(client)
            finally:
                await client.aclose()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, main()).result(timeout=30)


def make_tokens(redis_url: str, namespace: str) -> dict[str, str]:
    async def make() -> dict[str, str]:
        client = connect(redis_url)
        try:
            tokens, minter = Tokens(client, namespace), program("test", Role.ADMIN)
            return {
                person: (await tokens.create(person, role, minter))[0]
                for person, role in TOKENS.items()
            }
        finally:
            await client.aclose()

    return asyncio.run(make())


@pytest.fixture
def site(make_settings, redis_url, namespace) -> Iterator[Site]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make tools` installs it (apt, as root)")
    settings = make_settings(
        routes={"sms": {"adapter": "null", "rate": 500, "unit": "messages", "chunk": 5}},
        channels={"sms": {"default": "sms"}},
        queue={"batch_size": 3},
        api={"approval_threshold": 1},  # every campaign needs a second person
    )
    tokens = make_tokens(redis_url, namespace)
    port = free_port()
    api, worker = api_thread(settings, port), worker_thread(settings)
    api.start()
    try:
        worker.start()
        try:
            yield Site(f"http://127.0.0.1:{port}", settings, tokens)
        finally:
            worker.stop()
    finally:
        api.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


def audience() -> bytes:
    rows = "".join(
        f"{PHONE.format(n)},Người <i>{n}</i>,{region}\n" for n, region in enumerate(REGIONS)
    )
    return ("phone,name,region\n" + rows).encode()


def page_of(browser: Any, site: Site, who: str, problems: list[str]) -> Any:
    page = watch(browser.new_context(locale="en-US").new_page(), problems)
    page.goto(f"{site.base}/", wait_until="domcontentloaded")
    page.fill("#token", site.tokens[who])
    page.click("#login-submit")
    expect(page.locator("#who")).to_contain_text(who, timeout=WAIT_MS)
    return page


def open_campaign(page: Any, campaign: str) -> None:
    page.click(f"#campaign-table button[data-id='{campaign}']", timeout=WAIT_MS)
    expect(page.locator("#d-id")).to_have_text(campaign, timeout=WAIT_MS)


def list_state(page: Any, campaign: str) -> Any:
    row = page.locator("#campaign-table tbody tr").filter(
        has=page.locator(f"button[data-id='{campaign}']")
    )
    return row.locator(".state")


def launched(site: Site, plan: str) -> str:
    """A campaign created by one person, approved by another and launched, through the API."""
    files = {
        "plan": ("plan.toml", plan.encode(), "application/toml"),
        "audience": ("people.csv", audience(), "text/csv"),
    }
    campaign = str(site.post("campaigns", "operator", files=files)["id"])
    site.post(f"campaigns/{campaign}/approve", "approver-b")
    site.post(f"campaigns/{campaign}/launch", "operator")
    return campaign


def sent_to_all(site: Site, campaign: str, within: float = 20.0) -> dict[str, Any]:
    """The status once the worker sent to everyone (the campaign clock, which would mark it
    done, does not run here: no supervisor)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = site.get(f"campaigns/{campaign}")
        if status["sent"] == len(REGIONS):
            return dict(status)
        time.sleep(0.1)
    raise AssertionError(f"campaign {campaign} was not sent to everyone: {status}")


def test_create_dry_run_approve_by_a_second_person_and_launch(site, browser):
    problems: list[str] = []
    creator = page_of(browser, site, "approver-a", problems)
    watcher = page_of(browser, site, "viewer", problems)
    expect(watcher.locator("#create")).to_be_hidden()  # viewers create nothing

    creator.fill("#new-plan", PLAN)
    people = {"name": "people.csv", "mimeType": "text/csv", "buffer": audience()}
    creator.set_input_files("#new-audience", files=[people])
    creator.click("#new-check")
    dry = creator.locator("#create-dry")
    expect(dry.locator("[data-count='queued']")).to_have_text("7", timeout=WAIT_MS)
    samples = dry.locator("table.samples tbody tr")
    expect(samples).to_have_count(1)  # one per channel and language
    first = samples.nth(0).locator("td")
    expect(first.nth(0)).to_have_text("sms/vi")
    expect(first.nth(1)).to_have_text("+8491*****00")  # the number masked
    # the name's markup is text on the page, and no full number is shown anywhere
    expect(first.nth(2)).to_have_text("Bộ Y tế: Người <i>0</i> ơi, hãy tiêm mũi 2. Gọi 19009095.")
    assert "0912000000" not in dry.inner_text() and "+84912000000" not in dry.inner_text()
    assert site.get("campaigns") == [], "a dry run stores nothing"

    creator.click("#new-create")
    expect(creator.locator("#d-state")).to_have_text("draft", timeout=WAIT_MS)
    expect(creator.locator("#d-name")).to_have_text("Tiêm chủng <b>mũi 2</b>")
    campaign = creator.locator("#d-id").inner_text()
    expect(creator.locator("#d-approval")).to_contain_text("needs approval by a second person")
    expect(list_state(watcher, campaign)).to_have_text("draft", timeout=WAIT_MS)

    creator.click("#validate")
    expect(creator.locator("#detail-dry table.samples tbody tr")).to_have_count(1, timeout=WAIT_MS)
    expect(creator.locator("#launch")).to_be_hidden()  # not approved yet

    # the creator may approve others' campaigns, not their own: the API refuses, the page says so
    creator.click("#approve")
    refusal = creator.locator("#action-refused")
    expect(refusal).to_be_visible(timeout=WAIT_MS)
    assert problems == [
        "Failed to load resource: the server responded with a status of 403 (Forbidden)"
    ]
    problems.clear()  # the browser's own line for the refused request: expected
    expect(refusal).to_contain_text("Approve refused")
    expect(refusal).to_contain_text("second person")
    assert site.get(f"campaigns/{campaign}")["state"] == "draft"

    second = page_of(browser, site, "approver-b", problems)
    open_campaign(second, campaign)
    second.click("#approve")
    expect(second.locator("#d-state")).to_have_text("approved", timeout=WAIT_MS)
    # the list shows it on a page that never opened the campaign
    expect(list_state(watcher, campaign)).to_have_text("approved", timeout=WAIT_MS)

    operator = page_of(browser, site, "operator", problems)
    open_campaign(operator, campaign)
    expect(operator.locator("#approve")).to_be_hidden()  # operators do not approve
    operator.once("dialog", lambda dialog: dialog.accept())
    operator.click("#launch")
    expect(list_state(watcher, campaign)).to_have_text("running", timeout=WAIT_MS)
    status = sent_to_all(site, campaign)
    assert status["sent"] == len(REGIONS)
    assert status["approval"]["creator"] == "approver-a"
    assert status["approval"]["approved_by"] == "approver-b"
    assert problems == [], "no script errors, no blocked loads"


def test_the_inbox_reads_answers_assigns_and_closes_a_case(site, browser):
    async def seed(client: Any) -> str:
        writer = EventWriter(client, site.settings.namespace, site.settings.events, Metrics())
        writer.inbound(
            Inbound(route="sms", sender="84912000009", text="<img src=x> tôi bị sốt", recipient="1")
        )
        await writer.drained()
        inbox = Inbox(site.settings, client)
        await inbox.sync()
        return (await inbox.cases())[0].id

    case = site.run(seed)
    problems: list[str] = []
    viewer = page_of(browser, site, "viewer", problems)
    viewer.click(f"#inbox-table button[data-case='{case}']", timeout=WAIT_MS)
    expect(viewer.locator("#case-messages li")).to_have_count(1, timeout=WAIT_MS)
    expect(viewer.locator("#case-phone")).not_to_contain_text("912000009")  # masked for viewers
    expect(viewer.locator("#case-phone")).to_contain_text("009")
    expect(viewer.locator("#case-form")).to_be_hidden()  # viewers read, never answer

    operator = page_of(browser, site, "operator", problems)
    operator.click(f"#inbox-table button[data-case='{case}']", timeout=WAIT_MS)
    expect(operator.locator("#case-messages li p")).to_have_text("<img src=x> tôi bị sốt")
    expect(operator.locator("#case-phone")).to_contain_text("84912000009")
    operator.click("#case-assign")
    expect(operator.locator("#case-state")).to_have_text("assigned", timeout=WAIT_MS)
    expect(operator.locator("#case-assignee")).to_contain_text("operator")
    operator.fill("#reply-text", "Bạn hãy đến trạm y tế gần nhất.")
    operator.click("#reply-send")
    expect(operator.locator("#case-msg")).to_contain_text("answer queued", timeout=WAIT_MS)
    expect(operator.locator("#case-messages li")).to_have_count(2, timeout=WAIT_MS)
    expect(operator.locator("#case-messages li.out p")).to_have_text(
        "Bạn hãy đến trạm y tế gần nhất."
    )
    expect(operator.locator("#case-state")).to_have_text("answered")
    shown = site.get(f"inbox/{case}")
    assert [m["dir"] for m in shown["messages"]] == ["in", "out"]
    assert shown["case"]["assignee"] == "operator"

    operator.click("#case-close")
    expect(operator.locator("#case-state")).to_have_text("closed", timeout=WAIT_MS)
    expect(operator.locator("#case-form")).to_be_hidden()
    assert site.get(f"inbox/{case}")["case"]["state"] == "closed"
    # closed cases leave the list: open ones come first and only they are listed by default
    expect(operator.locator(f"#inbox-table button[data-case='{case}']")).to_have_count(
        0, timeout=WAIT_MS
    )
    assert problems == [], "no script errors, no blocked loads"


def answer(site: Site, replies: list[tuple[int, str]]) -> None:
    async def send(client: Any) -> None:
        writer = EventWriter(client, site.settings.namespace, site.settings.events, Metrics())
        for n, text in replies:
            writer.inbound(Inbound(route="sms", sender=f"84912{n:06d}", text=text, recipient="1"))
        await writer.drained()

    site.run(send)
    site.post("followups/sync", "operator")


def test_the_answers_of_a_campaign(site, browser):
    campaign = launched(site, QUESTION)
    sent_to_all(site, campaign)
    answer(site, [(0, "1"), (1, "Khỏe"), (3, "sốt cao"), (5, "<b>tiêm</b> mũi 2 khi nào?")])
    problems: list[str] = []
    viewer = page_of(browser, site, "viewer", problems)
    open_campaign(viewer, campaign)
    expect(viewer.locator("#answers")).to_be_visible(timeout=WAIT_MS)
    expect(viewer.locator("#a-question")).to_have_text("day1")
    expect(viewer.locator("#a-answered")).to_have_text("3")
    expect(viewer.locator("#a-unparsed")).to_have_text("1")
    expect(viewer.locator("#a-rate")).to_have_text("42.9 %")  # 3 of 7
    options = viewer.locator("#answer-options")
    expect(options.locator("tr[data-option='1'] td").nth(2)).to_have_text("2")
    expect(options.locator("tr[data-option='3'] td").nth(2)).to_have_text("1")
    expect(options.locator("tr[data-option='3']")).to_have_class("urgent")
    regions = viewer.locator("#answer-regions")
    expect(regions.locator("tr[data-region='79'] td").nth(1)).to_have_text("2")  # two said 1
    expect(regions.locator("tr[data-region='49'] td").nth(3)).to_have_text("1")  # one said 3
    # and per province, beside what was queued and sent there
    for code, answers in {"01": 0, "48": 1, "79": 2, "?": 0}.items():
        row = viewer.locator(f"#province-table tr[data-province='{code}']")
        expect(row.locator("[data-count='answers']")).to_have_text(str(answers), timeout=WAIT_MS)
    unparsed = viewer.locator("#answer-unparsed tbody tr td")
    expect(unparsed.nth(3)).to_have_text("<b>tiêm</b> mũi 2 khi nào?")
    expect(unparsed.nth(1)).not_to_contain_text("912000005")  # masked for a viewer
    assert problems == [], "no script errors, no blocked loads"


def test_a_campaign_by_province_as_bars(site, browser):
    # the planners batch each region apart, so what is sent is told per province too
    campaign = launched(site, QUESTION)
    sent_to_all(site, campaign)
    problems: list[str] = []
    viewer = page_of(browser, site, "viewer", problems)
    open_campaign(viewer, campaign)
    rows = viewer.locator("#province-table tbody tr")
    expect(rows).to_have_count(4, timeout=WAIT_MS)
    # sorted by province code; the pre-2025 code 49 counts under Da Nang (48)
    assert [rows.nth(i).get_attribute("data-province") for i in range(4)] == ["01", "48", "79", "?"]
    expect(rows.nth(1).locator("td").nth(0)).to_have_text("48 Đà Nẵng")
    expect(rows.nth(3).locator("td").nth(0)).to_have_text("no region")
    for code, queued in {"01": 1, "48": 2, "79": 3, "?": 1}.items():
        row = viewer.locator(f"#province-table tr[data-province='{code}']")
        expect(row.locator("[data-count='queued']")).to_have_text(str(queued), timeout=WAIT_MS)
        expect(row.locator("[data-count='sent']")).to_have_text(str(queued))
        expect(row.locator("[data-count='answers']")).to_have_text("0")
    # the bars: scaled to the largest count (Ho Chi Minh City's three), drawn in that order
    bars = viewer.evaluate(
        "() => [...document.querySelectorAll('#province-table .pbar.queued')]"
        ".map((bar) => [bar.style.width, bar.getBoundingClientRect().width])"
    )
    assert [share for share, _ in bars] == ["33.3333%", "66.6667%", "100%", "33.3333%"]
    drawn = [width for _, width in bars]
    assert 0 < drawn[0] < drawn[1] < drawn[2]
    sent = viewer.evaluate(
        "() => [...document.querySelectorAll('#province-table .pbar.sent')]"
        ".map((bar) => bar.style.width)"
    )
    assert sent == ["33.3333%", "66.6667%", "100%", "33.3333%"], "everyone sent: as queued"
    expect(viewer.locator("#province-note")).to_be_hidden()
    assert problems == [], "no script errors, no blocked loads"
