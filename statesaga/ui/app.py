"""The web view as an ASGI application: sagas, runs, one run, and (with a token) actions.

Pages are rendered on the server from Jinja templates (autoescaped: inputs are
user data) and work without JavaScript; an open run's page reloads itself every
few seconds. Reading is all the view does unless it was given an actions token:
then a failed run can be retried and an open one cancelled, each after a
confirmation form that asks for the token, and each recorded in the run's history
by the engine.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import jinja2
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statesaga.definition import Definition
from statesaga.diagram import DiagramError
from statesaga.engine import Engine
from statesaga.errors import InstanceNotFound, StateSagaError, StoreError
from statesaga.inspection import parse_time, transition_rows
from statesaga.ui import text
from statesaga.ui.diffs import diff_of, revision_of
from statesaga.ui.drawing import run_drawing, saga_drawing
from statesaga.ui.params import (
    STATUSES,
    Problem,
    by_status,
    cursor,
    form_fields,
    linker,
    past,
    unavailable,
    whole,
    with_params,
)
from statesaga.ui.source import DatabaseUnavailable, Source, timeline

__all__ = ["create_app"]

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
#: seconds between reloads of an open run's page
REFRESH_SECONDS = 5
ACTIONS = ("retry", "cancel", "resolve")
_HEADERS = {
    # no script runs, nothing is framed (the action forms cannot be clickjacked)
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_app(
    database: str | Engine,
    *,
    sagas: Iterable[type | Definition] = (),
    actions_token: str | None = None,
    resources: Iterable[object] = (),
) -> Starlette:
    """The web view of the runs in ``database``, as an ASGI app.

    Args:
        database: a SQLAlchemy URL (opened on the first request, read through an
            engine the view closes on shutdown), or an ``Engine`` of the application.
        sagas: saga classes to show (diagram, check table) and to draw runs on.
        actions_token: enables retry and cancel for whoever types this token
            in the confirmation form; ``None`` (the default) keeps the view read-only.
        resources: what the steps need when a retried or cancelled run is driven on.

    Mount it in a Starlette or FastAPI application, or serve it with
    :func:`statesaga.ui.serve`:

    >>> import httpx
    >>> from statesaga._examples import Fulfil
    >>> from statesaga.ui.server import running
    >>> with running(create_app("sqlite://", sagas=[Fulfil])) as url:
    ...     page = httpx.get(url)
    >>> page.status_code, "fulfil" in page.text
    (200, True)
    """
    if actions_token is not None and len(actions_token) < 8:
        raise StateSagaError(
            "the actions token is too short to guard retry and cancel: use 8 characters or "
            "more, e.g. python -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    source = Source(database, sagas=sagas, resources=resources)
    pages = Pages(source, actions_token)
    routes = [
        Route("/", pages.sagas, name="sagas"),
        Route("/sagas/{name}", pages.saga, name="saga"),
        Route("/sagas/{name}/diff", pages.saga_diff, name="saga_diff"),
        Route("/runs", pages.runs, name="runs"),
        Route("/runs/{instance_id}", pages.run, name="run"),
        Route("/runs/{instance_id}/{action}", pages.confirm, methods=["GET"], name="confirm"),
        Route("/runs/{instance_id}/{action}", pages.act, methods=["POST"], name="act"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            source.close()

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: pages.http_error, Exception: pages.server_error},
        lifespan=lifespan,
    )
    app.add_middleware(_SecurityHeaders)
    return app


class Pages:
    """The view's handlers: each reads through the source and renders one template."""

    def __init__(self, source: Source, token: str | None) -> None:
        self.source = source
        self.token = token
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.globals.update(
            when=text.when, ago=text.ago, pretty_json=text.pretty_json, span=text.span
        )

    def render(self, request: Request, name: str, status: int = 200, **values: Any) -> Response:
        """The template filled in, with what every page shows (the database, the nav)."""
        page = self.templates.get_template(name).render(
            request=request,
            url_for=linker(request),
            database=self.source.url,
            actions_on=self.token is not None,
            **values,
        )
        return HTMLResponse(page, status_code=status)

    def _guarded(self, request: Request, page: Callable[[], Response]) -> Response:
        try:
            return page()
        except Problem as problem:
            return self.problem(request, problem)
        except DatabaseUnavailable as error:
            return self.problem(request, unavailable(str(error)))
        except (sa.exc.SQLAlchemyError, StoreError) as error:
            return self.problem(request, unavailable(str(self.source.failure(error))))

    def problem(self, request: Request, problem: Problem) -> Response:
        """The page for something that went wrong."""
        return self.render(request, "problem.html", problem.status, problem=problem)

    # -- sagas -------------------------------------------------------------------------------

    def sagas(self, request: Request) -> Response:
        """Every registered saga with its versions and its runs by status."""

        def page() -> Response:
            counts = self.source.counts()
            names = sorted({d.name for d in self.source.definitions} | {k[0] for k in counts})
            rows = []
            for name in names:
                versions = sorted(
                    {d.version for d in self.source.definitions if d.name == name}
                    | {k[1] for k in counts if k[0] == name}
                )
                statuses = by_status(counts, name)
                rows.append(
                    {
                        "name": name,
                        "registered": self.source.definition(name) is not None,
                        "versions": versions,
                        "counts": statuses,
                        "total": sum(statuses.values()),
                    }
                )
            return self.render(request, "sagas.html", sagas=rows, statuses=STATUSES)

        return self._guarded(request, page)

    def saga(self, request: Request) -> Response:
        """One saga: its diagram, its check table, its versions and its runs by status."""

        def page() -> Response:
            definition = self._definition(request)
            name = definition.name
            counts = self.source.counts(name)
            versions = [
                {
                    "version": v,
                    "definition": self.source.definition(name, v),
                    "counts": by_status(counts, name, v),
                }
                for v in sorted(
                    {d.version for d in self.source.definitions if d.name == name}
                    | {k[1] for k in counts}
                )
            ]
            return self.render(
                request,
                "saga.html",
                definition=definition,
                drawing=saga_drawing(definition),
                transitions=transition_rows(definition),
                versions=versions,
                counts=by_status(counts, name),
                statuses=STATUSES,
            )

        return self._guarded(request, page)

    def _definition(self, request: Request) -> Definition:
        name = request.path_params["name"]
        version = whole(request.query_params.get("version"), "version")
        definition = self.source.definition(name, version)
        if definition is None:
            registered = ", ".join(sorted({d.name for d in self.source.definitions}))
            raise Problem(
                404,
                "No such saga",
                f"saga {name!r}{'' if version is None else f' version {version}'} is not "
                "registered with this view.",
                f"Registered: {registered or 'none'}. Start the view with --saga MODULE:ATTR "
                "for each saga whose diagram you want to see.",
            )
        return definition

    def saga_diff(self, request: Request) -> Response:
        """What changed in a saga since a git revision (``?against=REV``), drawn and listed."""

        def page() -> Response:
            definition = self._definition(request)
            given = request.query_params.get("against", "")
            revision = revision_of(given)
            if revision is None:
                raise Problem(
                    400,
                    "Which revision?",
                    f"{given.strip()!r} is not a git revision name." if given.strip() else "",
                    "Type one git knows, such as HEAD~1, main, a tag or a commit hash.",
                )
            try:
                changes = diff_of(definition, revision)
            except DiagramError as error:
                raise Problem(
                    404,
                    "Revision or file not found",
                    str(error),
                    "Pick a revision where the saga's module exists (git log -- FILE lists "
                    "them), from the repository the view was started in.",
                ) from None
            return self.render(
                request, "diff.html", definition=definition, revision=revision, diff=changes
            )

        return self._guarded(request, page)

    # -- runs --------------------------------------------------------------------------------

    def runs(self, request: Request) -> Response:
        """Runs, newest first, filtered and paginated in the store."""

        def page() -> Response:
            query = request.query_params
            filters = {
                name: (query.get(name) or "").strip()
                for name in ("saga", "status", "key", "correlation_id", "since", "until")
            }
            problems = []
            status = filters["status"] or None
            if status is not None and status not in STATUSES:
                problems.append(f"status {status!r} is not one of {', '.join(STATUSES)}")
                status = None
            bounds: dict[str, float | None] = {}
            for bound in ("since", "until"):
                try:
                    bounds[bound] = parse_time(filters[bound]) if filters[bound] else None
                except StateSagaError as error:
                    problems.append(f"{bound}: {error}")
                    bounds[bound] = None
            before = cursor(query.get("before"))
            limit = whole(query.get("limit"), "limit") or PAGE_SIZE
            if not 1 <= limit <= 500:
                raise Problem(400, "Bad page size", f"limit={limit} is out of range", "Use 1-500.")
            if problems:
                runs = []
            else:
                runs = self.source.page(
                    saga=filters["saga"] or None,
                    status=status,
                    entity_key=filters["key"] or None,
                    correlation_id=filters["correlation_id"] or None,
                    since=bounds["since"],
                    until=bounds["until"],
                    before=before,
                    limit=limit + 1,  # one more tells whether there is an older page
                )
            older = None
            if len(runs) > limit:
                runs = runs[:limit]
                last = runs[-1].row
                older = with_params(request, before=f"{last.created_at!r}:{last.id}")
            sagas = sorted({d.name for d in self.source.definitions} | {filters["saga"]} - {""})
            return self.render(
                request,
                "runs.html",
                status=400 if problems else 200,
                runs=runs,
                filters=filters,
                problems=problems,
                statuses=STATUSES,
                sagas=sagas,
                older=older,
                newest=with_params(request, before=None) if before is not None else None,
                now=self.source.engine.clock(),
            )

        return self._guarded(request, page)

    def run(self, request: Request) -> Response:
        """One run: its path on the diagram, its timeline, its data; reloads while open."""

        def page() -> Response:
            view, run = self._find(request.path_params["instance_id"])
            definition = self.source.definition(run.saga, run.version)
            drawing = None if definition is None else run_drawing(definition, run)
            return self.render(
                request,
                "run.html",
                view=view,
                run=run,
                drawing=drawing,
                steps=timeline(run),
                children=self.source.children(run),
                refresh=REFRESH_SECONDS if view.is_open else None,
                done=request.query_params.get("done"),
                now=self.source.engine.clock(),
                registered=[d.version for d in self.source.definitions if d.name == run.saga],
            )

        return self._guarded(request, page)

    def _find(self, instance_id: str) -> Any:
        found = self.source.run(instance_id)
        if found is None:
            raise Problem(
                404,
                "No such run",
                f"There is no run with id {instance_id!r} in {self.source.url}.",
                "It may have been deleted by retention (statesaga cleanup), or the id is from "
                "another database. Find runs by entity key or correlation id on the runs page.",
            )
        return found

    # -- actions -----------------------------------------------------------------------------

    def _check_action(self, action: str) -> None:
        if action not in ACTIONS:
            raise Problem(404, "No such page", f"there is no action {action!r}", "")
        if self.token is None:
            raise Problem(
                403,
                "Actions are off",
                "This view is read-only: retry, cancel and resolve are turned off.",
                "Start it with --actions-token TOKEN (or create_app(..., actions_token=...)) to "
                "turn them on; whoever knows the token can then retry, cancel and resolve runs.",
            )

    def confirm(self, request: Request) -> Response:
        """The confirmation form of an action: what it will do, and the token field."""

        def page() -> Response:
            action = request.path_params["action"]
            self._check_action(action)
            view, run = self._find(request.path_params["instance_id"])
            return self.render(request, "confirm.html", action=action, view=view, run=run)

        return self._guarded(request, page)

    async def act(self, request: Request) -> Response:
        """Carry out a confirmed action (with the right token), then show the run."""
        try:
            form = await form_fields(request)
        except Problem as problem:
            return self.problem(request, problem)
        token, note = form.get("token", ""), form.get("note", "")[:500]
        outcome = form.get("outcome", "")

        def page() -> Response:
            action = request.path_params["action"]
            instance_id = request.path_params["instance_id"]
            self._check_action(action)
            assert self.token is not None
            if not hmac.compare_digest(token.encode(), self.token.encode()):
                raise Problem(
                    403,
                    "Wrong token",
                    f"The token given does not match: the run was not {past(action)}.",
                    "Go back and type the token the view was started with.",
                )
            try:
                self.source.act(action, instance_id, note, outcome)
            except InstanceNotFound:
                self._find(instance_id)
                raise
            except (StoreError, sa.exc.SQLAlchemyError):
                raise
            except StateSagaError as error:
                raise Problem(
                    409,
                    f"Could not {action} the run",
                    f"{type(error).__name__}: {error}",
                    "Nothing was changed. The run's page shows where it stands now.",
                ) from None
            target = request.url_for("run", instance_id=instance_id)
            return RedirectResponse(f"{target}?done={action}", status_code=303)

        return await run_in_threadpool(self._guarded, request, page)

    # -- errors ------------------------------------------------------------------------------

    async def http_error(self, request: Request, error: Exception) -> Response:
        """404 and 405 as pages."""
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            problem = Problem(404, "No such page", f"Nothing lives at {request.url.path}.", "")
        else:
            problem = Problem(error.status_code, "Not allowed", str(error.detail), "")
        return self.problem(request, problem)

    async def server_error(self, request: Request, error: Exception) -> Response:
        """Anything unexpected: a page without the details (they go to the server's log)."""
        return self.problem(
            request,
            Problem(
                500,
                "Something went wrong",
                f"The view failed on this page ({type(error).__name__}).",
                "The server's log has the details.",
            ),
        )


class _SecurityHeaders:
    """Adds the security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in _HEADERS.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)
