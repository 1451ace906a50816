"""``make demo``: the main job end to end on the bundled sample data.

Runs the same ``kequn`` commands a user would type, printing each one first, so the demo
doubles as a tour. Outputs go to ``demo-output/`` (or the folder given as argument).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from rich.markup import escape

from kequn.cli import app
from kequn.cli._common import console


def run(*args: str) -> None:
    console.print(f"\n[bold cyan]$ kequn {escape(shlex.join(args))}[/]")
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

    # Scores: RFM value segments (stored per as_of, so runs can be compared) and CLV.
    run("rfm", "--as-of", "2025-12-31", "-w", str(ws))
    run("rfm", "--as-of", "2025-12-31", "--scheme", "cn8", "-w", str(ws))
    run("rfm", "--compare", "2025-06-30", "2025-12-31", "-w", str(ws))
    run(
        "clv",
        "predict",
        "--as-of",
        "2025-12-31",
        "--horizon",
        "90d",
        "--out",
        str(root / "clv.csv"),
        "-w",
        str(ws),
    )

    run("lifecycle", "--as-of", "2025-09-30", "-w", str(ws))
    run("lifecycle", "--as-of", "2025-12-31", "-w", str(ws))
    run("churn", "train", "-w", str(ws))
    run("churn", "predict", "--as-of", "2025-12-31", "-w", str(ws))

    # Segments: an ad-hoc count, then a file of segments evaluated twice so that the
    # membership history shows who entered and who left.
    segments = Path(__file__).parent / "sample" / "data" / "segments.toml"
    rule = (
        "count(events where type = 'add_to_cart', last 30 days) > 0 "
        "and count(orders, last 30 days) = 0"
    )
    run("segment", "count", rule, "--as-of", "2025-12-31", "-w", str(ws))
    valuable_but_leaving = "r_score >= 4 and (p_alive < 0.5 or churn_risk > 0.8)"
    run("segment", "count", valuable_but_leaving, "--as-of", "2025-12-31", "-w", str(ws))
    run("segment", "apply", str(segments), "--as-of", "2025-09-30", "-w", str(ws))
    run("segment", "apply", str(segments), "--as-of", "2025-12-31", "-w", str(ws))
    run("segment", "list", "-w", str(ws))
    run("segment", "overlap", "high_value", "active_buyers", "dormant", "-w", str(ws))
    export = str(root / "high_value_at_risk.csv")
    run("segment", "export", "high_value_at_risk", "--out", export, "-w", str(ws))

    # Discover groups nobody defined, each explained as a rule; describe a segment.
    run("cluster", "--as-of", "2025-12-31", "-w", str(ws))
    run("persona", "high_value", "--as-of", "2025-12-31", "-w", str(ws))

    # Why is a customer (not) in a segment, and how healthy are the segments?
    run("segment", "why", "high_value", "C000003", "--as-of", "2025-12-31", "-w", str(ws))
    run("health", "-w", str(ws))

    live(root, ws)

    # The real CDNow purchases (Fader, Hardie & Lee 2005) in a workspace of their own;
    # identical rows there are separate purchases, so they are kept.
    run("init", str(cdnow_ws))
    cdnow_orders = next(data.glob("cdnow_*orders.csv"))
    run("import", "orders", str(cdnow_orders), "--keep-duplicates", "-w", str(cdnow_ws))

    console.rule("[bold]outputs")
    console.print(f"sample data:        {data.resolve()}")
    console.print(f"workspace:          {ws.resolve()}")
    console.print(f"CDNow workspace:    {cdnow_ws.resolve()}")
    console.print(f"CLV predictions:    {(root / 'clv.csv').resolve()}")
    console.print(f"segment export:     {(root / 'high_value_at_risk.csv').resolve()}")
    console.print(f"trigger deliveries: {(root / 'cart_abandoners.jsonl').resolve()}")
    console.print(
        f"\nnext: [bold]source .venv/bin/activate[/], then e.g. "
        f"[bold]kequn profile C000003 -w {ws}[/], [bold]kequn serve -w {ws}[/] (API and "
        f"dashboard at http://127.0.0.1:8000/) or [bold]kequn --help[/]"
    )


def live(root: Path, ws: Path) -> None:
    """The real-time path without a server: events in, members and a trigger out.

    ``kequn serve`` runs the same :class:`~kequn.server.service.Service` behind its HTTP API.
    """
    from kequn.server.service import Service
    from kequn.workspace import open_workspace

    outbox = root / "cart_abandoners.jsonl"
    triggers = root / "triggers.toml"
    triggers.write_text(
        "# on entering the segment, append a line to a file (webhooks, e-mail, WeCom … alike)\n"
        '[[trigger]]\nname = "cart-reminder"\nsegment = "cart_abandoners"\non = "enter"\n'
        f'channel = "file"\npath = "{outbox.resolve().as_posix()}"\n',
        encoding="utf-8",
    )
    run("trigger", "apply", str(triggers), "-w", str(ws))
    console.rule("[bold]live: three add-to-cart events arrive (what POST /v1/events does)")
    with open_workspace(ws) as opened:
        service = Service(opened)
        events = [
            {"event_id": f"demo-{c}", "customer_id": c, "type": "add_to_cart"}
            for c in ("C000003", "C000004", "C000005")
        ]
        for row in events:
            row.update(occurred_at=service.clock(), properties=None, source="demo")
            row.update(import_id="api")
        service.submit(events=events)
        for t in service.process():
            console.print(f"{t.at:%H:%M:%S}  {t.customer_id} {t.kind}s {t.segment}")
        sent = service.dispatch()
        console.print(f"deliveries sent: {sent} → {outbox}")
        service.close()
    run("deliveries", "--limit", "3", "-w", str(ws))


if __name__ == "__main__":
    main(*sys.argv[1:2])
