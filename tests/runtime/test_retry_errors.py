"""An error that cannot succeed on retry is not retried: a statement that is wrong in itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import sqlalchemy as sa

from statesaga import Engine, HistoryKind, Retry, Saga, State, Status, StepContext


@attrs.define
class Ticket:
    ticket_id: str = "t-1"


@attrs.define
class Issued:
    rows: int = 0


def count_tickets(ctx: StepContext[Ticket, Issued]) -> Issued:
    assert ctx.connection is not None
    # the application's table is not there (a wrong schema, a missing migration)
    found = ctx.connection.execute(sa.text("SELECT count(*) FROM agency_tickets")).scalar()
    return Issued(int(found or 0))


class IssueTicket(Saga[Ticket, Issued]):
    name = "issue-ticket"
    new = State(initial=True)
    done = State(final=True)
    issue = new.to(done).run(
        count_tickets, read_only=True, transactional=True, retry=Retry(attempts=5, jitter=0)
    )


def test_a_missing_table_fails_at_once_instead_of_being_retried(postgres_url: str) -> None:
    with Engine(postgres_url) as engine:
        run = engine.start(IssueTicket, Ticket())

        assert run.status is Status.COMPENSATED
        assert run.error is not None
        assert "ProgrammingError" in run.error.type
        assert run.error.retryable is False
        kinds = [entry.kind for entry in engine.get(run.id).history]
        assert HistoryKind.RETRY not in kinds


def test_on_sqlite_a_missing_table_fails_at_once_too(tmp_path: Path) -> None:
    with Engine(f"sqlite:///{tmp_path / 'agency.db'}") as engine:
        run = engine.start(IssueTicket, Ticket())

        assert run.status is Status.COMPENSATED
        assert run.error is not None
        assert "OperationalError" in run.error.type  # SQLite's for "no such table"
        assert "no such table: agency_tickets" in run.error.message
        assert run.error.retryable is False
        kinds = [entry.kind for entry in engine.get(run.id).history]
        assert HistoryKind.RETRY not in kinds


def test_a_database_that_stayed_locked_is_still_retried() -> None:
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = 5  # SQLITE_BUSY, as SQLite sets it
    assert Retry().is_retryable(locked)
    assert Retry().is_retryable(sa.exc.OperationalError("BEGIN IMMEDIATE", None, locked))
