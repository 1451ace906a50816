"""The dashboard in a real headless Chromium (Debian's, driven by Playwright).

One real ``kequn serve`` on a workspace built from the sample data (with an admin and a
viewer token); every page in both languages with no console error; the rule builder from a
typo to an exported file; an import through the upload page; what a viewer may not see.
Expected figures come from DuckDB SQL on the workspace before the server holds it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import duckdb
import httpx
import pytest
from server_util import Server
from test_api_dashboard import build_workspace

from kequn import access
from kequn.workspace import open_workspace

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Chromium missing: run scripts/ensure-chromium.sh"
)

PAGES = ["overview", "segments", "builder", "customers", "clusters", "campaigns", "import",
         "settings", "segments/high_value", "customers/C000001"]  # fmt: skip
NAV = {"en-US": ("Overview", "Segments"), "zh-CN": ("总览", "客群")}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard")
    folder = build_workspace(root, customers=400)
    ws = open_workspace(folder)
    admin = access.create_token(ws, "dash-admin", "admin")
    viewer = access.create_token(ws, "dash-viewer", "viewer")
    ws.close()
    con = duckdb.connect(str(folder / "kequn.duckdb"), read_only=True)
    shanghai = sorted(
        r[0]
        for r in con.execute("SELECT customer_id FROM customers WHERE city = '上海'").fetchall()
    )
    high_value = con.execute(
        "SELECT count(*) FROM memberships WHERE segment = 'high_value' AND exited_at IS NULL"
    ).fetchone()[0]
    con.close()
    server = Server(folder)
    try:
        yield {"url": server.url, "admin": admin, "viewer": viewer, "shanghai": shanghai,
               "high_value": high_value, "root": root}  # fmt: skip
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A browser tab signed in with a token (or at the login box), recording every error."""

    def __init__(self, browser, site, *, locale: str = "en-US", token: str | None = None):
        self.context = browser.new_context(
            locale=locale, accept_downloads=True, viewport={"width": 1280, "height": 900}
        )
        if token:
            self.context.add_init_script(f"sessionStorage.setItem('kequn.token', '{token}')")
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.url = site["url"]

    def open(self, route: str) -> None:
        self.page.goto(f"{self.url}/#/{route}")
        self.ready(route.split("/")[0])

    def ready(self, page: str) -> None:
        self.page.wait_for_selector(f'#view[data-ready="{page}"]', timeout=30_000)

    def close(self) -> None:
        self.context.close()
        assert self.errors == []


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_every_page_loads_without_console_errors(browser, site, locale):
    tab = Page(browser, site, locale=locale, token=site["admin"])
    for route in PAGES:
        tab.open(route)
        nav = tab.page.locator("#nav a[data-page=overview]").inner_text()
        assert nav == NAV[locale][0], route
        assert not tab.page.locator("#view .error").count(), (route, tab.page.inner_text("#view"))
    tab.open("overview")
    tab.page.wait_for_selector("[data-testid=rfm-heatmap] canvas")
    tab.page.click("#lang-toggle")  # the toggle switches the other way
    other = "zh-CN" if locale == "en-US" else "en-US"
    tab.page.wait_for_function(
        f"document.querySelector('#nav a[data-page=segments]').textContent === '{NAV[other][1]}'"
    )
    tab.close()


