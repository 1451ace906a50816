"""Benchmark: the web dashboard on a workspace of a million customers.

    .venv/bin/python bench/dashboard.py                  # 1 M customers, 10 M orders, 5 M events
    .venv/bin/python bench/dashboard.py --scale 0.1      # a tenth of each

The workspace is built once and kept under ``--dir`` (``bench/out/dashboard``): the data of
``bench/segments.py`` (``generate``, vectorised NumPy/Arrow, skewed activity), appended with
``run_kequn_load``, then the commands a user runs so that every page has something to show:
``kequn rfm``, ``kequn clv predict``, ``kequn lifecycle`` (two dates), six segments applied at
two dates (so "change", history and migration exist) and ``kequn cluster``. Then ``kequn
serve`` runs on it and the bench

* times every request each page makes (the same ones ``static/app.js`` sends, in the same
  order, per page), cold (the first time after the server starts) and warm (best of three);
* opens each page in headless Chromium (Playwright, ``/usr/bin/chromium``) and times from
  navigation until the page's main content is rendered (``#view[data-ready]`` plus the
  page's own marker: the heat map's canvas, the segment list's health figures, ...).

A page's time is what the user waits; its requests' times say where that goes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from segments import generate, run_kequn_load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEQUN = [sys.executable, "-m", "kequn"]
CHROMIUM = Path("/usr/bin/chromium")
AS_OF_1, AS_OF_2 = "2024-09-30", "2024-12-31"

SEGMENTS = '''
[[segments]]
name = "active_buyers"
label_zh = "活跃买家"
label_en = "Active buyers"
rule = "count(orders, last 90 days) >= 1"

[[segments]]
name = "high_value"
label_zh = "高价值客户"
label_en = "High-value customers"
rule = "sum(orders.amount, last 12 months) > 2000"

[[segments]]
name = "high_value_at_risk"
label_zh = "高价值流失风险"
label_en = "High value at risk"
rule = "in segment 'high_value' and days_since_last_order >= 60"

[[segments]]
name = "cart_abandoners"
label_zh = "加购未下单"
label_en = "Cart abandoners"
rule = """count(events where type = 'add_to_cart', last 30 days) > 0
  and count(orders, last 30 days) = 0"""

[[segments]]
name = "beauty_browsers"
label_zh = "美妆兴趣人群"
label_en = "Beauty browsers"
rule = """count(events where type = 'product_view' and properties.category = '美妆',
  last 90 days) > 0"""

[[segments]]
name = "shanghai"
label_zh = "上海客户"
label_en = "Shanghai"
rule = "city = '上海'"
'''


# --- the workspace ----------------------------------------------------------------------------


def kequn(*args: str) -> float:
    """Run one CLI command in a subprocess; its wall time."""
    t0 = time.perf_counter()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run([*KEQUN, *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def build(data: Path, customers: int, orders: int, events: int) -> Path:
    """The workspace (built once, kept under ``data``); returns its folder."""
    workdir = data / "workspace"
    done = data / "built.json"
    if done.exists():
        return workdir
    if not (data / "events.parquet").exists():
        t0 = time.perf_counter()
        generate(data, customers, orders, events)
        print(f"generated the data in {time.perf_counter() - t0:.1f} s -> {data}", flush=True)
    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    run_kequn_load(data, workdir)
    steps["load"] = time.perf_counter() - t0
    print(f"loaded in {steps['load']:.1f} s", flush=True)
    w = ("-w", str(workdir))
    (data / "segments.toml").write_text(SEGMENTS, encoding="utf-8")
    for name, args in (
        ("rfm", ("rfm", "--as-of", AS_OF_2)),
        ("clv", ("clv", "predict", "--as-of", AS_OF_2, "--horizon", "90d")),
        ("lifecycle-1", ("lifecycle", "--as-of", AS_OF_1)),
        ("lifecycle-2", ("lifecycle", "--as-of", AS_OF_2)),
        ("segments-1", ("segment", "apply", str(data / "segments.toml"), "--as-of", AS_OF_1)),
        ("segments-2", ("segment", "apply", str(data / "segments.toml"), "--as-of", AS_OF_2)),
        ("cluster", ("cluster", "--as-of", AS_OF_2, "--k", "4")),
    ):
        steps[name] = kequn(*args, *w)
        print(f"{name:<12} {steps[name]:7.1f} s", flush=True)
    done.write_text(json.dumps(steps, indent=1), encoding="utf-8")
    return workdir


# --- the server and the pages' requests -------------------------------------------------------


def serve(workdir: Path, port: int) -> subprocess.Popen:
    log = (workdir.parent / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*KEQUN, "serve", "--port", str(port), "--log-level", "warning", "-w", str(workdir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"kequn serve exited: {(workdir.parent / 'serve.log').read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("kequn serve did not start in 300 s")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(2)  # SIGINT: a clean shutdown
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def page_requests(client: httpx.Client) -> dict[str, list[tuple[str, str, dict | None]]]:
    """Per page, the requests app.js sends (method, path, JSON body), in its order."""
    run = client.get("/v1/dashboard/clusters").json()[0]
    feats = [f["name"] for f in run["features"] if f["group"] != "attr"]
    x, y = feats[0], feats[min(2, len(feats) - 1)]
    who = client.get("/v1/dashboard/customers?q=&limit=1").json()[0]["customer_id"]
    seg = "high_value"
    return {
        "overview": [
            ("GET", "/v1/dashboard/session", None),
            ("GET", "/v1/dashboard/overview", None),
            ("GET", "/v1/dashboard/overview/orders?wait=2", None),
            ("GET", "/v1/dashboard/overview/buyers?wait=2", None),
        ],
        "segments": [("GET", "/v1/segments", None), ("GET", "/v1/dashboard/health", None)],
        "builder": [
            ("POST", "/v1/dashboard/rule",
             {"rule": "count(orders, last 90 days) >= 2 and city = '上海'", "sample": 10}),
            ("POST", "/v1/dashboard/rule", {"rule": "city = '上海' and citty = 1", "sample": 10}),
        ],
        f"segments/{seg}": [
            ("GET", f"/v1/dashboard/segments/{seg}", None),
            ("GET", f"/v1/dashboard/segments/{seg}/analysis", None),
            ("GET", f"/v1/dashboard/segments/{seg}/persona", None),
            ("GET", f"/v1/dashboard/segments/{seg}/members?q=&offset=0&limit=20", None),
            ("GET", f"/v1/dashboard/segments/{seg}/members?q=&offset=400000&limit=20", None),
            ("GET", f"/v1/dashboard/segments/{seg}/members?q=%E4%B8%8A%E6%B5%B7&offset=0&limit=20",
             None),
        ],
        "customers": [
            ("GET", "/v1/dashboard/customers?q=&limit=20", None),
            ("GET", "/v1/dashboard/customers?q=C0012345&limit=20", None),
        ],
        f"customers/{who}": [
            ("GET", f"/v1/dashboard/customers/{who}/profile?recent=5", None),
            ("GET", f"/v1/dashboard/customers/{who}/timeline?offset=0&limit=20", None),
        ],
        "clusters": [
            ("GET", "/v1/dashboard/clusters", None),
            ("GET", f"/v1/dashboard/clusters/{run['run_id']}/points?x={x}&y={y}&limit=1500", None),
        ],
        "campaigns": [("GET", "/v1/dashboard/campaigns", None)],
        "import": [],
        "settings": [("GET", "/v1/dashboard/tokens", None)],
        "jobs": [("GET", "/v1/jobs", None)],
    }  # fmt: skip


def timed(client: httpx.Client, method: str, path: str, body: dict | None) -> tuple[float, dict]:
    t0 = time.perf_counter()
    answer = client.request(method, path, json=body)
    seconds = time.perf_counter() - t0
    if answer.status_code >= 400:
        raise SystemExit(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
    data = answer.json() if "json" in answer.headers.get("content-type", "") else None
    return seconds, data if isinstance(data, dict) else {}


def time_requests(url: str, repeat: int) -> list[dict]:
    """Each request cold (first after the server started) and warm (best of ``repeat``).

    A background figure answers "computing" at first: its ``ready`` time is from the first
    request until an answer says "ready" (asking again as the page does).
    """
    rows = []
    with httpx.Client(base_url=url, timeout=600) as client:
        pages = page_requests(client)
        for page, requests in pages.items():
            for method, path, body in requests:
                t0 = time.perf_counter()
                cold, data = timed(client, method, path, body)
                ready = None
                if data.get("status") in ("computing", "ready"):
                    while data.get("status") == "computing":
                        time.sleep(0.5)
                        data = timed(client, method, path, body)[1]
                    ready = time.perf_counter() - t0
                warm = min(timed(client, method, path, body)[0] for _ in range(repeat))
                rows.append({"page": page, "request": f"{method} {path.split('?')[0]}",
                             "query": path.partition("?")[2], "cold": cold, "ready": ready,
                             "warm": warm})  # fmt: skip
                shown = f"{ready:7.2f}" if ready is not None else "      –"
                print(f"{page:<20} {method:<4} {path[:66]:<66} {cold:6.2f} {shown} {warm:6.2f}",
                      flush=True)  # fmt: skip
    return rows


# --- the pages in a browser -------------------------------------------------------------------

# per page: its main content (what "rendered" means), then everything, figures computed in
# the background included (health, persona, distinct buyers)
MARKERS = {
    "overview": ("[data-testid=rfm-heatmap] canvas", "#kpi-active[data-status=ready]"),
    "segments": (
        "[data-testid=segment-list] tbody tr",
        "[data-testid=segment-list][data-health=ready]",
    ),
    "builder": ("#rule-input", None),
    "segments/high_value": (
        "[data-testid=member-table] tbody tr",
        "[data-testid=persona][data-status=ready]",
    ),
    "customers": ("[data-testid=customer-results] tbody tr", None),
    "customers/*": ("[data-testid=timeline] tbody tr", None),
    "clusters": ("[data-testid=cluster-scatter] canvas", None),
    "campaigns": ("[data-testid=trigger-table]", None),
    "import": ("#upload-file", None),
    "settings": ("[data-testid=token-table]", None),
}  # fmt: skip


def time_pages(url: str, who: str) -> list[dict]:
    """Each page opened twice (cold: first visit after the server started; warm: again)."""
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/#/import")  # the shell and ECharts loaded once, as a user has them
        page.wait_for_selector('#view[data-ready="import"]', timeout=120_000)
        for pattern, (main, complete) in MARKERS.items():
            route = pattern.replace("*", who)
            row: dict = {"page": route}
            for attempt in ("cold", "warm"):
                page.goto("about:blank")
                t0 = time.perf_counter()
                page.goto(f"{url}/#/{route}")
                page.wait_for_selector(f'#view[data-ready="{route.split("/")[0]}"]',
                                       timeout=300_000)  # fmt: skip
                page.wait_for_selector(main, timeout=300_000)
                row[attempt] = time.perf_counter() - t0
                if complete:
                    page.wait_for_selector(complete, timeout=600_000)
                row[f"{attempt}_all"] = time.perf_counter() - t0
            rows.append(row)
            print(
                f"{route:<24} cold {row['cold']:6.2f} s (all {row['cold_all']:6.2f})"
                f"  warm {row['warm']:6.2f} s (all {row['warm_all']:6.2f})",
                flush=True,
            )
        browser.close()
    if errors:
        print("console errors: " + "; ".join(errors[:5]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full size")
    parser.add_argument("--customers", type=int, help="default: 1,000,000 x scale")
    parser.add_argument("--orders", type=int, help="default: 10,000,000 x scale")
    parser.add_argument("--events", type=int, help="default: 5,000,000 x scale")
    parser.add_argument("--dir", default="bench/out/dashboard", help="where data is kept")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--repeat", type=int, default=3, help="warm requests (best of)")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium timings")
    parser.add_argument("--rebuild", action="store_true", help="build the workspace again")
    args = parser.parse_args()
    customers = args.customers or int(1_000_000 * args.scale)
    orders = args.orders or int(10_000_000 * args.scale)
    events = args.events or int(5_000_000 * args.scale)
    data = Path(args.dir) / f"c{customers}-o{orders}-e{events}"
    if args.rebuild and data.exists():
        shutil.rmtree(data / "workspace", ignore_errors=True)
        (data / "built.json").unlink(missing_ok=True)
    workdir = build(data, customers, orders, events)
    print(
        f"{customers:,} customers, {orders:,} orders, {events:,} events; "
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    url = f"http://127.0.0.1:{args.port}"
    t0 = time.perf_counter()
    proc = serve(workdir, args.port)
    print(f"kequn serve ready in {time.perf_counter() - t0:.1f} s")
    try:
        print(f"{'page':<20} {'request':<71} {'cold':>6} {'ready':>7} {'warm':>6}")
        requests = time_requests(url, args.repeat)
        pages = []
        if not args.no_browser and CHROMIUM.exists():
            stop(proc)  # the browser's "cold" is a fresh server too
            proc = serve(workdir, args.port)
            with httpx.Client(base_url=url, timeout=600) as client:
                who = client.get("/v1/dashboard/customers?q=&limit=1").json()[0]["customer_id"]
            pages = time_pages(url, who)
    finally:
        stop(proc)
    out = data / "results.json"
    out.write_text(json.dumps({"requests": requests, "pages": pages,
                               "load": os.getloadavg()}, indent=1), encoding="utf-8")  # fmt: skip
    print(f"results in {out}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
