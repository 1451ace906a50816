"""``make demo``: the main job end to end on the bundled sample data.

Runs the same ``kequn`` commands a user would type, printing each one first, so the demo
doubles as a tour. Outputs go to ``demo-output/`` (or the folder given as argument).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from kequn.cli import app
from kequn.cli._common import console


def run(*args: str) -> None:
    console.print(f"\n[bold cyan]$ kequn {' '.join(args)}[/]")
    try:
        app(list(args), standalone_mode=False)
    except SystemExit as exc:  # typer.Exit inside standalone_mode=False
        if exc.code:
            raise


def main(out: str = "demo-output") -> None:
    root = Path(out)
    shutil.rmtree(root, ignore_errors=True)
    data, ws, cdnow_ws = root / "sample", root / "workspace", root / "cdnow"

    run("sample", "--customers", "2000", "--out", str(data))
    run("init", str(ws))
    run("import", "customers", str(data / "customers.csv"), "--source", "crm", "-w", str(ws))
    run("import", "customers", str(data / "members.csv"), "--source", "shop", "-w", str(ws))
    run("import", "orders", str(data / "orders.csv"), "-w", str(ws))
    run("import", "events", str(data / "events.csv"), "-w", str(ws))
    run("quarantine", "--limit", "5", "-w", str(ws))
    for customer in ("C000001", "C000002"):
        run("profile", customer, "--recent", "3", "-w", str(ws))

    # The real CDNow purchases (Fader, Hardie & Lee 2005) in a workspace of their own;
    # identical rows there are separate purchases, so they are kept.
    run("init", str(cdnow_ws))
    cdnow_orders = next(data.glob("cdnow_*orders.csv"))
    run("import", "orders", str(cdnow_orders), "--keep-duplicates", "-w", str(cdnow_ws))

    console.rule("[bold]outputs")
    console.print(f"sample data:        {data.resolve()}")
    console.print(f"workspace:          {ws.resolve()}  (try: kequn profile C000003 -w {ws})")
    console.print(f"CDNow workspace:    {cdnow_ws.resolve()}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
