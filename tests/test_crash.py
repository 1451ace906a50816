"""An import killed with SIGKILL midway leaves the workspace as it was before it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from kequn import init_workspace, open_workspace
from kequn.ingest import import_files

CRASHING_IMPORT = textwrap.dedent(
    """
    import os, signal, sys
    from kequn import open_workspace
    from kequn.ingest import load

    write_orders = load._write_orders

    def write_then_die(*args, **kwargs):
        write_orders(*args, **kwargs)  # rows are written, the commit has not happened
        os.kill(os.getpid(), signal.SIGKILL)

    load._write_orders = write_then_die
    load.import_files(open_workspace(sys.argv[1]), "orders", [sys.argv[2]])
    """
)


def _counts(ws) -> dict[str, int]:
    tables = ("orders", "order_lines", "customers", "identities", "quarantine", "imports")
    return {t: ws.store.duck.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables}


def test_kill_9_mid_import_leaves_workspace_unchanged(tmp_path):
    ws = init_workspace(tmp_path / "ws")
    first = tmp_path / "first.csv"
    first.write_text("order_id,customer_id,date,amount\nA,u1,2024-01-01,5\n")
    import_files(ws, "orders", [first])
    before = _counts(ws)
    ws.close()  # DuckDB allows one writing process at a time

    second = tmp_path / "second.csv"
    lines = [f"B{i},u{i % 50},2024-02-{i % 28 + 1:02d},{i}.5" for i in range(2000)]
    second.write_text("order_id,customer_id,date,amount\n" + "\n".join(lines) + "\nbad,,x,y\n")
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_IMPORT, str(tmp_path / "ws"), str(second)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    ws = open_workspace(tmp_path / "ws")
    assert _counts(ws) == before
    # the file was not recorded as imported, so importing it again works in full
    report = import_files(ws, "orders", [second])
    assert report.imported == 2000 and report.quarantined_total == 1
    ws.close()
