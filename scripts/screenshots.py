"""Screenshots of every dashboard page in English and Chinese, into docs/screenshots/.

Builds a sample workspace (the browser tests' ``build_workspace``), serves it with the real
``kequn serve`` and captures each page with Debian's Chromium (``scripts/ensure-chromium.sh``):

    .venv/bin/python scripts/screenshots.py [OUT_FOLDER]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from server_util import Server  # noqa: E402
from test_api_dashboard import build_workspace  # noqa: E402

PAGES = {
    "overview": "overview",
    "segments": "segments",
    "builder": "builder?rule=count(orders) >= 3 and city in ('上海', '北京')",
    "segment": "segments/high_value",
    "customer": "customers/C000001",
    "clusters": "clusters",
    "campaigns": "campaigns",
    "import": "import",
    "settings": "settings",
}


def main(out: str = str(ROOT / "docs" / "screenshots")) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ws = build_workspace(Path(tmp), customers=800)
        server = Server(ws)
        try:
            shoot(server.url, folder)
        finally:
            server.stop()


def shoot(url: str, folder: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for locale, suffix in (("en-US", "en"), ("zh-CN", "zh")):
            context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 860})
            page = context.new_page()
            for name, route in PAGES.items():
                page.goto(f"{url}/#/{route}")
                ready = route.split("?")[0].split("/")[0]
                page.wait_for_selector(f'#view[data-ready="{ready}"]')
                page.wait_for_timeout(1200 if name in ("builder", "segment") else 400)
                path = folder / f"{name}-{suffix}.png"
                page.screenshot(path=str(path))
                print(path)
            context.close()
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:2])
