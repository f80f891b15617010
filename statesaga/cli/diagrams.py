"""``statesaga diagram``: draw a saga, a run's path on it, or what changed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from statesaga.cli._app import app
from statesaga.cli._common import DbOption, consoles, load_sagas, open_engine
from statesaga.errors import StateSagaError

if TYPE_CHECKING:
    from statesaga.engine import Engine

__all__ = ["diagram"]

_consoles = consoles


def _engine(db: str | None) -> Engine:
    """An engine that reads the run to overlay; it never creates a database."""
    return open_engine(db, read_only=True)


@app.command()
def diagram(
    reference: Annotated[str, typer.Argument(help="MODULE:ATTR of the saga to draw.")],
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="dot, svg, png, pdf, mermaid or markdown (default: from -o's suffix, else dot).",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE instead of printing.")
    ] = None,
    instance: Annotated[
        str | None, typer.Option("--instance", help="Overlay the path of the run with this id.")
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Draw the changes since this git revision (e.g. HEAD~1), or since MODULE:ATTR.",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Draw nothing; fail if -o FILE is not up to date."),
    ] = False,
    db: DbOption = None,
) -> None:
    """Draw a saga (DOT, SVG, PNG, PDF, Mermaid, Markdown), a run's path on it, or what changed."""
    from statesaga import diagram as diagrams

    try:
        definitions = load_sagas(reference)
        if len(definitions) > 1:
            raise StateSagaError(f"{reference} defines several sagas; pass MODULE:ATTR of one")
        (definition,) = definitions
        fmt = diagrams.format_for(output, format)
        again = [reference]
        if instance is not None and against is not None:
            raise StateSagaError("--instance and --against draw different things; pass one")
        if instance is not None:
            engine = _engine(db)
            try:
                run = engine.get(instance)
            finally:
                engine.close()
            drawing = diagrams.overlay(diagrams.from_definition(definition), run)
            again += ["--instance", instance, *(["--db", db] if db else [])]
        elif against is not None:
            if ":" in against:  # a git revision never holds a colon
                (old,) = load_sagas(against)[:1]
            else:
                old = diagrams.definition_at(definition, against)
            drawing = diagrams.diff(old, definition, since=against)
            again += ["--against", against]
        else:
            drawing = diagrams.from_definition(definition)
        if check:
            if output is None:
                raise StateSagaError("--check needs -o FILE, the committed diagram to check")
            try:
                diagrams.check_file(drawing, fmt, output)
            except diagrams.DiagramError as error:
                redraw = " ".join(["statesaga diagram", *again, "--format", fmt, "-o", str(output)])
                raise diagrams.DiagramError(f"{error.message}; redraw it with: {redraw}") from None
            _consoles.err.print(f"[green]ok[/]: {escape(str(output))} is up to date")
            return
        data = diagrams.draw(drawing, fmt)
        if output is not None:
            output.write_bytes(data)
            _consoles.err.print(f"wrote {escape(str(output))}", highlight=False)
        elif fmt in diagrams.TEXT_FORMATS:
            sys.stdout.write(data.decode())
        elif sys.stdout.isatty():
            raise StateSagaError(f"{fmt.upper()} is binary; pass -o FILE or pipe it to a file")
        else:
            sys.stdout.buffer.write(data)
    except StateSagaError as error:
        # as _errors() does, but as plain text: messages name extras like statesaga[diagrams]
        message = escape(f"{type(error).__name__}: {error}")
        _consoles.err.print(f"[bold red]error:[/] {message}", highlight=False)
        raise typer.Exit(1) from None