def test_builder_flow_error_fix_count_save_list_export(browser, site):
    tab = Page(browser, site, token=site["admin"])
    page = tab.page
    tab.open("builder")
    page.fill("#rule-input", "city = '上海' and citty = '上海'")
    error = page.wait_for_selector("#rule-error:not([hidden])")
    assert "citty" in error.inner_text() and "'city'" in error.inner_text()
    assert "1:17" in page.inner_text("#rule-status")  # line:column of the bad name
    assert page.locator(".rule-overlay .tok-err").inner_text() == "citty"
    assert page.is_disabled("#save-segment")
    page.fill("#rule-input", "city = '上海'")
    expected = len(site["shanghai"])
    page.wait_for_selector(f'#rule-count[data-count="{expected}"]')
    assert page.locator("#rule-error").is_hidden()
    assert page.locator(".rule-overlay .tok-str").first.inner_text() == "'上海'"
    page.fill("#segment-name", "shanghai_all")
    page.click("#save-segment")
    page.wait_for_url("**/#/segments/shanghai_all")
    tab.ready("segments")
    assert page.inner_text("[data-testid=live-size]") == f"{expected:,}"
    tab.open("segments")
    assert page.locator("[data-testid=segment-list] a", has_text="shanghai_all").count() == 1
    page.click("[data-testid=segment-list] a:text-is('shanghai_all')")
    page.wait_for_selector("[data-testid=member-table]")
    with page.expect_download() as info:
        page.click("#export-csv")
    path = info.value.path()
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))
    assert sorted(r["customer_id"] for r in rows) == site["shanghai"]
    assert {r["city"] for r in rows} == {"上海"}
    tab.close()


def test_import_through_the_upload_page(browser, site, tmp_path):
    data = tmp_path / "新订单.csv"
    data.write_text(
        "订单号,客户ID,下单时间,实付金额X\n"
        "N-1,C000001,2025-12-01 10:00,100.5\n"
        "N-2,C000002,2025-12-02 11:00,88\n"
        "N-3,C000003,2025-12-03 12:00,not-a-number\n"
        "N-4,C000004,2025-12-04 13:00,20\n",
        encoding="utf-8",
    )
    tab = Page(browser, site, token=site["admin"])
    page = tab.page
    tab.open("import")
    page.select_option("#upload-kind", "orders")
    page.set_input_files("#upload-file", str(data))
    page.wait_for_selector("[data-testid=mapping-table]")
    assert page.locator("select[data-column='订单号']").input_value() == "order_id"
    assert page.locator("select[data-column='下单时间']").input_value() == "ordered_at"
    # the amount column has a name no alias knows: the page says so, the user maps it
    assert "amount" in page.inner_text("#mapping-error")
    assert page.is_disabled("#start-import")
    page.select_option("select[data-column='实付金额X']", "amount")
    page.wait_for_selector("#start-import:not([disabled])")
    assert page.locator("#mapping-error").count() == 0
    page.click("#start-import")
    page.wait_for_selector("[data-testid=import-report]", timeout=60_000)
    assert page.inner_text("#imported-count") == "3"
    assert page.inner_text("#quarantined-count") == "1"
    assert page.locator("[data-testid=quarantine-reasons] tbody tr").count() == 1
    tab.close()
    with httpx.Client(base_url=site["url"], timeout=30) as client:
        got = client.get(
            "/v1/customers/C000004", headers={"Authorization": f"Bearer {site['admin']}"}
        ).json()
    assert "N-4" in [o["order_id"] for o in got["recent_orders"]]


def test_viewer_logs_in_sees_masked_phones_and_cannot_export(browser, site):
    tab = Page(browser, site)
    page = tab.page
    page.goto(site["url"] + "/#/segments/high_value")
    tab.ready("login")
    page.fill("#login-token", "kq_wrong")
    page.click("#login-button")
    page.wait_for_selector("#login-error")
    page.fill("#login-token", site["viewer"])
    page.click("#login-button")
    page.wait_for_selector("[data-testid=member-table] tbody tr")
    phones = page.locator("[data-testid=member-table] tbody td:nth-child(5)").all_inner_texts()
    shown = [p for p in phones if p not in ("–", "")]
    assert shown and all("****" in p for p in shown)
    assert page.locator("#export-csv").count() == 0
    assert page.locator("#export-xlsx").count() == 0
    tab.open("settings")
    assert page.locator("#admin-only").count() == 1
    tab.close()
    with httpx.Client(base_url=site["url"], timeout=30) as client:
        answer = client.post(
            "/v1/segments/high_value/export",
            headers={"Authorization": f"Bearer {site['viewer']}"},
            json={"format": "csv"},
        )
    assert answer.status_code == 403
