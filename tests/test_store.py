"""The storage layer on DuckDB and on a second Ibis backend (SQLite)."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from kequn import WorkspaceError, init_workspace, open_workspace
from kequn.ingest import import_files
from kequn.profiles import profile
from kequn.store import TABLES


def _sqlite_workspace(tmp_path):
    folder = tmp_path / "ws"
    init_workspace(folder).close()
    config = folder / "kequn.toml"
    url = f"sqlite:///{folder / 'store.db'}"
    config.write_text(config.read_text().replace('backend = "duckdb"', f'backend = "{url}"'))
    return open_workspace(folder)


def _orders(rows: list[tuple]) -> pa.Table:
    names = list(TABLES["orders"].names)
    cols = list(zip(*rows, strict=True))
    data = dict(
        zip(["order_id", "customer_id", "ordered_at", "amount", "is_return"], cols, strict=True)
    )
    return pa.table({n: data.get(n, [None] * len(rows)) for n in names}).cast(
        TABLES["orders"].to_pyarrow()
    )


def test_init_creates_every_canonical_table(tmp_path):
    ws = init_workspace(tmp_path / "ws")
    assert set(TABLES) <= set(ws.con.list_tables())
    assert (tmp_path / "ws" / "kequn.toml").is_file()
    assert (tmp_path / "ws" / "kequn.duckdb").is_file()
    ws.close()


def test_profile_runs_on_sqlite_through_ibis(tmp_path):
    ws = _sqlite_workspace(tmp_path)
    assert ws.con.name == "sqlite"
    ws.store.append("customers", _customers("u1", "张三"))
    ws.store.append(
        "orders",
        _orders(
            [
                ("o1", "u1", datetime(2024, 1, 1), 10.0, False),
                ("o2", "u1", datetime(2024, 2, 1), 30.0, False),
                ("o3", "u1", datetime(2024, 2, 2), -10.0, True),
            ]
        ),
    )
    data = profile(ws, "u1")
    assert data["attributes"]["name"] == "张三"
    assert data["orders"]["orders"] == 2 and data["orders"]["returns"] == 1
    assert data["orders"]["revenue"] == 40.0 and data["orders"]["returned_amount"] == 10.0
    ws.close()


def _customers(customer_id: str, name: str) -> pa.Table:
    names = list(TABLES["customers"].names)
    data = {"customer_id": [customer_id], "name": [name]}
    return pa.table({n: data.get(n, [None]) for n in names}).cast(TABLES["customers"].to_pyarrow())


def test_import_into_another_backend_says_what_to_do(tmp_path):
    ws = _sqlite_workspace(tmp_path)
    path = tmp_path / "o.csv"
    path.write_text("customer_id,date,amount\nu,2024-01-01,1\n")
    with pytest.raises(WorkspaceError, match="import into a DuckDB workspace"):
        import_files(ws, "orders", [path])
    ws.close()


def test_bad_config_is_a_clear_error(tmp_path):
    folder = tmp_path / "ws"
    init_workspace(folder).close()
    (folder / "kequn.toml").write_text("[store\nbackend = 1")
    with pytest.raises(WorkspaceError, match="not valid TOML"):
        open_workspace(folder)
