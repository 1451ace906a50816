"""K-means on customer features, with k chosen by silhouette on a sample.

:class:`CustomerKMeans` follows scikit-learn's conventions (settings in ``__init__``,
``fit`` returns ``self``, learned state ends in ``_``) and works on a NumPy matrix in
original units, so the benchmark and the workspace workflow run the same code:

1. skewed columns (non-negative, skewness > 1, or named by the caller) go through ``log1p``;
   every column is then standardised (a constant column stays 0);
2. with ``k="auto"``, k = 2..8 are each fitted on a random sample and scored by the
   silhouette on a smaller sample (the silhouette is quadratic in rows, so never on all);
   the k with the highest silhouette wins and the whole curve is kept (``silhouette_curve_``);
3. the final model is fitted on every row: ``KMeans`` up to ``minibatch_threshold`` rows,
   ``MiniBatchKMeans`` above it (a million rows in seconds);
4. clusters are numbered by size, largest first, so numbers are stable and readable;
   ``centroids_`` are the centres mapped back to original units (``expm1`` of the log ones).

Everything is deterministic for a ``random_state``.

:class:`CustomerKPrototypes` does the same for customers described by numbers **and**
categories (``attr:city``): K-prototypes (Huang 1997), written here in vectorised NumPy.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import silhouette_score

from kequn.errors import InputError, NotFittedError

__all__ = ["CustomerKMeans", "CustomerKPrototypes", "skewed_columns"]

K_RANGE = (2, 8)


def skewed_columns(values: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """Columns worth a log: non-negative with a sample skewness above ``threshold``."""
    mean = values.mean(axis=0)
    centred = values - mean
    var = (centred**2).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(var > 0, (centred**3).mean(axis=0) / np.power(var, 1.5), 0.0)
    return (values.min(axis=0) >= 0) & (skew > threshold)


def _k_candidates(k: int | str, k_range: tuple[int, int], n_distinct: int) -> list[int]:
    """The k to try: the one given (checked), or the range capped by the distinct rows."""
    if k != "auto":
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
            raise InputError(f"k = {k!r}: use 'auto' or a whole number of at least 2")
        if k > n_distinct:
            raise InputError(f"k = {k}: only {n_distinct} distinct customers' features to cluster")
        return [int(k)]
    low, high = k_range
    ks = list(range(low, min(high, n_distinct - 1) + 1))
    if not ks:
        raise InputError(
            f"too few distinct customers ({n_distinct}) to choose k from {low}..{high}"
        )
    return ks


class CustomerKMeans:
    """K-means with standardisation, log for skewed columns and k chosen by silhouette.

    ``k``: ``"auto"`` or a whole number ≥ 2. ``log``: a boolean mask of columns to log, or
    ``"auto"`` (:func:`skewed_columns`). ``sample_size`` rows fit each candidate k;
    ``silhouette_size`` rows score it.
    """

    def __init__(
        self,
        k: int | str = "auto",
        *,
        k_range: tuple[int, int] = K_RANGE,
        log: np.ndarray | str = "auto",
        sample_size: int = 20_000,
        silhouette_size: int = 4_000,
        minibatch_threshold: int = 2_000_000,
        n_init: int = 3,
        random_state: int = 0,
    ) -> None:
        self.k = k
        self.k_range = k_range
        self.log = log
        self.sample_size = sample_size
        self.silhouette_size = silhouette_size
        self.minibatch_threshold = minibatch_threshold
        self.n_init = n_init
        self.random_state = random_state

    # --- scaling --------------------------------------------------------------------------

    def _scale(self, values: np.ndarray) -> np.ndarray:
        z = values.astype("float64", copy=True)
        if self.log_.any():
            z[:, self.log_] = np.log1p(np.clip(z[:, self.log_], 0, None))
        z -= self.mean_
        z /= self.scale_
        return z

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Original units → the standardised space the clusters live in."""
        self._check_fitted()
        return self._scale(self._validate(values))

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        """Standardised points → original units."""
        self._check_fitted()
        return self._unscale(z)

    def _unscale(self, z: np.ndarray) -> np.ndarray:
        values = z * self.scale_ + self.mean_
        values[:, self.log_] = np.expm1(values[:, self.log_])
        return values

    # --- fitting --------------------------------------------------------------------------

    def _validate(self, values: object) -> np.ndarray:
        arr = np.asarray(values, dtype="float64")
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise InputError(f"values: expected a 2-D matrix of features, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError("values: contains NaN or infinite numbers; fill them first")
        return arr

    def _k_candidates(self, n_distinct: int) -> list[int]:
        return _k_candidates(self.k, self.k_range, n_distinct)

    def fit(self, values: object) -> CustomerKMeans:
        """Standardise, choose k (or use the one given), fit on every row."""
        x = self._validate(values)
        n = x.shape[0]
        rng = np.random.default_rng(self.random_state)
        if isinstance(self.log, str):
            if self.log != "auto":
                raise InputError(f"log = {self.log!r}: use 'auto' or a boolean mask")
            self.log_ = skewed_columns(x)
        else:
            self.log_ = np.asarray(self.log, dtype=bool)
            if self.log_.shape != (x.shape[1],):
                raise InputError(f"log: expected {x.shape[1]} flags, got {self.log_.shape}")
        z = x.copy()
        if self.log_.any():
            z[:, self.log_] = np.log1p(np.clip(z[:, self.log_], 0, None))
        self.mean_ = z.mean(axis=0)
        std = z.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        z -= self.mean_
        z /= self.scale_

        sample = z if n <= self.sample_size else z[rng.choice(n, self.sample_size, replace=False)]
        distinct = len(np.unique(sample, axis=0))
        ks = self._k_candidates(distinct)
        score_rows = (
            sample
            if len(sample) <= self.silhouette_size
            else sample[rng.choice(len(sample), self.silhouette_size, replace=False)]
        )
        self.silhouette_curve_: dict[int, float] = {}
        for k in ks:
            model = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.random_state).fit(
                sample
            )
            labels = model.predict(score_rows)
            if len(np.unique(labels)) < 2:
                self.silhouette_curve_[k] = -1.0
                continue
            self.silhouette_curve_[k] = float(silhouette_score(score_rows, labels))
        self.k_ = max(self.silhouette_curve_, key=lambda k: (self.silhouette_curve_[k], -k))
        self.silhouette_ = self.silhouette_curve_[self.k_]

        if n > self.minibatch_threshold:
            final = MiniBatchKMeans(
                n_clusters=self.k_,
                n_init=self.n_init,
                batch_size=8192,
                random_state=self.random_state,
            ).fit(z)
            self.method_ = "minibatch_kmeans"
        else:
            final = KMeans(n_clusters=self.k_, n_init=self.n_init, random_state=self.random_state)
            final.fit(z)
            self.method_ = "kmeans"
        labels = final.predict(z)
        # number clusters by size, largest first (ties by the model's own order)
        sizes = np.bincount(labels, minlength=self.k_)
        order = np.lexsort((np.arange(self.k_), -sizes))
        rank = np.empty(self.k_, dtype="int64")
        rank[order] = np.arange(self.k_)
        self.labels_ = rank[labels]
        self.cluster_centers_ = final.cluster_centers_[order]
        # in original units, within the observed range (float noise of exp/log removed)
        self.centroids_ = np.clip(self._unscale(self.cluster_centers_), x.min(0), x.max(0))
        self.sizes_ = sizes[order]
        self.inertia_ = float(final.inertia_)
        return self

    def predict(self, values: object) -> np.ndarray:
        """The nearest cluster (numbered as in ``labels_``) for each row."""
        z = self.transform(values)
        c = self.cluster_centers_
        d = (c**2).sum(axis=1)[None, :] - 2.0 * (z @ c.T)  # |z|² is the same for every centre
        return d.argmin(axis=1)

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError("this CustomerKMeans is not fitted yet; call fit(values) first")


