"""Write a table of results to CSV, Excel, Parquet or JSON, chosen by the file's suffix.

One writer for every command with ``--out``. CSV gets a UTF-8 BOM so that Excel opens
Chinese text correctly; Excel refuses more rows than a sheet holds instead of truncating.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from kequn.errors import InputError

if TYPE_CHECKING:  # pandas loads on first write, not when the CLI starts
    import pandas as pd

__all__ = ["EXCEL_MAX_ROWS", "EXPORT_TYPES", "check_out_path", "write_frame"]

EXPORT_TYPES = (".csv", ".xlsx", ".parquet", ".json")
EXCEL_MAX_ROWS = 1_048_575


def check_out_path(out: str | Path) -> Path:
    """The path, once its suffix is one kequn writes (checked before any work is done)."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_TYPES:
        raise InputError(
            f"--out {str(path)!r}: unknown file type {suffix or '(none)'!r}; "
            f"use one of {', '.join(EXPORT_TYPES)}"
        )
    return path


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
