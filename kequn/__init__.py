"""kequn (客群): a customer segmentation engine.

The public Python API is what ``__all__`` lists; everything else is private to the package.
Heavy parts (Ibis, DuckDB, pandas) load on first use, so ``import kequn`` and the CLI's
``--help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kequn.errors import (
    EmptySource,
    InputError,
    KequnError,
    MappingError,
    NotFittedError,
    RuleError,
    SourceNotFound,
    WorkspaceError,
    WorkspaceNotFound,
)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Workspace": "kequn.workspace",
    "init_workspace": "kequn.workspace",
    "open_workspace": "kequn.workspace",
    "ImportReport": "kequn.ingest",
    "import_files": "kequn.ingest",
    "profile": "kequn.profiles",
    "Segment": "kequn.segments",
    "ChurnModel": "kequn.models.churn",
    "rfm": "kequn.features.rfm",
    "BetaGeoModel": "kequn.models",
    "ConvergenceWarning": "kequn.models",
    "GammaGammaModel": "kequn.models",
    "ParetoNBDModel": "kequn.models",
    "calibration_holdout_table": "kequn.models",
    "customer_lifetime_value": "kequn.models",
    "summary_from_orders": "kequn.models",
    "summary_from_transactions": "kequn.models",
}

__all__ = [
    "BetaGeoModel",
    "ChurnModel",
    "ConvergenceWarning",
    "EmptySource",
    "GammaGammaModel",
    "ImportReport",
    "InputError",
    "KequnError",
    "MappingError",
    "NotFittedError",
    "ParetoNBDModel",
    "RuleError",
    "Segment",
    "SourceNotFound",
    "Workspace",
    "WorkspaceError",
    "WorkspaceNotFound",
    "__version__",
    "calibration_holdout_table",
    "customer_lifetime_value",
    "import_files",
    "init_workspace",
    "open_workspace",
    "profile",
    "rfm",
    "summary_from_orders",
    "summary_from_transactions",
]

if TYPE_CHECKING:
    from kequn.features.rfm import rfm
    from kequn.ingest import ImportReport, import_files
    from kequn.models import (
        BetaGeoModel,
        ConvergenceWarning,
        GammaGammaModel,
        ParetoNBDModel,
        calibration_holdout_table,
        customer_lifetime_value,
        summary_from_orders,
        summary_from_transactions,
    )
    from kequn.models.churn import ChurnModel
    from kequn.profiles import profile
    from kequn.segments import Segment
    from kequn.workspace import Workspace, init_workspace, open_workspace


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kequn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
