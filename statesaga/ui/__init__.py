"""The web view of sagas and runs: for reviewers (diagrams) and operators (stuck runs).

``create_app`` builds an ASGI app (Starlette) to mount in an application, and
``serve`` runs it with uvicorn, on 127.0.0.1 by default. Pages are rendered on
the server and work without JavaScript. Read-only unless given an actions token.
Needs ``pip install 'statesaga[ui]'``::

    from statesaga.ui import serve
    from myshop.sagas import CompleteCart

    serve("sqlite:///shop.db", sagas=[CompleteCart])   # http://127.0.0.1:8080
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from statesaga.errors import StateSagaError

if TYPE_CHECKING:
    from statesaga.ui.app import create_app
    from statesaga.ui.server import serve

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'statesaga.ui' has no attribute {name!r}")
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise StateSagaError(
            f"the web view needs {error.name}: pip install 'statesaga[ui]'"
        ) from None
    from statesaga.ui import app, server

    value = {"create_app": app.create_app, "serve": server.serve}[name]
    globals()[name] = value
    return value
