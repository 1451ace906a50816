"""The dashboard's longer flows in a real headless Chromium, against a real ``kequn serve``.

Clustering from the Clusters page (a background job with progress) and saving a cluster as
a segment; creating a token on the Settings page (its secret shown once) and revoking it;
"evaluate all now" on the Segments page; an Excel (.xlsx) file imported through the Import
page. Every tab fails on a console error. The workspace is the sample one the other
dashboard tests build (small: the flows, not the speed, are under test here).
"""

from __future__ import annotations

import httpx
import pytest
from server_util import Server
from test_api_dashboard import build_workspace
from test_dashboard_browser import CHROMIUM, Page, browser  # noqa: F401 (a fixture)

from kequn import access
from kequn.workspace import open_workspace

pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Chromium missing: run scripts/ensure-chromium.sh"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard-flows")
    folder = build_workspace(root, customers=300)
    ws = open_workspace(folder)
    admin = access.create_token(ws, "flows-admin", "admin")
    ws.close()
    server = Server(folder)
    try:
        yield {"url": server.url, "admin": admin, "server": server}
    finally:
        server.stop()


def api(site, token: str | None = None) -> httpx.Client:
    token = site["admin"] if token is None else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=site["url"], headers=headers, timeout=60)


def test_cluster_job_then_save_a_cluster_as_a_segment(browser, site):  # noqa: F811
    with api(site) as c:
        before = c.get("/v1/dashboard/clusters").json()[0]["run_id"]
    tab = Page(browser, site, token=site["admin"])
    page = tab.page
    tab.open("clusters")
    assert before in page.inner_text("#view")
    page.click("#run-clustering")
    job = page.wait_for_selector("[data-testid=job-cluster]")
    assert job.query_selector("progress") is not None  # progress shown while it runs
    assert page.is_disabled("#run-clustering")  # one run at a time from this page
    page.wait_for_selector("[data-testid=job-cluster][data-status=done]", timeout=60_000)
    with api(site) as c:
        runs = c.get("/v1/dashboard/clusters").json()
    run = runs[0]
    assert run["run_id"] != before and len(runs) == 2
    # the page reloads on the new run: its id, its scatter, a save box per cluster
    page.wait_for_function(f"document.querySelector('#view').innerText.includes('{run['run_id']}')")
    page.wait_for_selector("[data-testid=cluster-scatter] canvas")
    rule = next(r for r in run["rules"] if r["precision"] > 0 and r["recall"] > 0)
    n = rule["cluster"]
    page.fill(f"#cluster-name-{n}", "from_cluster")
    page.click(f"#save-cluster-{n}")
    saved = page.wait_for_selector(f"#cluster-saved-{n}[data-size]")
    size = int(saved.get_attribute("data-size"))
    # precision = both / selected and recall = both / cluster size, so the rule selects
    # recall × size / precision customers (the run and the save both evaluate now)
    assert size == round(rule["recall"] * rule["size"] / rule["precision"])
    tab.open("segments")
    row = page.locator(
        "[data-testid=segment-list] tr", has=page.locator("a:text-is('from_cluster')")
    )
    assert row.count() == 1
    assert f"{size:,}" in row.inner_text()
    tab.close()
    with api(site) as c:
        stored = c.get("/v1/segments/from_cluster").json()
    assert stored["rule"] == rule["rule"]
    assert stored["live_size"] == size


