"""docs/cli.md names every command and every option the CLI has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from kequn.cli import app

DOC = (Path(__file__).parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")


def _commands(command, prefix=()):
    options = [p.opts[0] for p in command.params if p.opts[0].startswith("--")]
    subs = getattr(command, "commands", None)
    if prefix and (options or not subs):  # a group with options of its own runs too
        yield " ".join(prefix), options
    for name, sub in (subs or {}).items():
        yield from _commands(sub, (*prefix, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def _section(path: str) -> str:
    match = re.search(rf"^## `kequn {re.escape(path)}(?=[ `]).*?(?=^## |\Z)", DOC, re.M | re.S)
    assert match, f"docs/cli.md has no section for `kequn {path}`"
    return match.group(0)


@pytest.mark.parametrize(("path", "options"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_and_options_documented(path: str, options: list[str]) -> None:
    section = _section(path)
    missing = [o for o in options if o not in section]
    assert not missing, f"`kequn {path}`: options {missing} are not in docs/cli.md"
