"""docs/segments.md is tested like code: every cookbook rule checks, every command is there."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from kequn.cli.segment import segment_app
from kequn.segments import parse_rule
from kequn.segments.check import check_rule, default_catalog
from kequn.segments.parser import FUNCTIONS, SOURCES

DOC = (Path(__file__).parent.parent / "docs" / "segments.md").read_text(encoding="utf-8")
RULES = [
    "\n".join(line.strip() for line in block.strip("\n").splitlines())
    for block in re.findall(r"```rule\n(.*?)```", DOC, flags=re.S)
]
STORED = {"high_value": "sum(orders.amount, last 12 months) > 1000"}


def test_the_cookbook_has_at_least_25_examples() -> None:
    assert len(RULES) >= 25


@pytest.mark.parametrize("rule", RULES)
def test_cookbook_rule_checks(rule: str) -> None:
    catalog = replace(default_catalog(), rfm=True)
    check_rule(parse_rule(rule), catalog, text=rule, lookup=STORED.get)


def test_every_command_is_documented() -> None:
    for command in segment_app.registered_commands:
        assert f"`{command.name}" in DOC, command.name


def test_every_function_and_source_is_documented() -> None:
    for name in (*FUNCTIONS, *SOURCES):
        assert f"`{name}" in DOC or f"`{name}`" in DOC or name in DOC, name
