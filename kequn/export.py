"""Write a table of results to CSV, Excel, Parquet or JSON, chosen by the file's suffix.

One writer for every command with ``--out``. CSV gets a UTF-8 BOM so that Excel opens
Chinese text correctly; Excel refuses more rows than a sheet holds instead of truncating.

:func:`write_frame` writes a pandas frame (small results: RFM, CLV, churn scores).
:func:`write_batches` writes Arrow record batches as they come (a segment's members, any
number of them) in bounded memory: CSV and JSON text batch by batch, Parquet one row group
per batch, Excel in openpyxl's write-only mode; JSON Lines (``.jsonl``) too.
:func:`csv_chunks` and :func:`json_chunks` give the same text as bytes for an HTTP body.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from kequn.errors import InputError

if TYPE_CHECKING:  # pandas and pyarrow load on first write, not when the CLI starts
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "EXCEL_MAX_ROWS",
    "EXPORT_TYPES",
    "STREAM_TYPES",
    "check_out_path",
    "csv_chunks",
    "json_chunks",
    "write_batches",
    "write_frame",
]

EXPORT_TYPES = (".csv", ".xlsx", ".parquet", ".json")
STREAM_TYPES = (*EXPORT_TYPES, ".jsonl")  # write_batches also writes JSON Lines
EXCEL_MAX_ROWS = 1_048_575


def check_out_path(out: str | Path, types: tuple[str, ...] = EXPORT_TYPES) -> Path:
    """The path, once its suffix is one kequn writes (checked before any work is done)."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in types:
        raise InputError(
            f"--out {str(path)!r}: unknown file type {suffix or '(none)'!r}; "
            f"use one of {', '.join(types)}"
        )
    return path


def check_excel_rows(path: Path, rows: int) -> None:
    """Refuse before writing anything when the rows cannot fit in one Excel sheet."""
    if path.suffix.lower() == ".xlsx" and rows > EXCEL_MAX_ROWS:
        raise InputError(
            f"--out {str(path)!r}: {rows:,} rows do not fit in one Excel sheet "
            f"(at most {EXCEL_MAX_ROWS:,} below the header); write .csv or .parquet instead"
        )


def write_frame(frame: pd.DataFrame, out: str | Path, *, sheet: str = "kequn") -> Path:
    """Write ``frame`` to ``out`` in the format its suffix names; return the path."""
    import pandas as pd

    path = check_out_path(out)
    suffix = path.suffix.lower()
    if suffix == ".xlsx" and len(frame) > EXCEL_MAX_ROWS:
        raise InputError(
            f"--out {str(path)!r}: {len(frame):,} rows do not fit in one Excel sheet; "
            "write .csv or .parquet instead"
        )
    try:
        if suffix == ".csv":
            frame.to_csv(path, index=False, encoding="utf-8-sig")
        elif suffix == ".xlsx":
            with pd.ExcelWriter(
                path,
                engine="openpyxl",
                date_format="YYYY-MM-DD",
                datetime_format="YYYY-MM-DD HH:MM:SS",
            ) as writer:
                frame.to_excel(writer, index=False, sheet_name=_sheet(sheet))
        elif suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            records = json.loads(_dates_as_text(frame).to_json(orient="records"))
            path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--out {str(path)!r}: cannot write: {exc.strerror or exc}") from exc
    return path


