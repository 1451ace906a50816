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
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import silhouette_score

from kequn.errors import InputError, NotFittedError

__all__ = ["CustomerKMeans", "skewed_columns"]

K_RANGE = (2, 8)


def skewed_columns(values: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """Columns worth a log: non-negative with a sample skewness above ``threshold``."""
    mean = values.mean(axis=0)
    centred = values - mean
    var = (centred**2).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(var > 0, (centred**3).mean(axis=0) / np.power(var, 1.5), 0.0)
    return (values.min(axis=0) >= 0) & (skew > threshold)


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
        if self.k != "auto":
            if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer) or self.k < 2:
                raise InputError(f"k = {self.k!r}: use 'auto' or a whole number of at least 2")
            if self.k > n_distinct:
                raise InputError(
                    f"k = {self.k}: only {n_distinct} distinct customers' features to cluster"
                )
            return [int(self.k)]
        low, high = self.k_range
        ks = list(range(low, min(high, n_distinct - 1) + 1))
        if not ks:
            raise InputError(
                f"too few distinct customers ({n_distinct}) to choose k from {low}..{high}"
            )
        return ks

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
