"""What the Mermaid text says; that Mermaid draws it as meant is checked by mermaid-cli
in ``test_diagram_render.py``."""

from __future__ import annotations

import attrs
from checkout_runs import open_shop

from definitions.checkout.saga import CompleteCart
from statesaga import Saga, State
from statesaga.diagram import diff, from_definition, markdown_section, overlay, to_mermaid
from statesaga.diagram.mermaid import mermaid_edges


def statements(text: str) -> list[str]:
    body = text.split("stateDiagram-v2\n", 1)[1]
    return [line.strip() for line in body.splitlines()]


def test_every_state_is_declared_with_its_name_before_any_transition() -> None:
    lines = statements(to_mermaid(from_definition(CompleteCart)))
    first_arrow = next(n for n, line in enumerate(lines) if "-->" in line)
    declared = [line for line in lines[:first_arrow] if line.startswith("state ")]
    assert declared[:3] == [
        'state "new" as new',
        'state "validated" as validated',
        ('state "reserved" as reserved'),
    ]
    assert 'state "awaiting_payment" as awaiting_payment' in declared
    assert 'state "compensated" as outcome_compensated' in declared
    assert lines[first_arrow] == "[*] --> new"


def test_edges_are_named_by_transition_with_the_step_beside_it() -> None:
    lines = statements(to_mermaid(from_definition(CompleteCart)))
    assert "validated --> reserved : reserve<br>reserve_inventory<br>transactional" in lines
    assert "reserved --> validated : reserve.undo<br>release_inventory" in lines
    assert (
        "authorized --> authorizing : approved.undo, paid.undo<br>void_payment" in lines
    )  # one edge for the two ways into authorized
    assert not any("reopen_cart" in line for line in lines)  # it can never run
    assert "awaiting_payment --> authorizing : no event in 45 s<br>compensate" in lines


def test_forward_edges_come_before_the_ones_leading_back() -> None:
    edges = mermaid_edges(from_definition(CompleteCart))
    kinds = [edge.kind.value for edge in edges]
    last_forward = max(n for n, k in enumerate(kinds) if k in ("step", "event"))
    first_back = min(n for n, k in enumerate(kinds) if k == "compensation")
    assert last_forward < first_back


def test_text_mermaid_would_read_is_written_as_entity_codes() -> None:
    with open_shop() as checkouts:
        run = checkouts.complete("card_declined")
    text = to_mermaid(overlay(from_definition(CompleteCart), run))
    assert "25.00 EUR#58; ask the customer" in text
    assert "\u2236" not in text  # no look-alike colons


def test_a_diff_marks_its_changes_in_words_and_colours() -> None:
    text = to_mermaid(diff(Shorter, CompleteCart))
    assert "reserved : added" in text
    assert "class " in text
    assert "classDef added" in text


def test_the_markdown_section_holds_the_chart_and_the_changes() -> None:
    section = markdown_section(diff(Shorter, CompleteCart, since="main"))
    assert section.startswith("### complete-cart v1\n")
    assert "```mermaid\n---\n" in section
    assert "- added state `reserved`" in section


@attrs.frozen
class In:
    n: int = 0


@attrs.frozen
class Data:
    n: int = 0


class Shorter(Saga[In, Data]):
    """A saga named like the checkout, with fewer states, to diff against."""

    name = "complete-cart"
    new = State(initial=True)
    validated = State()
    completed = State(final=True)
    validate = new.to(validated).run(lambda ctx: None, read_only=True)
    complete = validated.to(completed).run(lambda ctx: None, read_only=True)
