"""The ``statesaga`` Typer application, where every error becomes one or two lines.

Commands register on :data:`app` (and ``db`` commands on :data:`db_app`) from
their own modules; this module knows none of them.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from statesaga.cli._errors import explain

__all__ = ["UsageError", "app", "db_app", "fail"]


def _base(name: str) -> type[Exception]:
    # click's exception classes, whether typer vendors click or depends on it
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


#: a usage error (exit status 2), e.g. ``raise UsageError("pass --id or --key")``
UsageError: Any = _base("UsageError")
_CLICK_ERROR = _base("ClickException")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr; return the exit to raise."""
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {_escape(message)}", highlight=False
    )
    return typer.Exit(code)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class _Group(TyperGroup):
    """Runs a command; turns any exception it raises into ``error: ...`` and exit 1.

    Usage errors stay click's (exit 2). ``STATESAGA_TRACEBACK=1`` lets the
    exception through, for a bug report.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, _CLICK_ERROR):
            raise
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except Exception as error:
            if os.environ.get("STATESAGA_TRACEBACK"):
                raise
            raise fail(explain(error)) from None


app = typer.Typer(
    name="statesaga",
    cls=_Group,
    help="Durable sagas as declarative state machines: check, run, inspect and recover them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Manage the store's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _print_version(value: bool) -> None:
    if value:
        from statesaga import __version__

        typer.echo(f"statesaga {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print statesaga's version and exit.",
        ),
    ] = False,
) -> None:
    """Durable sagas as declarative state machines: check, run, inspect and recover them."""
