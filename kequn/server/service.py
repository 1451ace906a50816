"""The running service: accept writes, keep memberships live, deliver what they trigger.

Three loops, each with its own connection to the workspace's database (DuckDB runs them
concurrently, each transaction seeing a consistent snapshot), and a fourth connection for
the API's reads; a lock per connection, since one connection runs one query at a time:

* the **writer** gathers the writes that arrive within a few milliseconds into one
  transaction (group commit) and answers each request only after that commit;
* the **evaluator** re-evaluates the customers those writes touched, for the segments
  whose rules read what changed, and every ``tick`` the customers whose time windows moved;
  it records entries and exits, the deliveries they trigger and the processing cursor in
  one transaction, so a crash replays exactly the unrecorded part;
* the **dispatcher** sends due deliveries outside the lock (network calls must not block
  the database) and records each result.

Each loop's step is also a method (:meth:`process`, :meth:`tick`, :meth:`dispatch`), so tests
drive the service with an injected clock and no threads.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from kequn.asof import resolve_as_of
from kequn.errors import KequnError
from kequn.server.journal import Accepted, Journal
from kequn.server.live import LiveSegments, Transition
from kequn.workspace import Workspace

__all__ = ["Service"]

log = logging.getLogger("kequn.serve")

Clock = Callable[[], datetime]


class Service:
    """One workspace served: see the module docstring for the three loops."""

    def __init__(
        self,
        ws: Workspace,
        *,
        clock: Clock | None = None,
        tick: float = 1.0,
        commit_window: float = 0.002,
        senders: int = 8,
    ) -> None:
        self.ws = ws
        self.clock: Clock = clock or (lambda: resolve_as_of(None, ws.config.timezone).end)
        self.tick_seconds = tick
        self.commit_window = commit_window
        self.lock = threading.RLock()  # the evaluator's connection (self.ws)
        self.write_lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.read_lock = threading.RLock()
        self.ws_write = _another(ws)
        self.ws_send = _another(ws)
        self.ws_read = _another(ws)
        self._writes: queue.Queue[tuple[dict[str, Any], Future[Accepted]]] = queue.Queue()
        self._dirty: dict[str, set[tuple[str, str]]] = {}
        self._dirty_seq = 0
        self._dirty_lock = threading.Lock()
        self._wake_eval = threading.Event()
        self._wake_send = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._senders = senders
        self.stats = {"written": 0, "evaluated": 0, "transitions": 0, "sent": 0}
        self.timings: dict[str, list[float]] = {}
        with self.lock:
            self.journal = Journal(self.ws_write)
            self.live = LiveSegments(ws)
            self._last_tick = self._load_last_tick()
            self.load_triggers()
            self._load_live_tags()
            self._recover()

    # --- start-up ------------------------------------------------------------------------

    def _load_last_tick(self) -> datetime:
        rows = self.ws.store.duck.execute(
            "SELECT value FROM service_state WHERE key = 'last_tick_us'"
        ).fetchall()
        if rows:
            return datetime(1970, 1, 1) + timedelta(microseconds=int(rows[0][0]))
        return self.clock()

    def _save_last_tick(self, moment: datetime) -> None:
        micros = (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1)
        self.ws.store.duck.execute(
            "INSERT INTO service_state VALUES ('last_tick_us', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [micros],
        )

    def _recover(self) -> None:
        """Replay what was accepted but not recorded, and evaluate new segments in full."""
        dirty, last = self.journal.unprocessed(self.ws)
        if dirty:
            log.info("resuming: %d customers accepted but not yet evaluated", len(dirty))
            self._mark(dirty, last)
        self.evaluate_new_segments()

    def evaluate_new_segments(self) -> list[str]:
        """Segments never evaluated get one full evaluation, so the live path has a baseline."""
        from kequn.segments import engine

        with self.lock:
            runs = self.ws.table("segment_runs")
            evaluated = set(runs.segment.to_pyarrow().to_pylist())
            fresh = [s for s in self.live.segments if s.name not in evaluated]
            if fresh:
                engine.apply(self.ws, fresh, as_of=self.clock())
                self.live.reload()
            return [s.name for s in fresh]

    def save_segment(self, segment: Any) -> dict[str, Any]:
        """Create or change a segment: evaluate it in full now, then keep it live.

        A changed rule moves customers like any other change, so their triggers fire; a new
        segment's first evaluation is its baseline and fires nothing (see ``apply``).
        """
        from kequn.act import enqueue_changes
        from kequn.segments import engine

        with self.lock:
            report = engine.apply(self.ws, [segment], as_of=self.clock(), notify=enqueue_changes)
            self.live.reload()
        run = report.runs[0]
        return {
            "name": run.segment,
            "as_of": run.as_of,
            "size": run.size,
            "entered": run.entered,
            "exited": run.exited,
        }

    def evaluate_all(self, names: Sequence[str] | None = None) -> dict[str, int]:
        """Evaluate stored segments in full now (after a bulk import, say), in one query."""
        from kequn.act import enqueue_changes
        from kequn.segments import engine

        with self.lock:
            segments = engine.stored_segments(self.ws)
            if names is not None:
                segments = [s for s in segments if s.name in set(names)]
            if not segments:
                return {}
            report = engine.apply(self.ws, segments, as_of=self.clock(), notify=enqueue_changes)
            self.live.reload()
        return {r.segment: r.size for r in report.runs}

    # --- writes ----------------------------------------------------------------------------

    def submit(
        self,
        *,
        events: Sequence[dict[str, Any]] = (),
        orders: Sequence[dict[str, Any]] = (),
        customers: Sequence[dict[str, Any]] = (),
        timeout: float = 30.0,
    ) -> Accepted:
        """Queue a write and wait until it is committed (or raise what went wrong)."""
        future: Future[Accepted] = Future()
        item = {"events": list(events), "orders": list(orders), "customers": list(customers)}
        if self._threads:
            self._writes.put((item, future))
            return future.result(timeout=timeout)
        return self._write([(item, future)])[0]

    def _write(self, batch: list[tuple[dict[str, Any], Future[Accepted]]]) -> list[Accepted]:
        """One transaction for a whole batch of requests; on failure each gets the error."""
        started = time.perf_counter()
        merged: dict[str, list[dict[str, Any]]] = {"events": [], "orders": [], "customers": []}
        for item, _ in batch:
            for key in merged:
                merged[key].extend(item[key])
        try:
            with self.write_lock:
                accepted = self.journal.write(**merged, now=self.clock())
        except Exception as exc:
            for _, future in batch:
                future.set_exception(exc)
            if isinstance(exc, KequnError):
                return []
            raise
        self.stats["written"] += len(accepted.new)
        self._time("write", started)
        self._mark(accepted.dirty, accepted.last_seq)
        # split the batch's answer back per request, by key
        results = []
        new, dup = set(accepted.new), set(accepted.duplicates)
        for item, future in batch:
            mine = Accepted(last_seq=accepted.last_seq)
            mine.erased = [k for k in accepted.erased if _owner(k, item)]
            for kind, rows in (("event", item["events"]), ("order", item["orders"])):
                id_field = f"{kind}_id"
                for row in rows:
                    key = f"{kind}:{row[id_field]}"
                    if key in new:
                        mine.new.append(key)
                        new.discard(key)
                    elif key in dup or key in accepted.duplicates:
                        mine.duplicates.append(key)
            mine.new.extend(f"customer:{row['customer_id']}" for row in item["customers"])
            future.set_result(mine)
            results.append(mine)
        return results

    def mark_changed(self, customer_ids: set[str], kind: str = "customer") -> None:
        """Have the evaluator look at customers changed outside the ingest path."""
        self._mark({cid: {(kind, "")} for cid in customer_ids}, self._dirty_seq)
        if not self._threads:
            self.process()

    def exclusive(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``func(ws, ...)`` on the evaluator's connection with the live path paused."""
        with self.lock:
            return func(self.ws, *args, **kwargs)

    def _mark(self, dirty: dict[str, set[tuple[str, str]]], seq: int) -> None:
        with self._dirty_lock:
            for cid, reasons in dirty.items():
                self._dirty.setdefault(cid, set()).update(reasons)
            self._dirty_seq = max(self._dirty_seq, seq)
        self._wake_eval.set()

    # --- evaluation ------------------------------------------------------------------------

    def process(self) -> list[Transition]:
        """Evaluate the customers touched since the last call; record and enqueue."""
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, {}
            seq = self._dirty_seq
        if not dirty:
            return []
        started = time.perf_counter()
        with self.lock:
            now = self.clock()
            self._update_tags(dirty, now)
            wanted = {cid: self.live.affected(reasons) for cid, reasons in dirty.items()}
            done = self._record(wanted, now, seq=seq)
        self._time("eval", started)
        return done

    def tick(self, now: datetime | None = None) -> list[Transition]:
        """Re-evaluate the customers whose time windows moved since the previous tick.

        Times are wall-clock times in the workspace zone, as stored. When the clocks go
        back (the end of daylight saving), the repeated hour is examined again from its
        start: re-evaluating is idempotent, and skipping it would delay exits by an hour.
        """
        with self.lock:
            now = now or self.clock()
            since = self._last_tick
            if now < since:
                self._last_tick = now
                self._save_last_tick(now)
                return []
            if now == since:
                return []
            due = self.live.due(since, now)
            transitions = self._record(due, now, last_tick=now)
            self._last_tick = now
            return transitions

    def refresh_scheduled(self, now: datetime | None = None) -> list[str]:
        """Run the scheduled full refreshes that are due (segments with a ``schedule``).

        The live path keeps members current between them; a refresh re-reads everything
        (scores included) and records a run, so the segment is never shown as stale.
        """
        from kequn.segments.refresh import due_refreshes, refresh
        from kequn.tags.values import due_tag_refreshes, refresh_tags

        with self.lock:
            now = now or self.clock()
            tags = due_tag_refreshes(self.ws, now)
            if tags:  # first: segments may read tags
                refresh_tags(self.ws, tags, now)
            names = due_refreshes(self.ws, now)
            if names:
                try:
                    refresh(self.ws, names, now)
                except KequnError as exc:  # e.g. the clock went back past the last run
                    log.warning("scheduled refresh of %s skipped: %s", ", ".join(names), exc)
                    return [f"tag:{t}" for t in tags]
            if names or tags:
                self.live.reload()
                self._load_live_tags()
            return [f"tag:{t}" for t in tags] + names

    def _record(
        self,
        wanted: dict[str, set[str]],
        at: datetime,
        *,
        seq: int | None = None,
        last_tick: datetime | None = None,
    ) -> list[Transition]:
        started = time.perf_counter()
        transitions = self.live.evaluate(wanted, at) if wanted else []
        self._time("evaluate", started)
        started = time.perf_counter()
        with self.ws.store.transaction():
            self.live.record(transitions)
            self._enqueue(transitions, at)
            if seq is not None:
                self.journal.set_processed(seq, self.ws)
            if last_tick is not None:
                self._save_last_tick(last_tick)
        self._time("commit", started)
        self.stats["evaluated"] += len(wanted)
        self.stats["transitions"] += len(transitions)
        if transitions:
            self._wake_send.set()
        return transitions

    def _load_live_tags(self) -> None:
        """Tags computed from events and orders (interest, behaviour score) stay live too."""
        from kequn.tags.catalog import stored_tags

        self.live_tags = [t.name for t in stored_tags(self.ws) if t.source in ("interest", "score")]

    def _update_tags(self, dirty: dict[str, set[tuple[str, str]]], now: datetime) -> None:
        """Recompute the live tags of customers with new events or orders, first: a segment
        reading ``tag.*`` then sees the new value (its customers are marked changed)."""
        if not self.live_tags:
            return
        from kequn.tags.values import refresh_tags

        moved = [c for c, reasons in dirty.items() if any(k != "customer" for k, _ in reasons)]
        if moved:
            refresh_tags(self.ws, self.live_tags, now, customers=moved)
            for cid in moved:
                dirty[cid].add(("customer", ""))

    def load_triggers(self) -> None:
        """Read the stored triggers (at start-up and after a change)."""
        from kequn.act.triggers import stored_triggers

        with self.lock:
            self.triggers = stored_triggers(self.ws)
        self._watched = {(t.segment, t.on) for t in self.triggers}

    def _enqueue(self, transitions: list[Transition], at: datetime) -> None:
        """Deliveries for the transitions a trigger watches (most have none: no query)."""
        from kequn.act import outbox

        watched = [t for t in transitions if (t.segment, t.kind) in self._watched]
        if watched:
            outbox.enqueue(self.ws, [_as_outbox(t) for t in watched], at, self.triggers)

    # --- deliveries -----------------------------------------------------------------------

    def dispatch(self, pool: ThreadPoolExecutor | None = None, limit: int = 200) -> int:
        """Send the deliveries that are due; network calls happen outside the lock."""
        from kequn.act import outbox

        started = time.perf_counter()
        with self.send_lock:
            now = self.clock()
            due = outbox.due(self.ws_send, now, limit=limit)
        if not due:
            return 0
        self._time("due", started)
        started = time.perf_counter()
        if pool is None:
            outcomes = [outbox.send(d) for d in due]
        else:
            outcomes = list(pool.map(outbox.send, due))
        self._time("send", started)
        started = time.perf_counter()
        with self.send_lock:
            now = self.clock()
            with self.ws_send.store.transaction():
                for delivery, outcome in zip(due, outcomes, strict=True):
                    outbox.record(self.ws_send, delivery, outcome, now)
        self._time("record", started)
        self.stats["sent"] += len(due)
        return len(due)

    def _time(self, step: str, started: float) -> None:
        """Count a step and its seconds (shown by /v1/status: where the time goes)."""
        self.timings.setdefault(step, [0, 0.0])
        self.timings[step][0] += 1
        self.timings[step][1] += time.perf_counter() - started

    # --- threads ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for target, name in (
            (self._writer_loop, "kequn-writer"),
            (self._eval_loop, "kequn-eval"),
            (self._send_loop, "kequn-send"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop the loops and close the extra connections (not the caller's workspace)."""
        self.stop()
        for other in (self.ws_write, self.ws_send, self.ws_read):
            other.close()

    def stop(self) -> None:
        self._stop.set()
        self._wake_eval.set()
        self._wake_send.set()
        self._writes.put(({}, Future()))  # unblock the writer
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []

    def _writer_loop(self) -> None:
        while not self._stop.is_set():
            item = self._writes.get()
            if self._stop.is_set():
                if item[0]:
                    item[1].set_exception(KequnError("the service is stopping; retry"))
                break
            batch = [item]
            deadline = self.commit_window
            with contextlib.suppress(queue.Empty):
                while len(batch) < 500:
                    batch.append(self._writes.get(timeout=deadline))
                    deadline = 0.0005
            try:
                self._write(batch)
            except Exception:
                log.exception("write failed")

    def _eval_loop(self) -> None:
        next_tick = next_refresh = 0.0
        while not self._stop.is_set():
            self._wake_eval.wait(timeout=self.tick_seconds)
            self._wake_eval.clear()
            if self._stop.is_set():
                break
            try:
                self.process()
                if time.monotonic() >= next_tick:
                    self.tick()
                    next_tick = time.monotonic() + self.tick_seconds
                if time.monotonic() >= next_refresh:
                    self.refresh_scheduled()
                    next_refresh = time.monotonic() + 10
            except Exception:
                log.exception("evaluation failed; will retry")
                time.sleep(0.5)

    def _send_loop(self) -> None:
        with ThreadPoolExecutor(self._senders, thread_name_prefix="kequn-sender") as pool:
            while not self._stop.is_set():
                self._wake_send.wait(timeout=0.5)
                self._wake_send.clear()
                if self._stop.is_set():
                    break
                try:
                    while self.dispatch(pool) and not self._stop.is_set():
                        pass
                except Exception:
                    log.exception("dispatch failed; will retry")


def _owner(key: str, item: dict[str, Any]) -> bool:
    kind, _, ident = key.partition(":")
    if kind == "customer":
        return any(key.startswith(f"customer:{r['customer_id']}:") for r in item["customers"])
    rows = item["events"] if kind == "event" else item["orders"]
    return any(str(r[f"{kind}_id"]) == ident for r in rows)


def _another(ws: Workspace) -> Workspace:
    """A second connection to the same database (DuckDB shares one instance per process)."""
    from kequn.workspace import open_workspace

    return open_workspace(ws.path)


def _as_outbox(t: Transition) -> Any:
    from kequn.act.outbox import Transition as OutboxTransition

    return OutboxTransition(t.segment, t.customer_id, t.kind, t.at)
