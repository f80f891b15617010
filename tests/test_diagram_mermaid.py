"""Mermaid output is a well-formed ``stateDiagram-v2`` that draws what the model holds.

There is no browser here, so the output goes through a parser: a small
grammar of the statements statesaga writes, whose tokens follow the lexer of
Mermaid's state diagrams (``stateDiagram.jison``): an id is a run of
characters other than ``:``, ``-``, ``{`` and whitespace, and must not be read
as a keyword; a description runs from ``:`` to the end of the line and holds
no ``:`` or ``;``; a line holding ``direction TB`` anywhere is a direction
statement; ``%%`` starts a comment; class statements take word characters.
On top of the grammar it checks what would make GitHub draw something wrong:
HTML that the sanitiser strips, entity codes, undefined classes, unknown states.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import attrs
import pytest
from checkout_runs import open_shop

from definitions.checkout.saga import CompleteCart
from statesaga import Engine, NonRetryableError, Saga, State, StepContext
from statesaga.diagram import EdgeKind, diff, from_definition, overlay, to_mermaid

# -- the grammar --------------------------------------------------------------------------

ID = r"[^:\s\-{]+"
DESCRIPTION = r"[^:;\n]+"
KEYWORDS = {"state", "note", "class", "classdef", "scale", "hide", "end", "style", "click", "as"}
STYLE_PROPERTIES = {"fill", "stroke", "color", "stroke-width", "stroke-dasharray"}

STATEMENTS = {
    "comment": re.compile(r"%%.*"),
    "direction": re.compile(r"direction (TB|BT|LR|RL)"),
    "classDef": re.compile(r"classDef (\w+) (\S+(?: \S+)*)"),
    "class": re.compile(r"class (\w+(?:,\w+)*) (\w+)"),
    "state": re.compile(rf'state "([^"]*)" as ({ID})'),
    "transition": re.compile(rf"({ID}|\[\*\]) --> ({ID}|\[\*\])(?: :({DESCRIPTION}))?"),
    "description": re.compile(rf"({ID}) :({DESCRIPTION})"),
}
DIRECTION_ANYWHERE = re.compile(r"direction\s+(TB|BT|RL|LR)", re.IGNORECASE)


class MermaidSyntaxError(AssertionError):
    pass


@dataclass
class Chart:
    title: str | None = None
    direction: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, list[str]] = field(default_factory=dict)
    transitions: list[tuple[str, str, str | None]] = field(default_factory=list)
    class_defs: dict[str, dict[str, str]] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)

    @property
    def states(self) -> set[str]:
        ends = {s for t in self.transitions for s in t[:2]}
        return (ends | set(self.labels) | set(self.descriptions)) - {"[*]"}

    def label(self, state: str) -> str:
        return self.labels.get(state, state)


def parse(text: str) -> Chart:
    """Parse statesaga's Mermaid output, or raise ``MermaidSyntaxError`` naming the line."""
    chart = Chart()
    lines = text.split("\n")
    if lines[-1] != "":
        raise MermaidSyntaxError("the text must end with a newline")
    lines.pop()
    start = 0
    if lines and lines[0] == "---":
        end = lines.index("---", 1)
        for line in lines[1:end]:
            key, _, value = line.partition(": ")
            if key != "title":
                raise MermaidSyntaxError(f"unknown front matter key {key!r}")
            chart.title = json.loads(value)  # a JSON string is a YAML double-quoted scalar
        start = end + 1
    if lines[start : start + 1] != ["stateDiagram-v2"]:
        raise MermaidSyntaxError(f"line {start + 1}: expected the stateDiagram-v2 header")
    for number, raw in enumerate(lines[start + 1 :], start + 2):
        line = raw.strip()
        if not line:
            continue
        if not raw.startswith("    "):
            raise MermaidSyntaxError(f"line {number}: statements are indented: {raw!r}")
        _statement(chart, line, number)
    _check_meaning(chart)
    return chart


def _statement(chart: Chart, line: str, number: int) -> None:
    for kind, pattern in STATEMENTS.items():
        match = pattern.fullmatch(line)
        if match is None:
            continue
        if kind != "comment" and "%%" in line:
            raise MermaidSyntaxError(f"line {number}: '%%' would start a comment: {line!r}")
        if kind != "direction" and DIRECTION_ANYWHERE.search(line):
            raise MermaidSyntaxError(f"line {number}: read as a direction statement: {line!r}")
        for text in match.groups()[1:] if kind in ("state", "description") else ():
            _check_text(text, number)
        match kind:
            case "direction":
                chart.direction = match.group(1)
            case "classDef":
                chart.class_defs[match.group(1)] = _style(match.group(2), number)
            case "class":
                for state in match.group(1).split(","):
                    chart.classes[_id(state, number)] = match.group(2)
            case "state":
                chart.labels[_id(match.group(2), number)] = match.group(1)
            case "transition":
                source, target, label = match.groups()
                if label is not None:
                    _check_text(label, number)
                chart.transitions.append(
                    (
                        _id(source, number),
                        _id(target, number),
                        None if label is None else label.strip(),
                    )
                )
            case "description":
                chart.descriptions.setdefault(_id(match.group(1), number), []).append(
                    match.group(2).strip()
                )
        return
    raise MermaidSyntaxError(f"line {number}: not a stateDiagram-v2 statement: {line!r}")


