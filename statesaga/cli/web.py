"""``statesaga ui``: the web view of sagas and runs (``pip install 'statesaga[ui]'``)."""

from __future__ import annotations

from typing import Annotated

import typer

from statesaga.cli._app import app
from statesaga.cli._common import (
    DbOption,
    ResourcesOption,
    SagaOption,
    load_resources,
    load_sagas,
)
from statesaga.errors import StateSagaError

__all__ = ["ui"]


@app.command()
def ui(
    saga: SagaOption = None,
    resources: ResourcesOption = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on (default: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    actions_token: Annotated[
        str | None,
        typer.Option(
            "--actions-token",
            envvar="STATESAGA_UI_TOKEN",
            help="Turn on retry and cancel for whoever types this token (default: read-only).",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Serve the web view of sagas and runs: diagrams, runs, a run's history and data."""
    try:
        from statesaga.ui import serve
    except ImportError as error:
        raise StateSagaError(
            f"the web view needs its extra ({error.name} is missing): pip install 'statesaga[ui]'"
        ) from None
    from statesaga.settings import Settings

    sagas = [d for reference in saga or () for d in load_sagas(reference)]
    given = [r for reference in resources or () for r in load_resources(reference)]
    serve(
        db or Settings.load().database_url,
        sagas=sagas,
        host=host,
        port=port,
        actions_token=actions_token,
        resources=given,
    )
