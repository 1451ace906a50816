"""Readers: any supported file → a stream of Arrow batches, every row numbered.

CSV values are read as text, so that nothing is coerced before kequn can quarantine it
with the raw value; Parquet and Excel keep their types. Each batch gets ``_row``, the
1-based data row in the file (the header is row 0), which quarantine reports cite.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kequn.errors import EmptySource, InputError, SourceNotFound

CSV_SUFFIXES = {".csv", ".txt", ".tsv"}
EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
BATCH_BYTES = 16 << 20
PART_ROWS = 2_000_000  # rows of a Parquet file staged per statement


@dataclass
class Source:
    """One input file, opened: its headers and a way to stream its rows."""

    path: Path
    format: str
    headers: list[str]
    encoding: str | None
    size: int
    batches: Callable[[Callable[[int], None] | None], Iterator[pa.RecordBatch]]
    # Rows that could not be split into the header's columns: (data row, reason, text).
    # Filled once ``batches`` is exhausted; ``_row`` of the good rows skips them.
    invalid: list[tuple[int, str, str]] = field(default_factory=list)
    # Files DuckDB can read itself (Parquet): SQL for consecutive parts of the file, each
    # giving the file's columns and ``_row``, with the bytes done after it. Faster than
    # Arrow batches through Python (typed columns, read in parallel); empty: use batches.
    parts: list[tuple[str, int]] = field(default_factory=list)
    # CSV: whether values may hold line breaks. Finding row ends inside quotes halves the
    # reader's speed, so it is off unless the first MiB shows such a value; a later one
    # makes the fast reader fail (it never splits a row silently), sets this, and the
    # caller reads the file again.
    multiline: bool = True


def expand(patterns: list[str | os.PathLike]) -> list[Path]:
    """Paths and globs → existing files, in a stable order; a miss names the pattern."""
    files: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        if glob.has_magic(text):
            matched = sorted(Path(p) for p in glob.glob(text, recursive=True))
            matched = [p for p in matched if p.is_file()]
            if not matched:
                raise SourceNotFound(f"no file matches {text!r}")
            files.extend(matched)
        else:
            path = Path(text)
            if not path.is_file():
                raise SourceNotFound(f"file not found: {text!r}")
            files.append(path)
    seen: set[Path] = set()
    return [p for p in files if not (p.resolve() in seen or seen.add(p.resolve()))]


def open_source(path: Path) -> Source:
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise EmptySource(f"{str(path)!r} is empty (0 bytes)")
    if suffix in PARQUET_SUFFIXES:
        return _open_parquet(path)
    if suffix in EXCEL_SUFFIXES:
        return _open_excel(path)
    if suffix in CSV_SUFFIXES or suffix == "":
        return _open_csv(path)
    raise InputError(
        f"{str(path)!r}: unsupported file type {suffix!r}; "
        "use CSV (.csv/.tsv/.txt), Excel (.xlsx) or Parquet (.parquet)"
    )


def detect_encoding(sample: bytes) -> str:
    """UTF-8 (with or without BOM) when it decodes, else GB18030 (a superset of GBK)."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if len(sample) - exc.start < 4:  # a character cut by the end of the sample
            return "utf-8"
    try:
        sample.decode("gb18030")
        return "gb18030"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is None:
        raise InputError("cannot tell the file's text encoding; save it as UTF-8")
    return best.encoding


def _open_csv(path: Path) -> Source:
    size = path.stat().st_size
    with path.open("rb") as fh:
        sample = fh.read(1 << 20)
    encoding = detect_encoding(sample)
    text = sample.decode(encoding, errors="ignore")
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise EmptySource(f"{str(path)!r} has no header line")
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines[:50]), delimiters=",\t;|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    headers = next(csv.reader(io.StringIO(lines[0]), delimiter=delimiter))
    headers = _unique_headers([h.strip().lstrip("\ufeff") for h in headers])
    if len(lines) < 2 and len(sample) < (1 << 20):
        raise EmptySource(f"{str(path)!r} has a header but no data rows")

    def batches(progress: Callable[[int], None] | None) -> Iterator[pa.RecordBatch]:
        read = pacsv.ReadOptions(
            column_names=headers,
            skip_rows=1,
            encoding="utf8" if encoding in ("utf-8", "utf-8-sig") else encoding,
            block_size=BATCH_BYTES,
        )
        skipped: list[tuple[int, int, str]] = []

        def ragged(row: pacsv.InvalidRow) -> str:
            skipped.append((row.expected_columns, row.actual_columns, row.text))
            return "skip"

        parse = pacsv.ParseOptions(
            delimiter=delimiter,
            newlines_in_values=source.multiline,
            invalid_row_handler=ragged,
        )
        convert = pacsv.ConvertOptions(
            column_types={h: pa.string() for h in headers},
            # Keep 'N/A', 'NULL', 'nan' as the text they are: kequn decides what is
            # missing and quarantines the rest with the value the user wrote.
            strings_can_be_null=False,
        )
        row = 0
        with path.open("rb") as raw:
            if encoding == "utf-8-sig":
                raw.read(3)
                read.skip_rows = 1
            try:
                reader = pacsv.open_csv(
                    raw, read_options=read, parse_options=parse, convert_options=convert
                )
                for batch in reader:
                    yield _numbered(batch, row)
                    row += batch.num_rows
                    if progress:
                        progress(raw.tell())
            except pa.ArrowInvalid as exc:
                if not source.multiline and "out of sync" in str(exc):
                    source.multiline = True
                    raise InputError(
                        f"{str(path)!r} has line breaks inside quoted values; read it again"
                    ) from exc
                raise InputError(
                    f"{str(path)!r}: cannot read as CSV near data row {row + 1}: {exc}"
                ) from exc
        if skipped:
            source.invalid = _locate_ragged(path, encoding, delimiter, len(headers), skipped)

    source = Source(path, "csv", headers, encoding, size, batches)
    whole = text if len(sample) == size else text[: text.rfind("\n") + 1]  # no cut row
    source.multiline = _has_line_breaks(whole, delimiter)
    return source