def _id(name: str, number: int) -> str:
    if name == "[*]":
        return name
    if name.lower() in KEYWORDS or name.lower().startswith("default"):
        raise MermaidSyntaxError(f"line {number}: the id {name!r} is read as a keyword")
    if not re.fullmatch(r"\w+", name, re.ASCII):
        raise MermaidSyntaxError(f"line {number}: class statements cannot name {name!r}")
    return name


def _check_text(text: str, number: int) -> None:
    if re.search(r"<[^>]*>|#\w+;|[<>]", text):
        raise MermaidSyntaxError(f"line {number}: HTML or an entity code in {text!r}")
    if not text.strip():
        raise MermaidSyntaxError(f"line {number}: empty text")


def _style(options: str, number: int) -> dict[str, str]:
    style = {}
    for option in options.split(","):
        prop, _, value = option.partition(":")
        if prop not in STYLE_PROPERTIES or not re.fullmatch(r"#[0-9a-f]{6}|\d+px|\d+ \d+", value):
            raise MermaidSyntaxError(f"line {number}: bad style {option!r}")
        style[prop] = value
    return style


def _check_meaning(chart: Chart) -> None:
    for state, name in chart.classes.items():
        if name not in chart.class_defs:
            raise MermaidSyntaxError(f"class {name!r} of {state!r} is not defined")
        if state not in chart.states:
            raise MermaidSyntaxError(f"class statement names unknown state {state!r}")
    for source, target, _ in chart.transitions:
        if target == "[*]" and source == "[*]":
            raise MermaidSyntaxError("[*] --> [*]")


# -- the parser itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "stateDiagram-v2\n    a -> b\n",
        "stateDiagram-v2\n    a --> b : x: y\n",
        "stateDiagram-v2\n    state --> b\n",
        "stateDiagram-v2\n    a --> b : go direction LR now\n",
        "stateDiagram-v2\n    a --> b : <b>bold</b>\n",
        "stateDiagram-v2\n    class a missing\n    a --> b\n",
        "flowchart TD\n    a --> b\n",
        "stateDiagram-v2\n    a --> b",
    ],
)
def test_the_parser_rejects_what_mermaid_would_misread(text: str) -> None:
    with pytest.raises(MermaidSyntaxError):
        parse(text)


def test_the_parser_reads_a_small_chart() -> None:
    chart = parse(
        '---\ntitle: "t"\n---\nstateDiagram-v2\n    direction TB\n    state "A b" as a\n'
        "    [*] --> a\n    a --> b : go\n    b : waits\n    classDef hot fill:#ff0000\n"
        "    class a,b hot\n"
    )
    assert chart.title == "t"
    assert chart.transitions == [("[*]", "a", None), ("a", "b", "go")]
    assert chart.label("a") == "A b"
    assert chart.descriptions == {"b": ["waits"]}
    assert chart.classes == {"a": "hot", "b": "hot"}


# -- statesaga's output ---------------------------------------------------------------------


def test_the_checkout_chart_is_well_formed_and_holds_every_state_step_and_compensation() -> None:
    drawing = from_definition(CompleteCart)
    chart = parse(to_mermaid(drawing))
    assert chart.title == "complete-cart v1 \u00b7 deadline 1 min"
    assert chart.direction == "TB"
    assert {chart.label(s) for s in chart.states} == {n.label for n in drawing.nodes}
    assert ("[*]", "new", None) in chart.transitions
    assert ("completed", "[*]", None) in chart.transitions
    labels = " | ".join(label or "" for _, _, label in chart.transitions)
    definition = CompleteCart.definition
    for t in definition.transitions.values():
        if t.step is not None:
            assert t.step.function_name in labels
            if t.step.compensation_name is not None:
                assert f"undo {t.step.compensation_name}" in labels
    ids = {"(compensated)": "outcome_compensated", "(failed)": "outcome_failed"}
    drawn = sorted((s, t) for s, t, _ in chart.transitions if "[*]" not in (s, t))
    modelled = sorted(
        (ids.get(e.source, e.source), ids.get(e.target, e.target)) for e in drawing.edges
    )
    assert drawn == modelled
    assert chart.classes["awaiting_payment"] == "waiting"
    assert chart.classes["completed"] == "completed"
    assert chart.classes["outcome_compensated"] == "compensated"
    assert chart.classes["outcome_failed"] == "failed"
    assert chart.class_defs["completed"]["fill"] != chart.class_defs["failed"]["fill"]
    assert chart.descriptions["awaiting_payment"] == [
        "waits for payment_succeeded",
        "timeout 45 s",
    ]


