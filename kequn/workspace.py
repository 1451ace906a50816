"""A workspace: a folder with ``kequn.toml`` and (by default) an embedded DuckDB file.

Every command and API call works on one workspace. The folder is found from an explicit
argument, else the ``KEQUN_WORKSPACE`` variable, else the current folder.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import ibis

from kequn.config import CONFIG_NAME, TEMPLATE, Config
from kequn.errors import WorkspaceError, WorkspaceNotFound
from kequn.store import Store


def resolve_path(path: str | os.PathLike | None) -> Path:
    """The workspace folder: the argument, else $KEQUN_WORKSPACE, else the current folder."""
    if path is None or str(path) == "":
        path = os.environ.get("KEQUN_WORKSPACE") or "."
    return Path(path).expanduser()


class Workspace:
    """An opened workspace. Use :func:`open_workspace` or :func:`init_workspace`."""

    def __init__(self, path: Path, config: Config) -> None:
        self.path = path
        self.config = config

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r}, backend={self.config.backend!r})"

    @cached_property
    def store(self) -> Store:
        return Store.connect(self.config.backend, self.path, self.config.db_path)

    @property
    def con(self) -> ibis.BaseBackend:
        return self.store.con

    def table(self, name: str) -> ibis.Table:
        """A canonical table (customers, orders, events, identities, quarantine, ...)."""
        return self.store.table(name)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
            del self.__dict__["store"]

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def init_workspace(
    path: str | os.PathLike | None = None, *, timezone: str = "Asia/Shanghai"
) -> Workspace:
    """Create a workspace (config file and empty tables); an existing one is opened as is."""
    folder = resolve_path(path)
    if folder.exists() and not folder.is_dir():
        raise WorkspaceError(f"{str(folder)!r} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / CONFIG_NAME
    if not config_file.exists():
        config_file.write_text(TEMPLATE.format(timezone=timezone), encoding="utf-8")
    ws = open_workspace(folder)
    ws.store  # noqa: B018 - creates the database file and the tables now
    return ws


def open_workspace(path: str | os.PathLike | None = None) -> Workspace:
    """Open an existing workspace; raises :class:`WorkspaceNotFound` with the fix."""
    folder = resolve_path(path)
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise WorkspaceNotFound(
            f"no kequn workspace in {str(folder.resolve())!r} (no {CONFIG_NAME}); "
            f"create one with `kequn init {folder}` or pass --workspace DIR"
        )
    return Workspace(folder.resolve(), Config.load(config_file))


WorkspaceLike = Workspace | str | os.PathLike


@contextlib.contextmanager
def opened(workspace: WorkspaceLike) -> Iterator[Workspace]:
    """Use a Workspace as given, or open one from a path (and close it afterwards)."""
    if isinstance(workspace, Workspace):
        yield workspace
        return
    ws = open_workspace(workspace)
    try:
        yield ws
    finally:
        ws.close()