def _has_line_breaks(sample: str, delimiter: str) -> bool:
    """Whether a value in the sample holds a line break (when unsure: yes, the safe side)."""
    try:
        return any(
            "\n" in value or "\r" in value
            for record in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
            for value in record
        )
    except csv.Error:
        return True


def _locate_ragged(
    path: Path, encoding: str, delimiter: str, width: int, skipped: list[tuple[int, int, str]]
) -> list[tuple[int, str, str]]:
    """The data row numbers of the rows the fast reader skipped (it cannot tell them).

    A second, slow pass with Python's csv module, made only for files that have such
    rows; its numbering (empty lines not counted) matches the fast reader's.
    """
    positions = []
    with path.open(encoding=encoding, newline="") as fh:
        records = csv.reader(fh, delimiter=delimiter)
        next(records, None)
        number = 0
        for record in records:
            if not record:
                continue
            number += 1
            if len(record) != width:
                positions.append(number)
    if len(positions) != len(skipped):  # the two parsers disagree: keep counts honest
        positions = [0] * len(skipped)
    return [
        (at, f"wrong number of fields: expected {want}, got {got}", text)
        for at, (want, got, text) in zip(positions, skipped, strict=True)
    ]


def _open_parquet(path: Path) -> Source:
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise InputError(f"{str(path)!r} is not a readable Parquet file: {exc}") from exc
    if pf.metadata.num_rows == 0:
        raise EmptySource(f"{str(path)!r} has no rows")
    headers = list(pf.schema_arrow.names)
    size = path.stat().st_size
    total = pf.metadata.num_rows

    def batches(progress: Callable[[int], None] | None) -> Iterator[pa.RecordBatch]:
        row = 0
        for batch in pf.iter_batches(batch_size=1 << 17):
            yield _numbered(batch, row)
            row += batch.num_rows
            if progress:
                progress(int(size * row / total))

    source = Source(path, "parquet", headers, None, size, batches)
    source.parts = _parquet_parts(path, pf, headers)
    return source


def _parquet_parts(path: Path, pf: pq.ParquetFile, headers: list[str]) -> list[tuple[str, int]]:
    """Row ranges of about PART_ROWS on row-group bounds: DuckDB skips the other groups."""
    text = str(path.resolve())
    if glob.has_magic(text) or {"_row", "file_row_number"} & set(headers):
        return []  # read_parquet would take the name as a glob, or the names would clash
    total, size = pf.metadata.num_rows, path.stat().st_size
    bounds, start, end = [], 0, 0
    for i in range(pf.metadata.num_row_groups):
        end += pf.metadata.row_group(i).num_rows
        if end - start >= PART_ROWS or i == pf.metadata.num_row_groups - 1:
            bounds.append((start, end))
            start = end
    name = "'" + text.replace("'", "''") + "'"
    return [
        (
            f"(SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS _row "
            f"FROM read_parquet({name}, file_row_number = true) "
            f"WHERE file_row_number >= {lo} AND file_row_number < {hi})",
            int(size * hi / total),
        )
        for lo, hi in bounds
    ]


def _open_excel(path: Path) -> Source:
    from python_calamine import CalamineWorkbook

    try:
        sheet = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0)
        rows = sheet.to_python(skip_empty_area=True)
    except Exception as exc:
        raise InputError(f"{str(path)!r} is not a readable Excel file: {exc}") from exc
    if not rows or not any(str(v).strip() for v in rows[0]):
        raise EmptySource(f"{str(path)!r}: the first sheet is empty")
    headers = _unique_headers([str(h).strip() for h in rows[0]])
    data = rows[1:]
    if not data:
        raise EmptySource(f"{str(path)!r} has a header but no data rows")
    padded = [(list(r) + [""] * len(headers))[: len(headers)] for r in data]
    columns = list(zip(*padded, strict=True))
    arrays = [pa.array([_cell(v) for v in col], pa.string()) for col in columns]
    table = pa.Table.from_arrays(arrays, names=headers)
    size = path.stat().st_size

    def batches(progress: Callable[[int], None] | None) -> Iterator[pa.RecordBatch]:
        for batch in table.to_batches(max_chunksize=1 << 20):
            yield _numbered(batch, 0)
        if progress:
            progress(size)

    return Source(path, "excel", headers, None, size, batches)


def _cell(value: object) -> str | None:
    """Excel cells as the text a user sees: 12345.0 → '12345', dates in ISO form."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def _numbered(batch: pa.RecordBatch, offset: int) -> pa.RecordBatch:
    rows = pa.array(np.arange(offset + 1, offset + batch.num_rows + 1, dtype=np.int64))
    return pa.RecordBatch.from_arrays([*batch.columns, rows], names=[*batch.schema.names, "_row"])


def _unique_headers(headers: list[str]) -> list[str]:
    """Blank or repeated headers get a suffix so every column keeps its values."""
    seen: dict[str, int] = {}
    result = []
    for i, header in enumerate(headers):
        name = header or f"column_{i + 1}"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        result.append(name)
    return result
