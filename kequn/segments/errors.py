"""``RuleError`` lives in :mod:`kequn.errors` with the other errors; re-exported here."""

from kequn.errors import RuleError, closest

__all__ = ["RuleError", "closest"]
