"""The exceptions kequn raises, in one tree.

Every error a user can cause is a ``KequnError``; most are also the builtin that fits,
so ``except ValueError`` keeps working for callers who do not know kequn::

    KequnError
    ├── WorkspaceError            no workspace, bad config, unknown backend
    │   └── WorkspaceNotFound (FileNotFoundError)
    ├── InputError (ValueError)   a file or argument kequn cannot use
    │   ├── SourceNotFound (FileNotFoundError)
    │   ├── EmptySource
    │   └── MappingError          a column mapping that names no column / no field
    └── NotFittedError (AttributeError)   a model used before ``fit``

Messages quote the bad value with ``!r``, say where it was found and what is allowed.
"""

from __future__ import annotations


class KequnError(Exception):
    """Base class of every error kequn raises on purpose."""

    exit_code = 1


class WorkspaceError(KequnError):
    """The workspace is missing, unreadable or misconfigured."""

    exit_code = 3


class WorkspaceNotFound(WorkspaceError, FileNotFoundError):
    """No ``kequn.toml`` in the folder given (or the current one)."""


class InputError(KequnError, ValueError):
    """An input file or argument kequn cannot use."""

    exit_code = 2


class SourceNotFound(InputError, FileNotFoundError):
    """A file named on the command line (or matched by a glob) does not exist."""


class EmptySource(InputError):
    """A file with no header or no data rows."""


class MappingError(InputError):
    """A column mapping that cannot be applied (unknown source column or target field)."""


class NotFittedError(KequnError, AttributeError):
    """A model method that needs ``fit`` was called before it."""