# --- K-prototypes: numbers and categories -------------------------------------------------------

_CHUNK = 262_144  # rows per block of the distance matrix (n × k floats)


def _mixed_cost(
    zn: np.ndarray, codes: np.ndarray, centers: np.ndarray, modes: np.ndarray, gamma: float
) -> np.ndarray:
    """Huang's dissimilarity of every row to every prototype: squared distance + γ·mismatches."""
    d = np.zeros((zn.shape[0], centers.shape[0]))
    if zn.shape[1]:
        d += (zn**2).sum(axis=1)[:, None] - 2.0 * (zn @ centers.T) + (centers**2).sum(axis=1)
        np.clip(d, 0.0, None, out=d)
    for j in range(codes.shape[1]):
        d += gamma * (codes[:, j, None] != modes[None, :, j])
    return d


def _pairwise(zn: np.ndarray, codes: np.ndarray, gamma: float) -> np.ndarray:
    """The square root of Huang's dissimilarity between every pair of rows (for silhouettes)."""
    sq = (zn**2).sum(axis=1)
    d = sq[:, None] - 2.0 * (zn @ zn.T) + sq[None, :]
    np.clip(d, 0.0, None, out=d)
    for j in range(codes.shape[1]):
        d += gamma * (codes[:, j, None] != codes[None, :, j])
    np.fill_diagonal(d, 0.0)
    return np.sqrt(d)


