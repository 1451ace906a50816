"""Benchmark: ``kequn serve`` under load on loopback — events/s, event-to-webhook latency, faults.

    .venv/bin/python bench/serve.py                       # 30 s of load, 50 live segments
    .venv/bin/python bench/serve.py --fault               # plus kill -9 and a receiver outage

Set-up: the data of bench/segments.py at a small scale (``--customers``; orders ×10,
events ×50) in a fresh workspace, its 50 segments plus one ``probe`` segment applied, and a
webhook trigger on entering ``probe`` that points at a real receiver in this process
(``http.server`` on 127.0.0.1, checking each HMAC signature).

Load: ``--clients`` threads post batches of ``--batch`` events (types and customers drawn like
the data's) as fast as the server answers, for ``--seconds``. Meanwhile a probe posts one
``probe`` event for a fresh customer every 100 ms and the receiver notes when the webhook
for that customer arrives: event-to-webhook latency, p50 and p99.

Baseline, in the same run: the time to re-evaluate all 50 segments in batch (``kequn segment
apply``), which is the latency floor of a system that refreshes segments by recomputing them.

``--fault``: (1) kill -9 the server during load, restart it, let the producers retry what was
not acknowledged; check that every acknowledged event is stored exactly once and that every
probe's webhook arrived at least once, each with one idempotency key. (2) Stop the receiver
for ``--down`` seconds during probes, start it again, and wait until every delivery arrives.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from segments import generate, run_kequn_load, specs  # noqa: E402

SECRET = "bench-secret"
TYPES = ["product_view", "product_view", "product_view", "add_to_cart", "page_view", "search"]


class Receiver:
    """A webhook receiver: records (customer, arrival time, idempotency key) per request."""

    def __init__(self, port: int = 0) -> None:
        self.hits: list[tuple[str, float, str]] = []
        self.bad_signatures = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sent = self.headers.get("X-Kequn-Signature", "")
                want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(sent, want):
                    outer.bad_signatures += 1
                payload = json.loads(body)
                outer.hits.append(
                    (payload["customer_id"], time.time(), self.headers.get("Idempotency-Key"))
                )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Server:
    def __init__(self, workspace: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "kequn", "serve", "--port", str(port)]
        cmd += ["--log-level", "warning", "-w", str(workspace)]
        self.proc = subprocess.Popen(cmd, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v1/status", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("kequn serve did not start")

    def status(self) -> dict:
        return httpx.get(self.url + "/v1/status", timeout=10).json()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(args: argparse.Namespace, work: Path, receiver: Receiver) -> tuple[Path, float]:
    import kequn
    from kequn.act.triggers import Trigger, apply_triggers
    from kequn.segments import Segment, apply

    data = work / "data"
    generate(data, args.customers, args.customers * 10, args.customers * 50)
    ws_path = work / "ws"
    run_kequn_load(data, ws_path)
    ws = kequn.open_workspace(ws_path)
    segs = [Segment(name=s.name, rule=s.rule) for s in specs()]
    segs.append(Segment("probe", "count(events where type = 'probe', last 1 days) >= 1"))
    segs.append(Segment("ping", "count(events where type = 'ping', last 1 days) >= 1"))
    t0 = time.perf_counter()
    apply(ws, segs)
    batch_seconds = time.perf_counter() - t0
    apply_triggers(
        ws,
        [
            Trigger(
                "probe-hook",
                "probe",
                "enter",
                "webhook",
                {"url": f"http://127.0.0.1:{receiver.port}/hook", "secret": SECRET},
            )
        ],
    )
    ws.close()
    return ws_path, batch_seconds


def load(
    url: str,
    args: argparse.Namespace,
    stop: threading.Event,
    acked: list[int],
    failed: list[list[dict]],
    seed: int,
) -> None:
    rng = random.Random(seed)
    n = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            batch = [
                {
                    "event_id": f"L{seed}-{n}-{i}",
                    "customer_id": f"C{rng.randrange(args.customers):08d}",
                    "type": rng.choice(TYPES),
                    "properties": {"sku": f"S{rng.randrange(500)}", "category": "phones"},
                }
                for i in range(args.batch)
            ]
            n += 1
            try:
                r = client.post("/v1/events", json=batch)
                if r.status_code == 200:
                    acked.append(len(batch))
                    continue
            except httpx.HTTPError:
                pass
            failed.append(batch)
            time.sleep(0.05)


def probe(url: str, stop: threading.Event, sent: dict[str, float], prefix: str) -> None:
    i = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            cid = f"{prefix}{i}"
            event = {"event_id": f"{cid}-e", "customer_id": cid, "type": "probe"}
            t = time.time()
            try:
                if client.post("/v1/events", json=event).status_code == 200:
                    sent[cid] = t
            except httpx.HTTPError:
                pass
            i += 1
            time.sleep(0.1)


def latency(sent: dict[str, float], receiver: Receiver) -> tuple[float, float, int]:
    first: dict[str, float] = {}
    for cid, at, _ in receiver.hits:
        first.setdefault(cid, at)
    lat = [first[c] - t for c, t in sent.items() if c in first]
    if not lat:
        return float("nan"), float("nan"), 0
    arr = np.array(lat) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), len(lat)


def run_load(url: str, args: argparse.Namespace, receiver: Receiver, seconds: float, tag: str):
    stop = threading.Event()
    acked: list[int] = []
    failed: list[list[dict]] = []
    sent: dict[str, float] = {}
    threads = [
        threading.Thread(target=load, args=(url, args, stop, acked, failed, k))
        for k in range(args.clients)
    ]
    threads.append(threading.Thread(target=probe, args=(url, stop, sent, f"P{tag}-")))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(acked) / (time.perf_counter() - t0), sent, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--fault", action="store_true")
    parser.add_argument("--no-exits", action="store_true", help="skip the exit-delay run")
    parser.add_argument("--down", type=float, default=60, help="receiver outage, seconds")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kequn-bench-serve-"))
    receiver = Receiver()
    try:
        t0 = time.perf_counter()
        ws_path, batch_seconds = setup(args, work, receiver)
        print(
            f"{args.customers:,} customers, {args.customers * 10:,} orders, "
            f"{args.customers * 50:,} events, {len(specs()) + 1} segments; set-up "
            f"{time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPUs, "
            f"load avg {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        print(f"batch re-evaluation of all segments (kequn segment apply): {batch_seconds:.2f} s")
        port = free_port()
        server = Server(ws_path, port)
        rate, sent, _ = run_load(server.url, args, receiver, args.seconds, "a")
        time.sleep(3)
        status = server.status()
        steps = ", ".join(
            f"{k} {v['count']}x {1000 * v['seconds'] / max(v['count'], 1):.0f} ms"
            for k, v in status["timings"].items()
        )
        print(f"server steps (count x mean): {steps}")
        p50, p99, n = latency(sent, receiver)
        print(
            f"sustained {rate:,.0f} events/s accepted ({args.clients} clients x batches of "
            f"{args.batch}); event-to-webhook p50 {p50:.0f} ms, p99 {p99:.0f} ms over {n} "
            f"probes ({len(sent)} sent); bad signatures {receiver.bad_signatures}",
            flush=True,
        )
        if not args.no_exits:
            exit_delays(args, server, receiver, ws_path)
            server = Server(ws_path, port)
        if args.fault:
            fault(args, server, receiver, ws_path, port)
        else:
            server.stop()
    finally:
        receiver.stop()
        shutil.rmtree(work, ignore_errors=True)


def exit_delays(args: argparse.Namespace, server: Server, receiver: Receiver, ws_path: Path):
    """Events dated so that "last 1 days" stops holding at known instants in the next
    minute, under background load: the delay from each flip to its recorded exit."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    import kequn

    with kequn.open_workspace(ws_path) as ws:
        zone = ZoneInfo(ws.config.timezone)
    now = datetime.now(zone).replace(tzinfo=None, microsecond=0)
    flips = {f"X{i}": now + timedelta(seconds=15 + i * 0.25) for i in range(200)}
    events = [
        {
            "event_id": f"{cid}-ping",
            "customer_id": cid,
            "type": "ping",
            "occurred_at": (at - timedelta(days=1)).isoformat(),
        }
        for cid, at in flips.items()
    ]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/v1/events", json=events).status_code == 200
    stop = threading.Event()
    acked: list[int] = []
    loaders = [
        threading.Thread(target=load, args=(server.url, args, stop, acked, [], 50 + k))
        for k in range(2)
    ]
    for t in loaders:
        t.start()
    time.sleep(15 + 200 * 0.25 + 10)
    stop.set()
    for t in loaders:
        t.join()
    server.stop()
    with kequn.open_workspace(ws_path) as ws:
        m = ws.table("memberships")
        rows = m.filter((m.segment == "ping") & m.exited_at.notnull()).to_pyarrow().to_pylist()
    delays = [(r["exited_at"] - flips[r["customer_id"]]).total_seconds() for r in rows]
    early = sum(d < 0 for d in delays)
    arr = np.array(delays) if delays else np.array([np.nan])
    print(
        f"exit at the flip (last order + window), under {sum(acked) / 75:,.0f} events/s of "
        f"other load: {len(delays)}/{len(flips)} exits recorded, delay p50 "
        f"{np.percentile(arr, 50):.2f} s, p99 {np.percentile(arr, 99):.2f} s, max "
        f"{arr.max():.2f} s, early {early}",
        flush=True,
    )


