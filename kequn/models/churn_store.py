"""Where churn models and churn scores live in a workspace.

* The trained model is a file, ``models/churn.pkl`` in the workspace folder: a pickled
  dict with a version stamp (file format, kequn and scikit-learn versions), the training
  report and the pickled model. The stamp is read before the model, so a model written by
  another scikit-learn version is refused with the fix (retrain) instead of failing
  obscurely or predicting differently. Pickles run code when loaded: only load model files
  from workspaces you trust, as with any scikit-learn model.
* Scores go to the ``churn_scores`` table, one row per customer × ``as_of`` × model, so
  segment rules can use ``churn_risk`` and runs can be compared. Scoring again at the same
  ``as_of`` with the same model replaces that run.
"""

from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from kequn.config import zone_info
from kequn.errors import NotFittedError, WorkspaceError
from kequn.models.churn import ChurnModel, predict_churn
from kequn.models.churn_evaluation import ChurnReport
from kequn.store import CHURN_SCORES
from kequn.workspace import Workspace

__all__ = [
    "CHURN_SCORES",
    "MODEL_FILE",
    "SCORES_TABLE",
    "load_churn_model",
    "save_churn_model",
    "score_churn",
    "store_churn_scores",
]

SCORES_TABLE = "churn_scores"
MODEL_FILE = Path("models") / "churn.pkl"
FORMAT = 1


def _versions() -> dict[str, str]:
    import sklearn

    from kequn import __version__

    return {"kequn": __version__, "sklearn": sklearn.__version__}


def save_churn_model(
    workspace: Workspace, model: ChurnModel, report: ChurnReport | None = None
) -> Path:
    """Write ``model`` (fitted) to ``models/churn.pkl`` in the workspace; returns the path.

    Written to a temporary file first and renamed, so a crash never leaves half a model.
    """
    model._fitted()
    path = workspace.path / MODEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    bundle = {
        "format": FORMAT,
        **_versions(),
        "saved_at": _now(workspace).isoformat(),
        "report": report.as_dict() if report is not None else None,
        "model": pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.replace(path)
    return path


def load_churn_model(workspace: Workspace) -> tuple[ChurnModel, dict[str, Any]]:
    """The saved model and its stamp (versions, ``saved_at``, ``report``).

    ``NotFittedError`` when no model was trained in the workspace; ``WorkspaceError`` when
    the file is unreadable or from another scikit-learn or file format version.
    """
    path = workspace.path / MODEL_FILE
    if not path.is_file():
        raise NotFittedError(
            f"no churn model in this workspace yet ({str(path)!r} does not exist); "
            "train one with `kequn churn train`"
        )
    try:
        bundle = pickle.loads(path.read_bytes())
    except Exception as exc:  # any unpickling failure means the same: retrain
        raise WorkspaceError(
            f"cannot read the churn model {str(path)!r} ({exc}); "
            "train it again with `kequn churn train`"
        ) from exc
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise WorkspaceError(
            f"{str(path)!r} is not a churn model file this kequn can read; "
            "train it again with `kequn churn train`"
        )
    installed = _versions()["sklearn"]
    if bundle.get("sklearn") != installed:
        raise WorkspaceError(
            f"the churn model {str(path)!r} was trained with scikit-learn "
            f"{bundle.get('sklearn')}, but {installed} is installed; train it again with "
            "`kequn churn train`"
        )
    model = pickle.loads(bundle["model"])
    meta = {k: v for k, v in bundle.items() if k != "model"}
    return model, meta


def _now(workspace: Workspace) -> dt.datetime:
    return dt.datetime.now(zone_info(workspace.config.timezone)).replace(tzinfo=None, microsecond=0)


def model_label(model: ChurnModel) -> str:
    """The ``model`` column of ``churn_scores``: the name and the label's horizon."""
    return f"{model.name}-{model.horizon}d"


def store_churn_scores(
    workspace: Workspace, scores: pd.DataFrame, as_of: dt.date, model: str
) -> pd.DataFrame:
    """Replace the run (``as_of``, ``model``) in ``churn_scores`` with ``scores``.

    ``scores`` has ``customer_id`` and ``churn_risk``; ``as_of`` is a day, recorded as its
    midnight (as segment history records a day). Delete and insert are one transaction.
    Returns the rows as stored.
    """
    stamp = dt.datetime.combine(as_of, dt.time())
    rows = pd.DataFrame(
        {
            "customer_id": scores["customer_id"].astype(str).to_numpy(),
            "as_of": pd.Series(stamp, index=scores.index, dtype="datetime64[us]").to_numpy(),
            "churn_risk": scores["churn_risk"].to_numpy(dtype="float64"),
            "model": model,
            "computed_at": _now(workspace),
        }
    )
    table = pa.Table.from_pandas(rows, preserve_index=False).cast(CHURN_SCORES.to_pyarrow())
    store = workspace.store
    with store.transaction():
        store.delete(SCORES_TABLE, as_of=stamp, model=model)
        store.append(SCORES_TABLE, table)
    return rows


def score_churn(
    workspace: Workspace, *, as_of: Any = None, model: ChurnModel | None = None
) -> pd.DataFrame:
    """Score every customer with a purchase at ``as_of`` and store the run.

    Uses the workspace's saved model unless one is given. ``as_of`` defaults to the day of
    the last purchase. Returns ``customer_id, as_of, churn_risk, model, computed_at``.
    """
    from kequn.models.churn_features import data_span, parse_day

    if model is None:
        model, _ = load_churn_model(workspace)
    day = (
        parse_day(as_of, "as_of")
        if as_of is not None
        else data_span(workspace.table("orders")).last_day
    )
    scores = predict_churn(workspace, model, day)
    return store_churn_scores(workspace, scores, day, model_label(model))
