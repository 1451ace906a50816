"""Ingest: read files, map columns, clean, quarantine, merge identities."""

from kequn.ingest.load import FileReport, ImportReport, import_files
from kequn.ingest.mapping import KINDS, map_columns, parse_map_options

__all__ = [
    "KINDS",
    "FileReport",
    "ImportReport",
    "import_files",
    "map_columns",
    "parse_map_options",
]
