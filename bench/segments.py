"""Benchmark: 50 segments with kequn ``apply`` vs a straightforward pandas implementation.

    .venv/bin/python bench/segments.py                   # 1 M customers, 10 M orders, 50 M events
    .venv/bin/python bench/segments.py --scale 0.1       # a tenth of each

Data is generated with vectorised NumPy/Arrow into three Parquet files kept in ``--dir``
(``bench/out/segments``) and reused for the same size; generation is timed apart. Then each
contender runs in its own fresh subprocess, which reports its wall time and peak resident
memory (ru_maxrss):

* kequn load — append the Parquet files to a new workspace (DuckDB), batch by batch;
* kequn apply — ``kequn.segments.apply(ws, segments, as_of)``: check, compile and evaluate
  all 50 rules and write the membership history (one transaction), as ``kequn segment
  apply`` does;
* pandas — read the Parquet columns, extract the JSON properties the rules use, and
  evaluate the same 50 rules with boolean masks, ``groupby`` and ``merge_asof`` (for the
  sequences), one per rule, as a pandas user would write them.

The 50 segments are ten templates of the language's constructs with five settings each:
customer attributes, counts and sums over order windows (days and calendar months),
days since the last order, event counts filtered by nested JSON properties, distinct counts,
"did X but not Y", sequences with and without ``no``, and a mix of an attribute and an
average. The bench checks that both contenders find the same members for every segment.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

AS_OF = date(2024, 12, 31)
END = datetime(2025, 1, 1)  # the end of the as_of day (exclusive)
ORDER_START = datetime(2023, 1, 1)
EVENT_START = datetime(2024, 1, 1)
CHUNK = 5_000_000
CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都", "南京", "武汉", "西安", "重庆"]
CHANNELS = ["app", "web", "store", "wechat"]
CATEGORIES = ["美妆", "服装", "数码", "食品", "家居"]
EVENT_TYPES = ["page_view", "product_view", "add_to_cart", "login"]
EVENT_P = [0.5, 0.3, 0.12, 0.08]


# --- the 50 segments ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    name: str
    template: str
    params: tuple
    rule: str


def specs() -> list[Spec]:
    out: list[Spec] = []

    def add(template: str, params: tuple, rule: str) -> None:
        out.append(Spec(f"{template}_{len(out) % 5}", template, params, rule))

    for cities in (CITIES[:1], CITIES[:2], CITIES[:4], CITIES[4:7], CITIES[7:]):
        add("city", (cities,), "city in (" + ", ".join(f"'{c}'" for c in cities) + ")")
    for days, k in ((30, 1), (60, 1), (90, 2), (180, 3), (365, 4)):
        add("count", (days, k), f"count(orders, last {days} days) >= {k}")
    for months, total in ((3, 500), (6, 1000), (12, 2000), (12, 5000), (24, 3000)):
        add("sum", (months, total), f"sum(orders.amount, last {months} months) > {total}")
    for days in (30, 60, 90, 180, 365):
        add("dormant", (days,), f"days_since_last_order >= {days}")
    for cat, days in zip(CATEGORIES, (7, 14, 30, 30, 60), strict=True):
        add(
            "viewed",
            (cat, days),
            f"count(events where type = 'product_view' and properties.category = '{cat}', "
            f"last {days} days) > 0",
        )
    for days, k in ((7, 3), (14, 5), (30, 5), (30, 10), (90, 20)):
        add(
            "browsed",
            (days, k),
            f"count_distinct(events.properties.sku where type = 'product_view', "
            f"last {days} days) >= {k}",
        )
    for days in (3, 7, 14, 30, 60):
        add(
            "cart_no_order",
            (days,),
            f"count(events where type = 'add_to_cart', last {days} days) > 0 "
            f"and count(orders, last {days} days) = 0",
        )
    for gap, days in ((1, 7), (1, 30), (2, 14), (3, 30), (7, 90)):
        add(
            "abandoned",
            (gap, days),
            f"count(events where type = 'add_to_cart' then no orders within {gap} days, "
            f"last {days} days) > 0",
        )
    for hours, days in ((1, 30), (6, 30), (24, 7), (24, 30), (72, 90)):
        add(
            "converted",
            (hours, days),
            f"count(events where type = 'add_to_cart' then orders within {hours} hours, "
            f"last {days} days) > 0",
        )
    for channel, avg in zip(CHANNELS + ["app"], (300, 200, 150, 100, 500), strict=True):
        add(
            "channel_aov",
            (channel, avg),
            f"channel = '{channel}' and avg(orders.amount, last 12 months) > {avg}",
        )
    return out


# --- data -------------------------------------------------------------------------------------


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    text = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(pa.scalar(prefix), text, "")


def _pick(rng: np.random.Generator, values: list[str], n: int, p=None) -> pa.Array:
    return pa.array(np.asarray(values, dtype=object)[rng.choice(len(values), n, p=p)], pa.string())


def _stamps(rng: np.random.Generator, start: datetime, n: int) -> np.ndarray:
    seconds = rng.integers(0, int((END - start).total_seconds()), n)
    return np.datetime64(start, "us") + seconds.astype("timedelta64[s]")


def generate(folder: Path, customers: int, orders: int, events: int, seed: int = 11) -> None:
    """customers.parquet, orders.parquet, events.parquet; activity per customer is skewed
    (exponential weights: many light customers, a few with ten times the mean)."""
    rng = np.random.default_rng(seed)
    tmp = folder / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    cities = _pick(rng, CITIES, customers)
    cities = pc.if_else(
        pa.array(rng.random(customers) < 0.05), pa.scalar(None, pa.string()), cities
    )
    pq.write_table(
        pa.table(
            {
                "customer_id": _ids("C", np.arange(customers), 8),
                "city": cities,
                "channel": _pick(rng, CHANNELS, customers),
                "gender": _pick(rng, ["男", "女"], customers),
                "created_at": pa.array(_stamps(rng, ORDER_START, customers), pa.timestamp("us")),
                "attributes": pa.array(["{}"] * customers, pa.string()),
            }
        ),
        tmp / "customers.parquet",
    )
    weights = np.cumsum(rng.exponential(1.0, customers))

    def owners(n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(weights, rng.random(n) * weights[-1]), customers - 1)

    with pq.ParquetWriter(tmp / "orders.parquet", _ORDER_SCHEMA, compression="zstd") as w:
        for start in range(0, orders, CHUNK):
            n = min(CHUNK, orders - start)
            # whole yuan: sums are exact in float64, so a total of exactly 3000 compares the
            # same in every engine whatever order it adds in
            amount = np.maximum(np.round(rng.lognormal(4.8, 0.9, n)), 1.0)
            is_return = rng.random(n) < 0.03
            table = pa.table(
                {
                    "order_id": _ids("O", np.arange(start, start + n), 10),
                    "customer_id": _ids("C", owners(n), 8),
                    "ordered_at": pa.array(_stamps(rng, ORDER_START, n), pa.timestamp("us")),
                    "amount": np.where(is_return, -amount, amount),
                    "is_return": is_return,
                    "channel": _pick(rng, CHANNELS, n),
                },
                schema=_ORDER_SCHEMA,
            )
            w.write_table(table, row_group_size=1_000_000)
    with pq.ParquetWriter(tmp / "events.parquet", _EVENT_SCHEMA, compression="zstd") as w:
        for start in range(0, events, CHUNK):
            n = min(CHUNK, events - start)
            sku = pc.cast(pa.array(rng.integers(0, 2000, n)), pa.string())
            price = pc.cast(pa.array(rng.integers(10, 2000, n)), pa.string())
            props = pc.binary_join_element_wise(
                '{"category":"',
                _pick(rng, CATEGORIES, n),
                '","sku":"S',
                sku,
                '","price":',
                price,
                "}",
                "",
            )
            table = pa.table(
                {
                    "event_id": _ids("E", np.arange(start, start + n), 10),
                    "customer_id": _ids("C", owners(n), 8),
                    "occurred_at": pa.array(_stamps(rng, EVENT_START, n), pa.timestamp("us")),
                    "type": _pick(rng, EVENT_TYPES, n, EVENT_P),
                    "properties": props,
                },
                schema=_EVENT_SCHEMA,
            )
            w.write_table(table, row_group_size=1_000_000)
    for name in ("customers", "orders", "events"):
        (tmp / f"{name}.parquet").replace(folder / f"{name}.parquet")
    tmp.rmdir()


_ORDER_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("customer_id", pa.string()),
        ("ordered_at", pa.timestamp("us")),
        ("amount", pa.float64()),
        ("is_return", pa.bool_()),
        ("channel", pa.string()),
    ]
)
_EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("customer_id", pa.string()),
        ("occurred_at", pa.timestamp("us")),
        ("type", pa.string()),
        ("properties", pa.string()),
    ]
)


# --- contenders (each runs in its own subprocess) ---------------------------------------------


def _digest(members: dict[str, np.ndarray]) -> dict:
    """Per segment: size and an order-independent hash of the member ids."""
    import pandas as pd

    out = {}
    for name, ids in sorted(members.items()):
        h = pd.util.hash_array(np.asarray(ids, dtype=object))
        out[name] = [len(ids), int(np.bitwise_xor.reduce(h)) if len(h) else 0]
    return out


def run_kequn_load(folder: Path, workdir: Path) -> None:
    import kequn
    from kequn.store import TABLES

    if workdir.exists():
        shutil.rmtree(workdir)
    ws = kequn.init_workspace(workdir)
    for name in ("customers", "orders", "events"):
        schema = TABLES[name]
        for batch in pq.ParquetFile(folder / f"{name}.parquet").iter_batches(2_000_000):
            table = pa.Table.from_batches([batch])
            for col in schema.names:
                if col not in table.column_names:
                    table = table.append_column(col, pa.nulls(len(table), schema[col].to_pyarrow()))
            ws.store.append(name, table)
    ws.con.raw_sql("CHECKPOINT")
    ws.close()


def run_kequn_apply(workdir: Path) -> dict:
    import kequn
    from kequn.segments import Segment, apply

    ws = kequn.open_workspace(workdir)
    segs = [Segment(name=s.name, rule=s.rule) for s in specs()]
    apply(ws, segs, AS_OF)
    seconds = time.perf_counter()
    m = ws.table("memberships")
    rows = m.filter(m.exited_at.isnull()).select("segment", "customer_id").to_pyarrow()
    ws.close()
    frame = rows.to_pandas()
    members = {s.name: np.array([], dtype=object) for s in specs()}
    for name, group in frame.groupby("segment"):
        members[str(name)] = group["customer_id"].to_numpy(dtype=object)
    return {"members": members, "done_at": seconds}


def run_pandas(folder: Path) -> dict:
    import pandas as pd

    end = pd.Timestamp(END)
    cust = pd.read_parquet(folder / "customers.parquet", columns=["customer_id", "city", "channel"])
    orders = pd.read_parquet(
        folder / "orders.parquet", columns=["customer_id", "ordered_at", "amount", "is_return"]
    )
    events = pd.read_parquet(
        folder / "events.parquet", columns=["customer_id", "occurred_at", "type", "properties"]
    )
    orders = orders[orders["ordered_at"] < end]
    buys = orders[~orders["is_return"].fillna(False)]
    events = events[events["occurred_at"] < end]
    views = events[events["type"] == "product_view"].copy()
    views["category"] = views["properties"].str.extract(r'"category":"([^"]*)"')[0]
    views["sku"] = views["properties"].str.extract(r'"sku":"([^"]*)"')[0]
    carts = events.loc[events["type"] == "add_to_cart", ["customer_id", "occurred_at"]]
    carts = carts.sort_values("occurred_at")
    buys_sorted = buys[["customer_id", "ordered_at"]].sort_values("ordered_at")
    ids = cust["customer_id"]

    def since(days: int) -> pd.Timestamp:
        return end - pd.Timedelta(days=days)

    def has(index) -> pd.Series:
        return ids.isin(index)

    def per_customer(frame: pd.DataFrame, start: pd.Timestamp, column: str) -> pd.Series:
        return frame[frame[column] >= start].groupby("customer_id").size()

    def followed(gap: pd.Timedelta, days: int) -> pd.DataFrame:
        """Each cart in the window with the first purchase at or after it (merge_asof)."""
        window = carts[carts["occurred_at"] >= since(days)]
        joined = pd.merge_asof(
            window,
            buys_sorted.rename(columns={"ordered_at": "next_order"}),
            left_on="occurred_at",
            right_on="next_order",
            by="customer_id",
            direction="forward",
        )
        joined["hit"] = joined["next_order"].notna() & (
            joined["next_order"] <= joined["occurred_at"] + gap
        )
        return joined

    out: dict[str, np.ndarray] = {}
    for spec in specs():
        t, p = spec.template, spec.params
        if t == "city":
            mask = cust["city"].isin(p[0])
        elif t == "count":
            n = per_customer(buys, since(p[0]), "ordered_at")
            mask = has(n[n >= p[1]].index)
        elif t == "sum":
            start = end - pd.DateOffset(months=p[0])
            s = buys[buys["ordered_at"] >= start].groupby("customer_id")["amount"].sum()
            mask = has(s[s > p[1]].index)
        elif t == "dormant":
            last = buys.groupby("customer_id")["ordered_at"].max()
            days = (pd.Timestamp(AS_OF) - last.dt.normalize()).dt.days
            mask = has(days[days >= p[0]].index)
        elif t == "viewed":
            v = views[(views["category"] == p[0]) & (views["occurred_at"] >= since(p[1]))]
            mask = has(v["customer_id"].unique())
        elif t == "browsed":
            v = views[views["occurred_at"] >= since(p[0])]
            n = v.groupby("customer_id")["sku"].nunique()
            mask = has(n[n >= p[1]].index)
        elif t == "cart_no_order":
            c = carts[carts["occurred_at"] >= since(p[0])]["customer_id"].unique()
            b = buys[buys["ordered_at"] >= since(p[0])]["customer_id"].unique()
            mask = has(c) & ~has(b)
        elif t == "abandoned":
            gap = pd.Timedelta(days=p[0])
            j = followed(gap, p[1])
            j = j[~j["hit"] & (j["occurred_at"] + gap < end)]
            mask = has(j["customer_id"].unique())
        elif t == "converted":
            j = followed(pd.Timedelta(hours=p[0]), p[1])
            mask = has(j.loc[j["hit"], "customer_id"].unique())
        elif t == "channel_aov":
            start = end - pd.DateOffset(months=12)
            a = buys[buys["ordered_at"] >= start].groupby("customer_id")["amount"].mean()
            mask = (cust["channel"] == p[0]) & has(a[a > p[1]].index)
        else:
            raise ValueError(t)
        out[spec.name] = ids[mask.to_numpy()].to_numpy(dtype=object)
    return {"members": out, "done_at": time.perf_counter()}


def child(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    if args.child.startswith("kequn"):
        import kequn.segments  # noqa: F401
    else:
        import pandas  # noqa: F401
    imported = time.perf_counter()
    folder, work = Path(args.data), Path(args.workdir)
    if args.child == "kequn-load":
        result = None
        run_kequn_load(folder, work)
        done = time.perf_counter()
    elif args.child == "kequn-apply":
        result = run_kequn_apply(work)
        done = result["done_at"]
    else:
        result = run_pandas(folder)
        done = result["done_at"]
    # time and memory are read before the results are compared: the check is not the work
    report = {
        "seconds": done - imported,
        "import_seconds": imported - start,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if result is not None:
        report["segments"] = _digest(result["members"])
    print(json.dumps(report))


# --- driver -----------------------------------------------------------------------------------


def run_child(name: str, data: Path, workdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--data", str(data)]
    cmd += ["--workdir", str(workdir)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:] if done.stderr else ["failed"]
        return {"error": " | ".join(tail)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full size")
    parser.add_argument("--customers", type=int, help="default: 1,000,000 x scale")
    parser.add_argument("--orders", type=int, help="default: 10,000,000 x scale")
    parser.add_argument("--events", type=int, help="default: 50,000,000 x scale")
    parser.add_argument("--dir", default="bench/out/segments", help="where data is kept")
    parser.add_argument("--only", default="kequn,pandas", help="contenders, comma-separated")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    customers = args.customers or int(1_000_000 * args.scale)
    orders = args.orders or int(10_000_000 * args.scale)
    events = args.events or int(50_000_000 * args.scale)
    data = Path(args.dir) / f"c{customers}-o{orders}-e{events}"
    if not (data / "events.parquet").exists():
        t0 = time.perf_counter()
        generate(data, customers, orders, events)
        print(f"generated the data in {time.perf_counter() - t0:.1f} s -> {data}", flush=True)
    size = sum((data / f"{n}.parquet").stat().st_size for n in ("customers", "orders", "events"))
    print(
        f"{customers:,} customers, {orders:,} orders, {events:,} events "
        f"(Parquet {size / 2**20:,.0f} MiB), {len(specs())} segments, {os.cpu_count()} CPUs, "
        f"as_of {AS_OF}",
        flush=True,
    )
    workdir = data / "workspace"
    wanted = args.only.split(",")
    names = (["kequn-load", "kequn-apply"] if "kequn" in wanted else []) + (
        ["pandas"] if "pandas" in wanted else []
    )
    results = {}
    for name in names:
        results[name] = res = run_child(name, data, workdir)
        if "error" in res:
            print(f"{name:<12} FAILED: {res['error']}", flush=True)
        else:
            print(
                f"{name:<12} {res['seconds']:7.2f} s  peak {res['peak_mib']:7,.0f} MiB"
                f"  (+ {res['import_seconds']:.2f} s import)",
                flush=True,
            )
    k, p = results.get("kequn-apply", {}), results.get("pandas", {})
    if "segments" in k and "segments" in p:
        differ = [n for n in k["segments"] if k["segments"][n] != p["segments"].get(n)]
        if differ:
            print(f"RESULTS DIFFER in {len(differ)} segments: {', '.join(differ)}")
            for n in differ[:5]:
                print(f"  {n}: kequn {k['segments'][n][0]:,}  pandas {p['segments'][n][0]:,}")
        else:
            print(f"results agree: the same members in all {len(k['segments'])} segments")
        print(
            f"kequn apply vs pandas: {p['seconds'] / k['seconds']:.1f}x faster, "
            f"{k['peak_mib'] / p['peak_mib']:.0%} of its peak memory"
        )
    if "segments" in k:
        sizes = {n: v[0] for n, v in k["segments"].items()}
        print("segment sizes: " + ", ".join(f"{n} {s:,}" for n, s in sizes.items()))


if __name__ == "__main__":
    main()
