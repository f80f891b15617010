"""Serving the web view: in the foreground (``serve``), or in a thread (``running``).

>>> from statesaga.ui.app import create_app
>>> import httpx
>>> with running(create_app("sqlite://")) as url:
...     httpx.get(f"{url}/runs").status_code
200
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from statesaga.definition import Definition
from statesaga.engine import Engine
from statesaga.errors import StateSagaError
from statesaga.ui.app import create_app

__all__ = ["running", "serve"]

log = logging.getLogger("statesaga.ui")


def serve(
    database: str | Engine,
    *,
    sagas: Iterable[type | Definition] = (),
    host: str = "127.0.0.1",
    port: int = 8080,
    actions_token: str | None = None,
    resources: Iterable[object] = (),
) -> None:
    """Serve the web view of ``database`` until Ctrl-C (see :func:`~statesaga.ui.create_app`).

    It listens on 127.0.0.1 unless told otherwise: the pages show the runs'
    inputs and context, which are the application's data.
    """
    app = create_app(database, sagas=sagas, actions_token=actions_token, resources=resources)
    if not _is_loopback(host):
        log.warning(
            "the web view listens on %s: anyone who reaches it sees the runs' data%s",
            host,
            "; the actions token travels in clear text unless a TLS proxy stands in front"
            if actions_token
            else "",
        )
    log.warning("statesaga web view on http://%s:%d", host, port)
    # a port in use is reported by uvicorn itself ("address already in use"), exit status 1
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@contextmanager
def running(app: ASGIApp, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` on a free port in a thread; yield its base URL; stop it on exit."""
    config = uvicorn.Config(app, host=host, port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="statesaga-ui", daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            time.sleep(0.01)
        if not server.started:
            raise StateSagaError(f"the web view did not start on {host}")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
