from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from kequn import init_workspace

# The suite runs on small shared machines: no per-example deadline, the same examples
# for every run.
settings.register_profile("kequn", deadline=None, derandomize=True)
settings.load_profile("kequn")


@pytest.fixture
def ws(tmp_path: Path):
    workspace = init_workspace(tmp_path / "ws")
    yield workspace
    workspace.close()


@pytest.fixture
def write(tmp_path: Path):
    """Write text to a file in the test folder, in the encoding given."""

    def _write(name: str, text: str, encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        path.write_bytes(text.encode(encoding))
        return path

    return _write


def rows(ws, sql: str) -> list[tuple]:
    return ws.store.duck.execute(sql).fetchall()
