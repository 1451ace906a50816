"""The public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import subprocess
import sys

import kequn

EXPECTED = {
    "ChurnModel",
    "BetaGeoModel",
    "ConvergenceWarning",
    "GammaGammaModel",
    "ParetoNBDModel",
    "calibration_holdout_table",
    "customer_lifetime_value",
    "summary_from_orders",
    "summary_from_transactions",
    "EmptySource",
    "ImportReport",
    "InputError",
    "KequnError",
    "MappingError",
    "NotFittedError",
    "RuleError",
    "Segment",
    "SourceNotFound",
    "Workspace",
    "WorkspaceError",
    "WorkspaceNotFound",
    "__version__",
    "import_files",
    "init_workspace",
    "open_workspace",
    "profile",
    "rfm",
}


def test_all_is_pinned():
    assert set(kequn.__all__) == EXPECTED


def test_every_public_name_resolves():
    for name in kequn.__all__:
        assert getattr(kequn, name) is not None, name


def test_errors_are_also_builtins():
    assert issubclass(kequn.InputError, ValueError)
    assert issubclass(kequn.SourceNotFound, FileNotFoundError)
    assert issubclass(kequn.NotFittedError, AttributeError)
    assert issubclass(kequn.RuleError, kequn.InputError)
    assert all(issubclass(getattr(kequn, n), kequn.KequnError) for n in EXPECTED if "Err" in n)
    # every exported exception (warnings aside) is a KequnError, whatever its name
    exported = [getattr(kequn, n) for n in EXPECTED]
    errors = [e for e in exported if isinstance(e, type) and issubclass(e, Exception)]
    errors = [e for e in errors if not issubclass(e, Warning)]
    assert {e.__name__ for e in errors} >= {"EmptySource", "SourceNotFound", "WorkspaceNotFound"}
    assert all(issubclass(e, kequn.KequnError) for e in errors)


def test_cli_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from kequn.cli import app; "
        "print(sorted(m for m in ('ibis', 'duckdb', 'pandas', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