class CustomerKPrototypes:
    """K-prototypes (Huang 1997): K-means for numbers and K-modes for categories at once.

    Each prototype is a mean for the numeric columns and a mode (the most frequent level) for
    the categorical ones; the dissimilarity of a customer to a prototype is the squared
    Euclidean distance of the standardised numbers plus ``gamma`` times the number of
    categories that differ. ``gamma`` defaults to half the mean standard deviation of the
    numeric columns, as in the ``kmodes`` package (0.5 after standardising; 1 without
    numeric columns), so one differing category weighs as much as half a standard deviation.

    ``values`` is a matrix in original units where ``categorical`` columns hold level
    indexes 0, 1, …. Numeric columns are treated as :class:`CustomerKMeans` treats them
    (``log1p`` for skewed ones, then standardised). k is chosen by the silhouette of the
    square root of the dissimilarity on a sample, as for K-means. Fitting is Lloyd-style and
    vectorised: every iteration assigns all rows at once (blocks of rows bound the memory),
    then recomputes means with ``bincount`` and modes from level counts per cluster, until
    no mode changes and the means move less than ``tol`` (squared, in standard deviations,
    as scikit-learn's K-means); an empty cluster is re-seeded with the
    worst-fitting row. Deterministic for a
    ``random_state``; clusters numbered by size, largest first.
    """

    def __init__(
        self,
        k: int | str = "auto",
        *,
        categorical: np.ndarray,
        k_range: tuple[int, int] = K_RANGE,
        log: np.ndarray | str = "auto",
        gamma: float | None = None,
        sample_size: int = 20_000,
        silhouette_size: int = 2_000,
        n_init: int = 3,
        max_iter: int = 100,
        tol: float = 1e-4,
        random_state: int = 0,
    ) -> None:
        self.k = k
        self.categorical = categorical
        self.k_range = k_range
        self.log = log
        self.gamma = gamma
        self.sample_size = sample_size
        self.silhouette_size = silhouette_size
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    # --- input and scaling ----------------------------------------------------------------

    def _validate(self, values: object) -> np.ndarray:
        arr = np.asarray(values, dtype="float64")
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise InputError(f"values: expected a 2-D matrix of features, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError("values: contains NaN or infinite numbers; fill them first")
        cat = np.asarray(self.categorical, dtype=bool)
        if cat.shape != (arr.shape[1],):
            raise InputError(f"categorical: expected {arr.shape[1]} flags, got {cat.shape}")
        codes = arr[:, cat]
        if codes.size and ((codes < 0).any() or (codes != np.round(codes)).any()):
            raise InputError(
                "values: categorical columns must hold level indexes 0, 1, 2, … (whole numbers)"
            )
        return arr

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(standardised numeric part, categorical codes)."""
        zn = x[:, ~self.categorical_].copy()
        if self.log_.any():
            zn[:, self.log_] = np.log1p(np.clip(zn[:, self.log_], 0, None))
        zn -= self.mean_
        zn /= self.scale_
        return zn, x[:, self.categorical_].astype("int64")

    # --- the algorithm --------------------------------------------------------------------

    def _nearest(
        self, zn: np.ndarray, codes: np.ndarray, centers: np.ndarray, modes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        labels = np.empty(zn.shape[0], dtype="int64")
        best = np.empty(zn.shape[0])
        for start in range(0, zn.shape[0], _CHUNK):
            part = slice(start, start + _CHUNK)
            d = _mixed_cost(zn[part], codes[part], centers, modes, self.gamma_)
            labels[part] = d.argmin(axis=1)
            best[part] = d[np.arange(d.shape[0]), labels[part]]
        return labels, best

    def _update(
        self, zn: np.ndarray, codes: np.ndarray, labels: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        sizes = np.bincount(labels, minlength=k).astype("float64")
        centers = np.zeros((k, zn.shape[1]))
        for j in range(zn.shape[1]):
            centers[:, j] = np.bincount(labels, weights=zn[:, j], minlength=k)
        centers /= np.maximum(sizes, 1.0)[:, None]
        modes = np.empty((k, codes.shape[1]), dtype="int64")
        for j, levels in enumerate(self.n_levels_):
            counts = np.bincount(labels * levels + codes[:, j], minlength=k * levels)
            modes[:, j] = counts.reshape(k, levels).argmax(axis=1)  # ties: the lower level
        return centers, modes

    def _init(
        self, zn: np.ndarray, codes: np.ndarray, k: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """k-means++ seeding under the mixed dissimilarity: far rows are likelier seeds."""
        n = zn.shape[0]
        chosen = [int(rng.integers(n))]
        dist = _mixed_cost(zn, codes, zn[chosen], codes[chosen], self.gamma_)[:, 0]
        for _ in range(1, k):
            total = dist.sum()
            pick = int(rng.choice(n, p=dist / total)) if total > 0 else int(rng.integers(n))
            chosen.append(pick)
            new = _mixed_cost(zn, codes, zn[[pick]], codes[[pick]], self.gamma_)[:, 0]
            np.minimum(dist, new, out=dist)
        return zn[chosen].copy(), codes[chosen].copy()

    def _run(
        self, zn: np.ndarray, codes: np.ndarray, k: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
        """One Lloyd-style run: (labels, centers, modes, cost, iterations)."""
        centers, modes = self._init(zn, codes, k, rng)
        labels = np.full(zn.shape[0], -1, dtype="int64")
        iterations = 0
        for iterations in range(1, self.max_iter + 1):  # noqa: B007 (read after the loop)
            new, best = self._nearest(zn, codes, centers, modes)
            sizes = np.bincount(new, minlength=k)
            for empty in np.flatnonzero(sizes == 0):  # at most k-1 re-seeds per iteration
                worst = int(best.argmax())
                new[worst], best[worst] = empty, 0.0
            moved = int((new != labels).sum())
            labels = new
            if moved == 0:
                break
            previous, previous_modes = centers, modes
            centers, modes = self._update(zn, codes, labels, k)
            # as scikit-learn's K-means: the prototypes barely move (numbers are standardised,
            # so the tolerance is in units of variance), and no mode changed
            shift = float(((centers - previous) ** 2).sum())
            if shift <= self.tol and np.array_equal(modes, previous_modes):
                break
        _, best = self._nearest(zn, codes, centers, modes)
        return labels, centers, modes, float(best.sum()), iterations

    def _best_run(
        self, zn: np.ndarray, codes: np.ndarray, k: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
        runs = [self._run(zn, codes, k, rng) for _ in range(max(1, self.n_init))]
        return min(runs, key=lambda r: r[3])

    def fit(self, values: object) -> CustomerKPrototypes:
        """Standardise the numbers, choose k (or use the one given), fit on every row."""
        x = self._validate(values)
        n = x.shape[0]
        rng = np.random.default_rng(self.random_state)
        self.categorical_ = np.asarray(self.categorical, dtype=bool)
        numeric = x[:, ~self.categorical_]
        if isinstance(self.log, str):
            if self.log != "auto":
                raise InputError(f"log = {self.log!r}: use 'auto' or a boolean mask")
            self.log_ = skewed_columns(numeric) if numeric.shape[1] else np.zeros(0, bool)
        else:
            log = np.asarray(self.log, dtype=bool)
            if log.shape != (x.shape[1],):
                raise InputError(f"log: expected {x.shape[1]} flags, got {log.shape}")
            self.log_ = log[~self.categorical_]
        z = numeric.copy()
        if self.log_.any():
            z[:, self.log_] = np.log1p(np.clip(z[:, self.log_], 0, None))
        self.mean_ = z.mean(axis=0)
        std = z.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        zn, codes = self._split(x)
        self.n_levels_ = [int(codes[:, j].max()) + 1 for j in range(codes.shape[1])]
        if self.gamma is not None:
            if not self.gamma > 0:
                raise InputError(f"gamma = {self.gamma!r}: use a positive number or None")
            self.gamma_ = float(self.gamma)
        else:
            spread = float(zn.std(axis=0).mean()) if zn.shape[1] else 0.0
            self.gamma_ = 0.5 * spread if spread > 0 else 1.0

        rows = np.arange(n) if n <= self.sample_size else rng.choice(n, self.sample_size, False)
        distinct = len(np.unique(x[rows], axis=0))
        ks = _k_candidates(self.k, self.k_range, distinct)
        scored = rows
        if len(rows) > self.silhouette_size:
            scored = rows[rng.choice(len(rows), self.silhouette_size, replace=False)]
        dist = _pairwise(zn[scored], codes[scored], self.gamma_)
        self.silhouette_curve_: dict[int, float] = {}
        for k in ks:
            _, centers, modes, _, _ = self._best_run(zn[rows], codes[rows], k, rng)
            labels, _ = self._nearest(zn[scored], codes[scored], centers, modes)
            if len(np.unique(labels)) < 2:
                self.silhouette_curve_[k] = -1.0
                continue
            self.silhouette_curve_[k] = float(silhouette_score(dist, labels, metric="precomputed"))
        self.k_ = max(self.silhouette_curve_, key=lambda k: (self.silhouette_curve_[k], -k))
        self.silhouette_ = self.silhouette_curve_[self.k_]

        labels, centers, modes, cost, self.n_iter_ = self._best_run(zn, codes, self.k_, rng)
        self.method_ = "kprototypes"
        sizes = np.bincount(labels, minlength=self.k_)
        order = np.lexsort((np.arange(self.k_), -sizes))
        rank = np.empty(self.k_, dtype="int64")
        rank[order] = np.arange(self.k_)
        self.labels_ = rank[labels]
        self.cluster_centers_ = centers[order]
        self.modes_ = modes[order]
        self.sizes_ = sizes[order]
        self.cost_ = self.inertia_ = cost
        self.centroids_ = self._centroids(x)
        return self

    def _centroids(self, x: np.ndarray) -> np.ndarray:
        """Prototypes in original units: means (within the observed range), mode indexes."""
        out = np.empty((self.k_, x.shape[1]))
        num = ~self.categorical_
        values = self.cluster_centers_ * self.scale_ + self.mean_
        values[:, self.log_] = np.expm1(values[:, self.log_])
        out[:, num] = np.clip(values, x[:, num].min(0), x[:, num].max(0)) if num.any() else values
        out[:, self.categorical_] = self.modes_
        return out

    def predict(self, values: object) -> np.ndarray:
        """The nearest prototype (numbered as in ``labels_``) for each row."""
        if not hasattr(self, "modes_"):
            raise NotFittedError("this CustomerKPrototypes is not fitted yet; call fit first")
        zn, codes = self._split(self._validate(values))
        return self._nearest(zn, codes, self.cluster_centers_, self.modes_)[0]
