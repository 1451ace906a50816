"""Benchmark: kequn clustering of a million customers vs scikit-learn KMeans defaults.

    .venv/bin/python bench/cluster.py                  # 1,000,000 customers
    .venv/bin/python bench/cluster.py --customers 200000

Features are generated directly with NumPy from a known mixture of five customer types
(recency, orders, spend, average order value, tenure, three event counts; skewed like real
data), so the workspace's SQL is not part of this measure (see ``bench/rfm.py`` for that).
Each contender runs in its own fresh subprocess, which reports wall time and peak resident
memory (ru_maxrss), so one cannot inflate the other's memory:

* kequn — :class:`kequn.insight.CustomerKMeans` with ``k="auto"``: log1p of skewed columns,
  standardise, silhouette over k = 2..8 on a 20k sample, MiniBatchKMeans on all rows; then
  the explanation trees (depth 3, one per cluster, on a 100k sample) as
  :func:`kequn.insight.rule_for_cluster` builds them;
* sklearn — ``StandardScaler`` + ``KMeans(n_clusters=5)`` with its defaults (the true k
  given, so it does not even have to choose k).

Both report the adjusted Rand index against the known types. Goal: kequn under 60 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

TYPES = 5


def make_features(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A known mixture: (features in original units, true type per row)."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(TYPES, size=n, p=[0.35, 0.25, 0.2, 0.12, 0.08])
    # per type: recency, orders, aov, tenure, views, carts, coupons
    centres = np.array(
        [
            [300, 1.2, 120, 500, 0.2, 0.05, 0.0],
            [25, 4.0, 180, 300, 6.0, 2.0, 0.3],
            [120, 2.0, 600, 700, 1.0, 0.3, 0.1],
            [10, 12.0, 250, 900, 15.0, 6.0, 2.0],
            [60, 1.0, 80, 30, 3.0, 1.0, 1.5],
        ]
    )
    c = centres[truth]
    recency = rng.gamma(8.0, c[:, 0] / 8.0)
    orders = 1 + rng.poisson(c[:, 1])
    aov = rng.lognormal(np.log(c[:, 2]), 0.25)
    spend = orders * aov
    tenure = rng.gamma(10.0, c[:, 3] / 10.0) + recency
    events = rng.poisson(c[:, 4:7])
    x = np.column_stack([recency, orders, spend, aov, tenure, events]).astype("float64")
    return x, truth


def run_kequn(n: int) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from kequn.insight import CustomerKMeans
    from kequn.insight.explain import rule_for_cluster
    from kequn.insight.features import Feature

    x, truth = make_features(n)
    t0 = time.perf_counter()
    model = CustomerKMeans("auto").fit(x)
    t1 = time.perf_counter()
    names = ["recency", "orders", "spend", "aov", "tenure", "views", "carts", "coupons"]
    feats = [Feature(nm, nm, "never", False, False, nm, nm, "bench") for nm in names]
    rules = [rule_for_cluster(x, model.labels_, i, feats) for i in range(model.k_)]
    t2 = time.perf_counter()
    return {
        "k": model.k_,
        "method": model.method_,
        "curve": {str(k): round(v, 4) for k, v in model.silhouette_curve_.items()},
        "ari": adjusted_rand_score(truth, model.labels_),
        "fit_s": t1 - t0,
        "explain_s": t2 - t1,
        "wall_s": t2 - t0,
        "rules": rules,
    }


def run_sklearn(n: int) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from sklearn.preprocessing import StandardScaler

    x, truth = make_features(n)
    t0 = time.perf_counter()
    z = StandardScaler().fit_transform(x)
    labels = KMeans(n_clusters=TYPES).fit_predict(z)
    t1 = time.perf_counter()
    return {"k": TYPES, "ari": adjusted_rand_score(truth, labels), "wall_s": t1 - t0}


def child(which: str, n: int) -> None:
    result = run_kequn(n) if which == "kequn" else run_sklearn(n)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--child", choices=["kequn", "sklearn"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.customers)
        return
    print(f"{args.customers:,} customers, 8 features, {TYPES} known types")
    for which in ("kequn", "sklearn"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", which, "--customers", str(args.customers)],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        line = (
            f"{which:8s} wall {r['wall_s']:6.1f} s  peak RSS {r['peak_rss_mb']:7.0f} MB  "
            f"k={r['k']}  ARI {r['ari']:.3f}"
        )
        if which == "kequn":
            line += f"  (fit {r['fit_s']:.1f} s, rules {r['explain_s']:.1f} s, {r['method']})"
            print(line)
            print(f"         silhouette curve {r['curve']}")
        else:
            print(line)


if __name__ == "__main__":
    main()
