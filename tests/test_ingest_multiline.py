"""CSV values with line breaks: the fast reader gives way to the slow one, rows stay exact."""

from __future__ import annotations

import pytest
from conftest import rows

from kequn import InputError
from kequn.ingest import import_files, readers

HEADER = "order_id,customer_id,ordered_at,amount,note\n"


def _file(write, lines_before: int):
    """``lines_before`` plain rows (over 1 MiB: past the sample), then 3000 rows whose note
    holds a line break; data row 5 and the last row have bad dates."""
    out = [HEADER]
    for i in range(1, lines_before + 1):
        day = "bad date" if i == 5 else "2024-01-02"
        out.append(f"o{i},c{i % 50},{day},{i % 90 + 1}.5,plain note number {i:07d}\n")
    n = lines_before
    for j in range(3000):
        n += 1
        day = "bad date" if j == 2999 else "2024-02-03 10:00"
        out.append(f'o{n},c{n % 50},{day},2,"first line {j}\nsecond line, {j}"\n')
    return write("lines.csv", "".join(out)), n


def test_line_break_after_the_sample_reads_again(ws, write, monkeypatch):
    monkeypatch.setattr(readers, "BATCH_BYTES", 1 << 14)
    path, last = _file(write, 25_000)
    assert path.stat().st_size > 1 << 20
    source = readers.open_source(path)
    assert not source.multiline  # the first MiB has no line break inside a value
    with pytest.raises(InputError, match="line breaks inside quoted values"):
        for _ in source.batches(None):
            pass
    assert source.multiline

    seen: list[int] = []
    report = import_files(ws, "orders", [path], progress=lambda done, total: seen.append(done))
    assert report.rows_read == last and report.quarantined == {"unparseable ordered_at": 2}
    assert rows(ws, "SELECT row_number FROM quarantine ORDER BY 1") == [(5,), (last,)]
    assert report.imported == last - 2
    assert rows(ws, "SELECT count(*) FROM orders WHERE ordered_at = '2024-02-03 10:00'") == [
        (2999,)
    ]
    assert seen[-1] == path.stat().st_size


def test_line_break_in_the_sample_reads_slowly_from_the_start(ws, write):
    path = write("o.csv", HEADER + 'a1,c1,2024-01-02,3,"two\nlines"\na2,c1,bad,4,x\n')
    assert readers.open_source(path).multiline
    report = import_files(ws, "orders", [path])
    assert report.rows_read == 2
    assert rows(ws, "SELECT row_number, reason FROM quarantine") == [(2, "unparseable ordered_at")]
