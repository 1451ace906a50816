"""A vectorised CSV writer: Arrow string kernels build each line, the bytes go out in one write.

``pyarrow.csv.write_csv`` quotes every string value; real exports (Excel, shop back-offices)
quote only values that need it, and so does this writer: exactly like Python's ``csv`` module
with ``QUOTE_MINIMAL``, a value is quoted when it holds a comma, a double quote or a line
break, and inner quotes are doubled. Nulls are written as empty fields.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_CHUNK_ROWS = 250_000
_NEEDS_QUOTES = r'[,"\r\n]'


_SPECIAL = np.zeros(256, dtype=bool)
_SPECIAL[[ord(","), ord('"'), ord("\n"), ord("\r")]] = True


def _text(column: pa.Array) -> bool:
    return pa.types.is_string(column.type) or pa.types.is_large_string(column.type)


def _plain_text(column: pa.Array) -> bool:
    """True when no value of a text column holds a byte that would need quoting (a scan of
    the bytes, much faster than a regular expression per value)."""
    if len(column) == 0 or column.buffers()[2] is None:
        return True
    wide = pa.types.is_large_string(column.type)
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64 if wide else np.int32)
    first, last = offsets[column.offset], offsets[column.offset + len(column)]
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8)[first:last]
    return not _SPECIAL[data].any()


def _quoted(column: pa.Array) -> pa.Array:
    """The column as CSV field text: quoted where needed, nulls as empty fields."""
    text = column if _text(column) else pc.cast(column, pa.string())
    text = pc.fill_null(text, "")
    if _text(column) and not _plain_text(column):
        needs = pc.match_substring_regex(text, _NEEDS_QUOTES)
        quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
        text = pc.if_else(needs, quoted, text)
    return text


class _Field:
    """One column, ready to be cut into chunks of field text. A dictionary column is quoted
    once, its dictionary, and expanded chunk by chunk; a text column is scanned once for
    characters that need quoting; numbers never need it."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        column = column.combine_chunks()
        self.dictionary = None
        self.plain = True
        if pa.types.is_dictionary(column.type):
            self.dictionary = _quoted(pa.concat_arrays([column.dictionary, pa.array([""])]))
            empty = len(self.dictionary) - 1
            self.values = pc.fill_null(pc.cast(column.indices, pa.int64()), empty)
        else:
            self.values = column
            self.plain = not _text(column) or _plain_text(column)

    def chunk(self, start: int, length: int) -> pa.Array:
        part = self.values.slice(start, length)
        if self.dictionary is not None:
            return pc.take(self.dictionary, part)
        if not self.plain:
            return _quoted(part)
        text = part if _text(part) else pc.cast(part, pa.string())
        return pc.fill_null(text, "") if text.null_count else text


def _header(names: list[str], newline: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator=newline).writerow(names)
    return buf.getvalue()


def _chunk_bytes(fields: list[_Field], start: int, length: int, newline: str) -> bytes:
    parts = [f.chunk(start, length) for f in fields]
    lines = pc.binary_join_element_wise(*parts, ",")
    # the separator goes between fields only, so the line end is a second join
    lines = pc.binary_join_element_wise(lines, newline, "")
    wide = pa.types.is_large_string(lines.type)
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64 if wide else np.int32)
    first, last = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return lines.buffers()[2][first:last].to_pybytes()


def write_csv(table: pa.Table, path: Path, *, encoding: str = "utf-8", newline: str = "\n") -> int:
    """Write ``table`` to ``path`` as CSV in ``encoding``; returns the number of bytes written.

    ``encoding`` is any Python codec (``"gbk"``, ``"utf-8-sig"`` for a BOM). Every value must be
    encodable in it; a ``UnicodeEncodeError`` names the first one that is not.
    """
    body_codec = _body_codec(encoding)
    written = 0
    with open(path, "wb") as out:
        written += out.write(_header(table.column_names, newline).encode(encoding))
        fields = [_Field(column) for column in table.columns]
        for start in range(0, table.num_rows, _CHUNK_ROWS):
            chunk = _chunk_bytes(fields, start, _CHUNK_ROWS, newline)
            if body_codec != "utf-8":
                chunk = chunk.decode("utf-8").encode(body_codec)
            written += out.write(chunk)
    return written


def _body_codec(encoding: str) -> str:
    name = encoding.replace("_", "-").lower()
    # a BOM belongs at the start of the file only, not at the start of every chunk
    return "utf-8" if name in ("utf-8", "utf8", "utf-8-sig") else encoding