def test_settings_create_a_token_shown_once_then_revoke_it(browser, site):  # noqa: F811
    tab = Page(browser, site, token=site["admin"])
    page = tab.page
    tab.open("settings")
    page.fill("#token-name", "flows-viewer")
    page.select_option("#token-role", "viewer")
    page.click("#create-token")
    secret = page.wait_for_selector("#new-token").inner_text().strip()
    assert secret.startswith("kq_")
    row = page.locator(
        "[data-testid=token-table] tr", has=page.locator("td:text-is('flows-viewer')")
    )
    assert row.count() == 1 and "viewer" in row.inner_text()
    with api(site, secret) as c:
        who = c.get("/v1/dashboard/session").json()
    assert (who["authenticated"], who["name"], who["role"]) == (True, "flows-viewer", "viewer")
    # shown once: after leaving the page the secret is nowhere in it
    tab.open("overview")
    tab.open("settings")
    assert page.locator("#new-token").count() == 0
    assert secret not in page.content()
    row = page.locator(
        "[data-testid=token-table] tr", has=page.locator("td:text-is('flows-viewer')")
    )
    row.locator("button").click()
    page.wait_for_function(
        "[...document.querySelectorAll('[data-testid=token-table] tr')].some("
        "(tr) => tr.innerText.includes('flows-viewer') && !tr.querySelector('button'))"
    )
    tab.close()
    with api(site, secret) as c:
        answer = c.get("/v1/dashboard/session").json()
        assert answer["authenticated"] is False
        assert c.get("/v1/segments").status_code == 401
    with api(site) as c:
        tokens = {t["name"]: t for t in c.get("/v1/dashboard/tokens").json()}
    assert tokens["flows-viewer"]["revoked_at"] is not None


def test_evaluate_all_now_shows_progress_and_finishes(browser, site):  # noqa: F811
    with api(site) as c:
        before = {s["name"]: s["as_of"] for s in c.get("/v1/segments").json()}
    tab = Page(browser, site, token=site["admin"])
    page = tab.page
    tab.open("segments")
    page.click("#evaluate-all")
    job = page.wait_for_selector("[data-testid=job-evaluate]")
    assert job.query_selector("progress") is not None
    page.wait_for_selector("[data-testid=job-evaluate][data-status=done]", timeout=60_000)
    assert page.locator("[data-testid=job-evaluate] progress").get_attribute("value") == "1"
    tab.ready("segments")  # the list is shown again with the new evaluation
    page.wait_for_selector("[data-testid=segment-list][data-health=ready]", timeout=60_000)
    with api(site) as c:
        after = {s["name"]: s["as_of"] for s in c.get("/v1/segments").json()}
        jobs = c.get("/v1/jobs").json()
    assert set(after) == set(before)
    assert all(after[n] > before[n] for n in before)  # every segment evaluated again, now
    done = next(j for j in jobs if j["kind"] == "evaluate")
    assert done["status"] == "done" and set(done["result"]["segments"]) == set(before)
    tab.close()


def test_excel_upload_through_the_import_page(browser, site, tmp_path):  # noqa: F811
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["客户ID", "姓名", "城市", "手机"])
    sheet.append(["X-001", "张三", "杭州", "13800000001"])
    sheet.append(["X-002", "李四", "苏州", "13800000002"])
    sheet.append([None, "无名", "杭州", "13800000003"])  # no id: quarantined
    sheet.append(["X-004", "王五", "杭州", "13800000004"])
    path = tmp_path / "新客户.xlsx"
    book.save(path)
    tab = Page(browser, site, token=site["admin"])
    page = tab.page
    tab.open("import")
    page.select_option("#upload-kind", "customers")
    page.set_input_files("#upload-file", str(path))
    page.wait_for_selector("[data-testid=mapping-table]")
    assert "新客户.xlsx" in page.inner_text("#upload-preview")
    assert page.locator("select[data-column='客户ID']").input_value() == "customer_id"
    assert page.locator("select[data-column='城市']").input_value() == "city"
    assert "张三" in page.inner_text("[data-testid=mapping-table]")
    page.click("#start-import")
    page.wait_for_selector("[data-testid=job-import]")
    page.wait_for_selector("[data-testid=import-report]", timeout=60_000)
    assert page.inner_text("#imported-count") == "3"
    assert page.inner_text("#quarantined-count") == "1"
    tab.close()
    with api(site) as c:
        got = c.get("/v1/customers/X-004").json()
        found = c.get("/v1/dashboard/customers", params={"q": "X-00"}).json()
    assert (got["attributes"]["name"], got["attributes"]["city"]) == ("王五", "杭州")
    assert sorted(r["customer_id"] for r in found) == ["X-001", "X-002", "X-004"]
