"""Request and response bodies of the HTTP API (Pydantic: they are the OpenAPI document).

Unknown fields are refused (``extra="forbid"``): a typo such as ``occured_at`` must come back
as a 422 naming the field, not vanish. Customer attributes beyond the standard fields go in
``attributes``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Id = Field(min_length=1, max_length=200)


class EventIn(BaseModel):
    """One behaviour event; ``event_id`` makes a retried request count once."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Id
    customer_id: str = Id
    type: str = Field(min_length=1, max_length=100, description="e.g. view, add_to_cart")
    occurred_at: datetime | None = Field(
        None,
        description="ISO 8601; with an offset it is converted to the workspace zone; "
        "without one it is read as workspace time; default: when received",
    )
    properties: dict[str, Any] | None = Field(None, description="nested JSON, usable in rules")
    source: str | None = Field(None, max_length=100)


class OrderIn(BaseModel):
    """One order; ``order_id`` makes a retried request count once."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Id
    customer_id: str = Id
    ordered_at: datetime | None = None
    amount: float
    quantity: float | None = None
    status: str | None = None
    is_return: bool = False
    channel: str | None = None
    source: str | None = None


class CustomerIn(BaseModel):
    """An upsert: the fields given replace stored ones; fields not given are kept."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str = Id
    name: str | None = None
    name_en: str | None = None
    gender: str | None = None
    birth_date: date | None = None
    age_band: str | None = None
    city: str | None = None
    province: str | None = None
    channel: str | None = None
    email: str | None = None
    phone: str | None = None
    attributes: dict[str, Any] | None = Field(
        None, description="other fields, merged key by key into the stored ones"
    )


class Written(BaseModel):
    """What a write stored: ``accepted`` new items, ``duplicates`` already seen (by id).

    ``erased_ids``: items of people erased with ``kequn forget`` (right to be forgotten),
    refused so that their history does not come back.
    """

    accepted: int
    duplicates: int
    duplicate_ids: list[str] = []
    erased_ids: list[str] = []


class SegmentIn(BaseModel):
    """A segment definition to create or change; the rule is checked before anything is saved."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\s'\"]+$")
    rule: str = Field(min_length=1)
    label_zh: str | None = None
    label_en: str | None = None
    description: str | None = None
    owner: str | None = None
    tags: list[str] = []


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = Field("csv", description="csv, xlsx, parquet or json")
    columns: list[str] | None = Field(None, description="customer columns; default a standard set")


class Problem(BaseModel):
    """Every 4xx/5xx body: what went wrong, and where when it is about one field."""

    error: str
    field: str | None = None
    detail: Any = None