def test_guards_events_and_compensations_are_labelled() -> None:
    chart = parse(to_mermaid(from_definition(CompleteCart)))
    by_edge = {(s, t): label for s, t, label in chart.transitions}
    assert by_edge["authorizing", "awaiting_payment"] == "[payment_requires_action]"
    assert by_edge["authorizing", "authorized"] == (
        "[else] \u00b7 record_payment \u00b7 transactional"
    )
    assert by_edge["awaiting_payment", "authorized"] == (
        "on payment_succeeded \u00b7 record_payment \u00b7 transactional"
    )
    assert by_edge["reserved", "validated"] == "undo release_inventory"
    # both ways into authorized book the payment, so both have its undo, back where they came from
    assert by_edge["authorized", "authorizing"] == "undo void_payment"
    assert by_edge["authorized", "awaiting_payment"] == "undo void_payment"
    assert by_edge["awaiting_payment", "outcome_compensated"] == "no event in 45 s"


def test_an_overlay_and_a_diff_are_well_formed_and_marked() -> None:
    with open_shop() as checkouts:
        run = checkouts.complete("card_declined")
    chart = parse(to_mermaid(overlay(from_definition(CompleteCart), run)))
    by_edge = {(s, t): label or "" for s, t, label in chart.transitions}
    assert by_edge["reserved", "authorizing"].startswith("\u2717 authorize_payment")
    assert by_edge["reserved", "validated"].startswith("\u2713 undo release_inventory")
    assert chart.classes["outcome_compensated"] == "current"
    assert chart.classes["ordered"] == "muted"
    assert "PaymentDeclined" in str(chart.title)

    changed = parse(to_mermaid(diff(Shorter, CompleteCart)))
    assert changed.classes["reserved"] == "added"
    assert changed.classes["authorizing"] == "added"
    assert changed.descriptions["reserved"][-1] == "added"


@attrs.frozen
class In:
    n: int = 0


@attrs.frozen
class Data:
    n: int = 0


Ctx = StepContext[In, Data]


class Boom(NonRetryableError):
    pass


def make_awkward() -> type[Saga[In, Data]]:
    def act(ctx: Ctx) -> None:
        raise Boom('bad: input; #x; %% <b>direction TB</b> "quoted" `tick`')

    def undo(ctx: Ctx) -> None:
        return None

    class Awkward(Saga[In, Data]):
        name = "awkward: saga; #1"
        state = State(initial=True)
        default_place = State()
        note = State()
        étape = State(timeout=5)
        end = State(final=True)
        go = state.to(default_place).run(act, undo=undo)
        more = default_place.to(note).run(act, undo=undo)
        wait = note.to(étape).run(act, read_only=True)
        arrive = étape.to(end).on("direction_TB_arrived")

    return Awkward


def test_awkward_names_and_messages_stay_well_formed() -> None:
    awkward = make_awkward()
    drawing = from_definition(awkward)
    chart = parse(to_mermaid(drawing))
    assert {chart.label(s) for s in chart.states} == {n.label for n in drawing.nodes}
    assert len(chart.states) == len(drawing.nodes)
    with Engine("sqlite://") as engine:
        run = engine.get(engine.start(awkward, {}).id)
    parse(to_mermaid(overlay(drawing, run)))


class Shorter(Saga[In, Data]):
    """A saga named like the checkout, with fewer states, to diff against."""

    name = "complete-cart"
    new = State(initial=True)
    validated = State()
    completed = State(final=True)
    validate = new.to(validated).run(lambda ctx: None, read_only=True)
    complete = validated.to(completed).run(lambda ctx: None, read_only=True)


def test_every_kind_of_edge_has_a_label_or_is_an_outcome_path() -> None:
    drawing = from_definition(CompleteCart)
    chart = parse(to_mermaid(drawing))
    unlabelled = {(s, t) for s, t, label in chart.transitions if label is None}
    outcome_paths = {
        (e.source, "outcome_compensated") for e in drawing.edges if e.kind is EdgeKind.OUTCOME
    }
    assert unlabelled == {("[*]", "new"), ("completed", "[*]")} | outcome_paths
