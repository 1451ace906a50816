"""Vectorised text for the sample tables: ids, times, money, and dictionary columns.

Fixed-width text (``C000123``, ``2024-01-05T08:26:13``) is written straight into a NumPy
byte matrix and handed to Arrow as a string array; text that repeats (products, channels, an
invoice's date on each of its lines) becomes a dictionary column, so a column of ten million
values costs an index array, not ten million strings. No Python loop runs over rows.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DAY = 86_400


def stable_order(key: np.ndarray) -> np.ndarray:
    """``np.argsort(key, kind="stable")`` for non-negative integers, as a 16-bit radix sort
    (NumPy sorts 16-bit integers in linear time; twice as fast on ten million keys)."""
    key = np.asarray(key, dtype=np.int64)
    order = np.arange(len(key))
    shift, top = 0, int(key.max(initial=0))
    while True:
        digit = ((key[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
        if top >> shift == 0:
            return order


def text_from_bytes(chars: np.ndarray) -> pa.Array:
    """A string array whose row i is the bytes of ``chars[i]`` (a 2-D uint8 matrix, ASCII)."""
    n, width = chars.shape
    size = n * width
    kind, offset_type = (pa.string(), np.int32) if size < 2**31 else (pa.large_string(), np.int64)
    offsets = np.arange(0, size + 1, width, dtype=offset_type)
    data = np.ascontiguousarray(chars, dtype=np.uint8)
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


@cache
def _groups() -> np.ndarray:
    """ "0000" … "9999" as a (10000, 4) byte matrix."""
    return _table([f"{i:04d}" for i in range(10_000)])


def _table(texts: list[str]) -> np.ndarray:
    """Equal-length ASCII texts as a byte matrix, one row each."""
    width = len(texts[0])
    return np.array(texts, dtype=f"S{width}").view(np.uint8).reshape(-1, width)


def _rows(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` for a byte matrix, each row moved as one value (much faster)."""
    width = table.shape[1]
    one = np.ascontiguousarray(table).view(f"V{width}").ravel()
    return one[index].view(np.uint8).reshape(len(index), width)


def digits(values: np.ndarray, width: int) -> np.ndarray:
    """The last ``width`` decimal digits of each value, zero-padded, as an (n, width) matrix."""
    values = np.asarray(values, dtype=np.int64)
    out = np.empty((len(values), width), dtype=np.uint8)
    right = width
    while right > 0:  # four digits at a time, from the right: a loop over digit groups
        take = min(4, right)
        out[:, right - take : right] = _rows(_groups(), values % 10_000)[:, 4 - take :]
        values = values // 10_000
        right -= take
    return out


def format_ids(numbers: np.ndarray, prefix: str, width: int) -> pa.Array:
    """``prefix`` + the number zero-padded to ``width`` digits (wider numbers keep all digits)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    if int(numbers.max(initial=0)) >= 10**width:
        text = pc.cast(pa.array(numbers), pa.string())
        return pc.binary_join_element_wise(prefix, pc.utf8_lpad(text, width, "0"), "")
    out = np.empty((len(numbers), len(prefix) + width), dtype=np.uint8)
    out[:, : len(prefix)] = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    out[:, len(prefix) :] = digits(numbers, width)
    return text_from_bytes(out)


@cache
def _clock(style: str) -> np.ndarray | pa.Array:
    if style == "shop":  # 8:26 — minutes, the hour without a leading zero, as Excel writes h:mm
        return pa.array([f"{m // 60}:{m % 60:02d}" for m in range(1440)])
    return _table([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(DAY)])


def format_times(seconds: np.ndarray, first_day: np.datetime64, style: str) -> pa.Array:
    """Seconds since midnight of ``first_day`` (local time) as text.

    ``iso``: ``2024-01-05T08:26:13``; ``sql``: ``2024-01-05 08:26:13``; ``shop``:
    ``2024/1/5 8:26``, as shop back-offices and Excel export it (no leading zeros, minutes).
    Each date and each clock time is formatted once and looked up per row.
    """
    seconds = np.asarray(seconds, dtype=np.int64)
    if len(seconds) == 0:
        return pa.array([], pa.string())
    day, of_day = seconds // DAY, seconds % DAY
    lo, hi = int(day.min()), int(day.max())
    span = np.arange(first_day + lo, first_day + hi + 1, dtype="datetime64[D]").tolist()
    if style == "shop":
        dates = pa.array([f"{d.year}/{d.month}/{d.day}" for d in span])
        return pc.binary_join_element_wise(
            pc.take(dates, pa.array(day - lo)), pc.take(_clock(style), pa.array(of_day // 60)), " "
        )
    out = np.empty((len(seconds), 19), dtype=np.uint8)
    out[:, :10] = _rows(_table([d.isoformat() for d in span]), day - lo)
    out[:, 10] = ord("T" if style == "iso" else " ")
    out[:, 11:] = _rows(_clock("iso"), of_day)
    return text_from_bytes(out)


def format_cents(cents: np.ndarray) -> pa.Array:
    """Money in cents as ``12.50`` (two decimals, no thousands separator); for short lists."""
    return pa.array([f"{'-' if c < 0 else ''}{abs(c) // 100}.{abs(c) % 100:02d}" for c in cents])


def ints_to_text(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def join(*parts: pa.Array | str) -> pa.Array:
    """Concatenate strings and string arrays element-wise (a null part gives a null)."""
    return pc.binary_join_element_wise(*parts, "")


def coded(
    index: np.ndarray,
    values: pa.Array | list[str],
    null: np.ndarray | None = None,
    *,
    unique: bool = False,
) -> pa.DictionaryArray:
    """A dictionary column: ``values[index]``, null where ``null`` is true.

    Repeated values are merged first (pandas refuses a dictionary with repeats), unless the
    caller knows them ``unique``.
    """
    dictionary = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    index = np.asarray(index)
    if not unique:
        merged = pc.dictionary_encode(dictionary)
        if len(merged.dictionary) < len(dictionary):
            index = merged.indices.to_numpy()[index]
            dictionary = merged.dictionary
    mask = None if null is None else np.asarray(null, dtype=bool)
    indices = pa.array(index.astype(np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(indices, dictionary)