def fault(
    args: argparse.Namespace, server: Server, receiver: Receiver, ws_path: Path, port: int
) -> None:
    import kequn

    # (1) kill -9 under load
    stop = threading.Event()
    acked: list[int] = []
    failed: list[list[dict]] = []
    sent: dict[str, float] = {}
    threads = [
        threading.Thread(target=load, args=(server.url, args, stop, acked, failed, 100 + k))
        for k in range(args.clients)
    ]
    threads.append(threading.Thread(target=probe, args=(server.url, stop, sent, "Pk-")))
    for t in threads:
        t.start()
    time.sleep(5)
    server.kill()
    killed_at = time.time()
    stop.set()
    for t in threads:
        t.join()
    server = Server(ws_path, port)
    print(
        f"kill -9 after {sum(acked):,} acknowledged events; restarted in "
        f"{time.time() - killed_at:.1f} s",
        flush=True,
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for batch in failed:  # the producers retry what they could not confirm
            client.post("/v1/events", json=batch)
        for _ in range(600):
            s = client.get("/v1/status").json()
            if s["processed_seq"] == s["accepted_seq"]:
                break
            time.sleep(0.1)
    time.sleep(5)
    missing = [c for c in sent if c not in {h[0] for h in receiver.hits}]
    keys: dict[str, set[str]] = {}
    for cid, _, key in receiver.hits:
        keys.setdefault(cid, set()).add(key)
    print(
        f"probes acknowledged before the kill: {len(sent)}, webhooks missing: {len(missing)}, "
        f"customers with more than one idempotency key: "
        f"{sum(len(k) > 1 for k in keys.values())}",
        flush=True,
    )
    # (2) receiver down
    receiver.stop()
    stop = threading.Event()
    sent2: dict[str, float] = {}
    prober = threading.Thread(target=probe, args=(server.url, stop, sent2, "Pd-"))
    prober.start()
    time.sleep(args.down)
    stop.set()
    prober.join()
    back = Receiver(receiver.port)
    back_at = time.time()
    deadline = time.time() + 600
    while time.time() < deadline:
        got = {h[0] for h in back.hits}
        if all(c in got for c in sent2):
            break
        time.sleep(1)
    got = {h[0] for h in back.hits}
    print(
        f"receiver down {args.down:.0f} s: {len(sent2)} probes; delivered after it returned: "
        f"{sum(c in got for c in sent2)} within {time.time() - back_at:.0f} s",
        flush=True,
    )
    server.stop()
    back.stop()
    with kequn.open_workspace(ws_path) as ws:
        total, distinct = ws.store.duck.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events WHERE import_id = 'api'"
        ).fetchall()[0]
        print(f"api events stored: {total:,}, distinct ids: {distinct:,} (must be equal)")


if __name__ == "__main__":
    main()
