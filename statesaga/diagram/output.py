"""Writing diagrams to files, and checking that committed ones are current.

>>> format_for("docs/checkout.svg", None), format_for(None, None), format_for("x.mmd", "dot")
('svg', 'dot', 'dot')
>>> format_for("chart.jpg", None)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
statesaga.diagram.errors.DiagramError: cannot draw chart.jpg: .jpg is not a diagram format; ...
"""

from __future__ import annotations

from pathlib import Path

from statesaga.diagram.dot import BINARY_FORMATS, fingerprint, fingerprint_of, render, to_dot
from statesaga.diagram.errors import DiagramError
from statesaga.diagram.mermaid import to_mermaid
from statesaga.diagram.model import Diagram
from statesaga.diagram.review import markdown_section

__all__ = ["FORMATS", "TEXT_FORMATS", "check_file", "draw", "format_for"]

#: every format ``draw`` knows
FORMATS = ("dot", "svg", "png", "pdf", "mermaid", "markdown")
#: the formats that are text, printed as they are
TEXT_FORMATS = ("dot", "mermaid", "markdown")

_SUFFIXES = {
    ".dot": "dot",
    ".gv": "dot",
    ".svg": "svg",
    ".png": "png",
    ".pdf": "pdf",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".md": "markdown",
}


def format_for(path: str | Path | None, format: str | None) -> str:
    """The format asked for, else the one the file's suffix names, else ``dot``."""
    if format is not None:
        if format not in FORMATS:
            raise DiagramError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
        return format
    if path is not None:
        suffix = Path(path).suffix.lower()
        if suffix and suffix not in _SUFFIXES:
            raise DiagramError(
                f"cannot draw {path}: {suffix} is not a diagram format; name the file "
                f"{', '.join(list(_SUFFIXES)[:-1])} or {list(_SUFFIXES)[-1]}, "
                f"or pass --format ({', '.join(FORMATS)})"
            )
        return _SUFFIXES.get(suffix, "dot")
    return "dot"


def draw(diagram: Diagram, format: str) -> bytes:
    """The diagram in ``format``: DOT or Mermaid text (UTF-8), or an SVG, PNG or PDF drawing."""
    if format == "dot":
        return to_dot(diagram).encode()
    if format == "mermaid":
        return to_mermaid(diagram).encode()
    if format == "markdown":
        return markdown_section(diagram).encode()
    if format in BINARY_FORMATS:
        return render(diagram, format)
    raise DiagramError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")


def check_file(diagram: Diagram, format: str, path: str | Path) -> None:
    """Raise ``DiagramError`` unless ``path`` holds the diagram as ``draw`` would write it.

    DOT, Mermaid and Markdown files are compared as text. An SVG is compared by the
    fingerprint stamped in it (a hash of what it shows), so the check needs no
    Graphviz and passes whichever Graphviz version drew the committed file.
    """
    path = Path(path)
    if format not in (*TEXT_FORMATS, "svg"):
        raise DiagramError(
            f"--check compares text, and {format.upper()} is not: commit diagrams as SVG, DOT, "
            "Mermaid or Markdown to check them"
        )
    if not path.exists():
        raise DiagramError(f"{path} does not exist")
    found = path.read_text(encoding="utf-8", errors="replace")
    if format == "svg":
        stamped = fingerprint_of(found)
        if stamped is None:
            raise DiagramError(f"{path} was not drawn by statesaga diagram (it has no fingerprint)")
        current = stamped == fingerprint(diagram)
    else:
        current = found == draw(diagram, format).decode()
    if not current:
        raise DiagramError(f"{path} is out of date: the saga changed since it was drawn")
