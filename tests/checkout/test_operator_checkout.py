"""Resolve and fork on the shop's checkout, on SQLite and PostgreSQL.

A checkout started by an engine that was not given the payment provider
fails at ``authorize`` and cannot cancel the payment either (both need the
provider): the run ends ``failed``, its two mugs still reserved. That is the
operator's case: repair by hand and resolve, or fork with the provider.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from definitions.checkout import CompleteCart, CompleteCartInput, Shop, SimulatedProvider, cart_key
from statesaga import Engine, ForkNotAllowed, HistoryKind, Status

# children first, so that the deletes respect the foreign keys
SHOP_TABLES = (
    "shop_orders",
    "shop_payments",
    "shop_reservations",
    "shop_cart_lines",
    "shop_carts",
    "shop_inventory",
)


@pytest.fixture
def shop(db: str) -> Iterator[Shop]:
    """A shop with ten mugs; on PostgreSQL its tables (beside the store's) emptied first."""
    with Shop.open(db, provider=SimulatedProvider()) as opened:
        with opened.database.begin() as connection:
            for table in SHOP_TABLES:
                connection.exec_driver_sql(f"DELETE FROM {table}")
        opened.add_product("mug", "Enamel mug", unit_price=1250, stock=10)
        yield opened


def failed_checkout(shop: Shop, db: str, *, keyed: bool) -> str:
    """A checkout of two mugs, run without the provider: failed, its mugs reserved."""
    cart_id = shop.create_cart({"mug": 2}, payment_method="card_ok")
    with Engine(db, sagas=[CompleteCart]) as bare:
        run = bare.start(
            CompleteCart, CompleteCartInput(cart_id), key=cart_key(cart_id) if keyed else None
        )
    assert run.status is Status.FAILED
    assert shop.stock("mug").reserved == 2
    return run.id


@pytest.mark.parametrize("step", ["validate", "reserve", "authorize"])
def test_a_failed_checkout_forks_from_each_step_it_took(shop: Shop, db: str, step: str) -> None:
    run_id = failed_checkout(shop, db, keyed=False)

    fork = shop.engine.fork(run_id, from_step=step, note="the provider is configured now")

    assert fork.status is Status.COMPLETED, fork.error
    assert fork.correlation_id == shop.engine.get(run_id).correlation_id
    history = shop.engine.get(fork.id).history
    assert (history[0].kind, history[0].transition, history[0].link) == (
        HistoryKind.FORKED_FROM,
        step,
        run_id,
    )
    ran = [h.transition for h in history if h.kind is HistoryKind.FORWARD]
    all_steps = ["validate", "reserve", "authorize", "approved", "order", "complete"]
    assert ran == all_steps[all_steps.index(step) :]
    cart_id = fork.input.cart_id
    assert shop.cart(cart_id).status == "completed"
    assert len(shop.orders(cart_id)) == 1
    # reserving again (from validate or reserve) reserves the mugs again: the fork runs what
    # it is told; the original's reservation is the operator's to release or keep
    assert shop.stock("mug").reserved == (4 if step != "authorize" else 2)


def test_a_failed_checkout_holding_its_cart_is_resolved_before_it_is_forked(
    shop: Shop, db: str
) -> None:
    run_id = failed_checkout(shop, db, keyed=True)
    before = shop.engine.store.dump()
    with pytest.raises(ForkNotAllowed, match="still failed and holds its entity key"):
        shop.engine.fork(run_id, from_step="authorize")
    assert shop.engine.store.dump() == before

    # the operator releases the reservation by hand, and says so
    cart_id = shop.engine.get(run_id).input.cart_id
    for reservation in shop.reservations(cart_id):
        assert reservation.quantity == 2
    resolved = shop.engine.resolve(
        run_id, outcome="compensated", note="released reservation of 2 mugs by hand", by="ops"
    )
    assert resolved.status is Status.COMPENSATED

    fork = shop.engine.fork(run_id, from_step="reserve")
    assert fork.status is Status.COMPLETED
    assert fork.key == cart_key(cart_id)
    assert shop.cart(cart_id).status == "completed"
    original = shop.engine.get(run_id)
    assert [h.kind for h in original.history][-2:] == [
        HistoryKind.RESOLVED,
        HistoryKind.FORKED_TO,
    ]
    assert original.history[-1].link == fork.id
