"""Checkouts waiting for 3-D Secure on version 1 move onto version 2 and finish there."""

from __future__ import annotations

from checkout_runs import open_shop

from definitions.checkout import CheckoutReceipt
from definitions.checkout.saga_v2 import CompleteCartV2
from statesaga import HistoryKind, Status
from statesaga.store import SqlStore


def test_waiting_checkouts_move_to_version_2_and_complete_on_it(db: str) -> None:
    store = SqlStore(db, pool_size=2, max_overflow=2, hot_connections=2)
    with open_shop(store) as checkouts:  # type: ignore[arg-type]
        engine = checkouts.shop.engine
        waiting = [checkouts.complete("card_3ds") for _ in range(2)]
        done = checkouts.complete("card_ok")
        assert {(r.status, r.state, r.version) for r in waiting} == {
            (Status.WAITING, "awaiting_payment", 1)
        }
        deadline = engine.store.get(waiting[0].id).deadline  # type: ignore[union-attr]

        engine.register(CompleteCartV2)
        dry = engine.migrate(CompleteCartV2, from_version=1, dry_run=True)
        assert sorted(e.instance_id for e in dry.moved) == sorted(r.id for r in waiting)
        assert checkouts.get(waiting[0].id).version == 1

        report = engine.migrate(CompleteCartV2, from_version=1)

        assert sorted(e.instance_id for e in report.moved) == sorted(r.id for r in waiting)
        assert done.id not in {e.instance_id for e in report.entries}  # it had ended
        moved = checkouts.get(waiting[0].id)
        assert (moved.version, moved.state, moved.status) == (2, "awaiting_3ds", Status.WAITING)
        assert moved.history[-1].kind is HistoryKind.MIGRATED
        assert engine.store.get(moved.id).deadline == deadline  # type: ignore[union-attr]

        # the customer finishes 3-D Secure: the webhook completes the checkout on version 2
        finished = checkouts.webhook(moved)
        assert (finished.status, finished.state, finished.version) == (
            Status.COMPLETED,
            "completed",
            2,
        )
        assert isinstance(finished.output, CheckoutReceipt)
        assert [h.kind for h in finished.history][-4:] == [
            HistoryKind.MIGRATED,
            HistoryKind.EVENT,
            HistoryKind.FORWARD,
            HistoryKind.FORWARD,
        ]
        # one abandons it: cancelled on version 2, its stock and payment are given back
        abandoned = engine.cancel(waiting[1].id).run
        assert (abandoned.status, abandoned.version) == (Status.COMPENSATED, 2)
        stock = checkouts.shop.stock("mug")
        assert stock.reserved == 4  # the two completed checkouts' mugs, none of the abandoned