def _dates_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Timestamps as ISO text; a column of whole days as plain dates (2024-06-30)."""
    import pandas as pd

    frame = frame.copy()
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            whole_days = bool((col.dropna() == col.dropna().dt.normalize()).all())
            fmt = "%Y-%m-%d" if whole_days else "%Y-%m-%dT%H:%M:%S"
            frame[name] = col.dt.strftime(fmt)
        elif (
            col.dtype == object and len(col.dropna()) and hasattr(col.dropna().iloc[0], "isoformat")
        ):
            frame[name] = col.map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v)
    return frame


def _sheet(name: str) -> str:
    """An Excel sheet name: at most 31 characters, none of []:*?/\\."""
    clean = "".join("_" if ch in "[]:*?/\\" else ch for ch in name)[:31]
    return clean or "kequn"


# --- streaming: Arrow record batches in, a file or bytes out ---------------------------------

Progress = Callable[[int], None]  # called with the rows just written


def _as_text_times(batch: pa.RecordBatch, sep: str) -> pa.RecordBatch:
    """Timestamps as ``2024-06-30 08:05:00`` (``sep`` between date and time) for text formats."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for col in batch.columns:
        if pa.types.is_timestamp(col.type):
            col = pc.strftime(col, format=f"%Y-%m-%d{sep}%H:%M:%S")
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _csv_text(batch: pa.RecordBatch) -> bytes:
    """One batch as CSV rows (no header): unquoted where no value needs quotes."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    batch = _as_text_times(batch, " ")
    sink = pa.BufferOutputStream()
    try:  # most batches need no quotes at all; pyarrow refuses when one value does
        pcsv.write_csv(batch, sink, pcsv.WriteOptions(include_header=False, quoting_style="none"))
    except pa.ArrowInvalid:
        sink = pa.BufferOutputStream()
        pcsv.write_csv(batch, sink, pcsv.WriteOptions(include_header=False))
    return sink.getvalue().to_pybytes()


def _csv_header(names: list[str]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(names)
    return text.getvalue().encode("utf-8")


def csv_chunks(batches: Iterable[pa.RecordBatch], names: list[str]) -> Iterator[bytes]:
    """CSV with a UTF-8 BOM, one chunk per batch: the body of a streamed HTTP answer."""
    yield "\ufeff".encode() + _csv_header(names)
    for batch in batches:
        if batch.num_rows:
            yield _csv_text(batch)


def _json_rows(batch: pa.RecordBatch) -> list[str]:
    batch = _as_text_times(batch, "T")
    return [json.dumps(row, ensure_ascii=False, default=str) for row in batch.to_pylist()]


def json_chunks(batches: Iterable[pa.RecordBatch], *, lines: bool = False) -> Iterator[bytes]:
    """A JSON array of objects (or JSON Lines), one chunk per batch, never one whole string."""
    first = True
    if not lines:
        yield b"["
    for batch in batches:
        if not batch.num_rows:
            continue
        rows = _json_rows(batch)
        if lines:
            yield ("\n".join(rows) + "\n").encode("utf-8")
        else:
            yield (("\n" if first else ",\n") + ",\n".join(rows)).encode("utf-8")
        first = False
    if not lines:
        yield b"\n]\n"


def write_batches(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    out: str | Path,
    *,
    rows: int | None = None,
    sheet: str = "kequn",
    progress: Progress | None = None,
) -> int:
    """Write record batches to ``out`` (type from the suffix) as they come; return the rows.

    Memory stays that of one batch whatever the total. ``rows``, when known (counted
    before), lets an Excel file be refused before anything is written.
    """
    path = check_out_path(out, STREAM_TYPES)
    suffix = path.suffix.lower()
    if rows is not None:
        check_excel_rows(path, rows)
    written = 0

    def counted(source: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        nonlocal written
        for batch in source:
            written += batch.num_rows
            if suffix == ".xlsx":
                check_excel_rows(path, written)
            yield batch
            if progress is not None:
                progress(batch.num_rows)

    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(path, schema) as writer:
                for batch in counted(batches):
                    writer.write_batch(batch)
        elif suffix == ".xlsx":
            _write_xlsx(counted(batches), schema, path, sheet)
        else:
            if suffix == ".csv":
                chunks = csv_chunks(counted(batches), list(schema.names))
            else:
                chunks = json_chunks(counted(batches), lines=suffix == ".jsonl")
            with path.open("wb") as f:
                for chunk in chunks:
                    f.write(chunk)
    except OSError as exc:
        raise InputError(f"--out {str(path)!r}: cannot write: {exc.strerror or exc}") from exc
    return written


def _write_xlsx(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: Path, sheet: str
) -> None:
    """Excel row by row in openpyxl's write-only mode (rows go to disk as they come)."""
    import openpyxl

    book = openpyxl.Workbook(write_only=True)
    ws = book.create_sheet(_sheet(sheet))
    ws.append(list(schema.names))
    for batch in batches:
        for row in batch.to_pylist():
            ws.append(list(row.values()))
    book.save(path)
