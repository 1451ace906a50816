"""kequn (客群): a customer segmentation engine.

The public Python API is what ``__all__`` lists; everything else is private to the package.
"""

from kequn.errors import (
    EmptySource,
    InputError,
    KequnError,
    MappingError,
    NotFittedError,
    SourceNotFound,
    WorkspaceError,
    WorkspaceNotFound,
)
from kequn.workspace import Workspace, init_workspace, open_workspace

__version__ = "0.1.0"

__all__ = [
    "EmptySource",
    "InputError",
    "KequnError",
    "MappingError",
    "NotFittedError",
    "SourceNotFound",
    "Workspace",
    "WorkspaceError",
    "WorkspaceNotFound",
    "__version__",
    "init_workspace",
    "open_workspace",
]
