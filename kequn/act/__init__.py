"""Acting on segments: triggers, deliveries to channels, experiments with holdouts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

    from kequn.workspace import Workspace


def enqueue_changes(ws: Workspace, changes: pa.Table) -> int:
    """Deliveries for the entries and exits of a batch ``apply`` (its ``notify`` hook).

    Runs inside apply's transaction, so the deliveries commit with the memberships.
    """
    from kequn.act.outbox import Transition, enqueue, workspace_now

    transitions = [
        Transition(r["segment"], r["customer_id"], r["kind"], r["at"]) for r in changes.to_pylist()
    ]
    return enqueue(ws, transitions, workspace_now(ws))
