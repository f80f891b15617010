"""The saga of the SQLite writer tests, shared with their child processes (writers_child.py)."""

from __future__ import annotations

from pathlib import Path

import attrs
import sqlalchemy as sa

from statesaga import NonRetryableError, Saga, State, StepContext
from statesaga.store import SqlStore

stock = sa.Table(
    "writers_stock",
    sa.MetaData(),
    sa.Column("run_id", sa.String, primary_key=True),
    sa.Column("step", sa.String, nullable=False),
)


@attrs.frozen
class Basket:
    basket_id: str
    fail: bool = False


@attrs.frozen
class Booked:
    rows: int = 0


class Refused(NonRetryableError):
    pass


def reserve(ctx: StepContext[Basket, Booked]) -> Booked:
    """Writes a row in the transition's own transaction (or fails, writing nothing)."""
    ctx.connection.execute(stock.insert().values(run_id=ctx.instance_id, step="reserve"))
    if ctx.input.fail:
        raise Refused("no stock")
    return Booked(ctx.data.rows + 1)


def release(ctx: StepContext[Basket, Booked]) -> None:
    """Its compensation, in the compensating transition's transaction."""
    ctx.connection.execute(stock.delete().where(stock.c.run_id == ctx.instance_id))


def confirm(ctx: StepContext[Basket, Booked]) -> Booked:
    return Booked(ctx.data.rows + 1)


class Checkout(Saga[Basket, Booked]):
    name = "writers-checkout"
    new = State(initial=True)
    reserved = State()
    done = State(final=True)

    take = new.to(reserved).run(reserve, undo=release, transactional=True)
    confirm = reserved.to(done).run(confirm, read_only=True)


def store_at(path: Path | str, busy_timeout: float = 10.0) -> SqlStore:
    store = SqlStore(f"sqlite:///{path}", busy_timeout=busy_timeout)
    stock.create(store.engine, checkfirst=True)
    return store
