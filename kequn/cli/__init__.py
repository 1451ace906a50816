"""The ``kequn`` command. Thin: parse options, call the library, print.

Each command group lives in its own module with a ``register(app)`` function; heavy
libraries are imported inside the commands so that ``kequn --help`` stays fast.
"""

from __future__ import annotations

import typer

from kequn.cli import (
    access,
    act,
    admin,
    churn,
    cluster,
    clv,
    data,
    economics,
    experiment,
    health,
    lifecycle,
    persona,
    privacy,
    rfm,
    schedule,
    segment,
    serve,
    tags,
)

app = typer.Typer(
    name="kequn",
    help="kequn (客群): customer segmentation engine — import, score, segment, act, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """kequn (客群): customer segmentation engine — import, score, segment, act, serve."""


for module in (
    admin,
    data,
    rfm,
    clv,
    churn,
    segment,
    schedule,
    cluster,
    persona,
    lifecycle,
    health,
    serve,
    act,
    experiment,
    access,
    privacy,
    tags,
    economics,
):
    module.register(app)


def main() -> None:
    app()
