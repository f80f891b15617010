"""The diff marks what changed between two versions, from Python, from git and from the CLI."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import attrs
import pytest
from typer.testing import CliRunner

from statesaga.cli import app
from statesaga.diagram import Change, DiagramError, Mode, definition_at, diff

V1 = """
from datetime import timedelta

import attrs

from statesaga import Saga, State


@attrs.frozen
class Cart:
    cart_id: str


@attrs.frozen
class Progress:
    done: bool = False


def validate_cart(ctx): ...
def reserve_inventory(ctx): ...
def release_inventory(ctx): ...
def create_order(ctx): ...
def cancel_order(ctx): ...


class Checkout(Saga[Cart, Progress]):
    name = "checkout"
    deadline = timedelta(seconds=60)
    new = State(initial=True)
    validated = State()
    reserved = State()
    ordered = State(final=True)
    validate = new.to(validated).run(validate_cart, read_only=True)
    reserve = validated.to(reserved).run(reserve_inventory, undo=release_inventory)
    order = reserved.to(ordered).run(create_order, undo=cancel_order)
"""

# v2: a fraud screen before reserving, the order becomes the pivot, a longer deadline
V2 = (
    V1.replace(
        "def create_order(ctx): ...",
        "def create_order(ctx): ...\ndef screen_for_fraud(ctx): ...",
    )
    .replace("    validated = State()\n", "    validated = State()\n    screened = State()\n")
    .replace(
        "    reserve = validated.to(reserved)",
        "    screen = validated.to(screened).run(screen_for_fraud, read_only=True)\n"
        "    reserve = screened.to(reserved)",
    )
    .replace("run(create_order, undo=cancel_order)", "run(create_order, pivot=True)")
    .replace("timedelta(seconds=60)", "timedelta(seconds=90)")
)


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A git repository whose package's saga was committed as V1, then changed to V2."""
    package = f"shop_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    saga_file = tmp_path / package / "checkout.py"
    saga_file.write_text(V1)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "--no-gpg-sign", "-m", "checkout v1")
    saga_file.write_text(V2)
    git(tmp_path, "commit", "-q", "--no-gpg-sign", "-am", "checkout v2")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path, package


def load(package: str) -> type:
    import importlib

    module = importlib.import_module(f"{package}.checkout")
    return module.Checkout  # type: ignore[no-any-return]


def test_the_diff_marks_added_removed_and_changed_parts(repo: tuple[Path, str]) -> None:
    _, package = repo
    new = load(package)
    old = definition_at(new, "HEAD~1")
    assert old.states.keys() == {"new", "validated", "reserved", "ordered"}
    changes = diff(old, new, since="HEAD~1")
    assert changes.mode is Mode.DIFF
    marks = {item.id: item.change for item in (*changes.nodes, *changes.edges) if item.change}
    assert marks == {
        "screened": Change.ADDED,
        "screen": Change.ADDED,
        "screened.compensated": Change.ADDED,
        "reserve": Change.CHANGED,
        "reserve.undo": Change.CHANGED,
        "order": Change.CHANGED,
        "ordered": Change.CHANGED,
    }
    assert changes.edge("reserve").notes == ("source validated \u2192 screened",)
    assert changes.edge("reserve.undo").notes == ("target validated \u2192 screened",)
    assert changes.edge("order").notes == ("now a pivot",)
    assert changes.node("ordered").notes == ("now after the pivot",)
    assert changes.node("validated").change is None
    assert changes.notes == (
        "changes since HEAD~1",
        "states +1 \u22120 ~1, edges +2 \u22120 ~3",
        "deadline 1 min \u2192 1.5 min",
    )
    assert changes.heading == "checkout v1"
    # cancel_order could never run in v1 (nothing follows the order), so no undo is removed
    assert "order.undo" not in {edge.id for edge in changes.edges}


def test_against_the_work_tree_head_is_the_last_commit(repo: tuple[Path, str]) -> None:
    _, package = repo
    new = load(package)
    assert definition_at(new, "HEAD").states.keys() == new.definition.states.keys()
    unchanged = diff(definition_at(new, "HEAD"), new)
    assert not any(item.change for item in (*unchanged.nodes, *unchanged.edges))


def test_diffs_of_versions_say_so_in_the_title() -> None:
    namespace: dict[str, object] = {}
    exec(compile(V1, "v1", "exec"), namespace)
    old = namespace["Checkout"]
    v2 = V2.replace('name = "checkout"', 'name = "checkout"\n    version = 2')
    exec(compile(v2, "v2", "exec"), namespace)
    new = namespace["Checkout"]
    assert diff(old, new).heading == "checkout v1 \u2192 v2"  # type: ignore[arg-type]


def test_the_cli_draws_the_change_since_a_revision(repo: tuple[Path, str]) -> None:
    _, package = repo
    result = CliRunner().invoke(
        app, ["diagram", f"{package}.checkout:Checkout", "--against", "HEAD~1", "-f", "mermaid"]
    )
    assert result.exit_code == 0, result.output
    assert "validated --> screened : + screen<br>screen_for_fraud" in result.stdout
    assert "reserved --> ordered : ~ order<br>PIVOT" in result.stdout
    assert "class screened added" in result.stdout


def test_the_cli_draws_the_change_between_two_sagas(repo: tuple[Path, str]) -> None:
    _, package = repo
    (Path.cwd() / package / "old.py").write_text(V1)
    result = CliRunner().invoke(
        app,
        ["diagram", f"{package}.checkout:Checkout", "--against", f"{package}.old:Checkout"],
    )
    assert result.exit_code == 0, result.output
    assert "changes since" in result.stdout
    assert "screen_for_fraud" in result.stdout


@pytest.mark.parametrize(
    ("revision", "message"),
    [
        ("no-such-revision", "cannot read"),
        ("HEAD~5", "cannot read"),
        ("--output=stolen", "is not a git revision"),
    ],
)
def test_a_revision_that_does_not_hold_the_file_is_a_clear_error(
    repo: tuple[Path, str], revision: str, message: str
) -> None:
    _, package = repo
    with pytest.raises(DiagramError, match=message):
        definition_at(load(package), revision)


def test_a_revision_without_the_class_or_that_does_not_load_is_a_clear_error(
    repo: tuple[Path, str],
) -> None:
    path, package = repo
    saga_file = path / package / "checkout.py"
    saga_file.write_text(V2.replace("class Checkout(", "class Renamed("))
    git(path, "commit", "-q", "--no-gpg-sign", "-am", "rename")
    saga_file.write_text(V2)
    new = load(package)
    with pytest.raises(DiagramError, match="has no saga class Checkout"):
        definition_at(new, "HEAD")
    saga_file.write_text(V2.replace("deadline =", "deadline = ("))
    git(path, "commit", "-q", "--no-gpg-sign", "-am", "broken")
    with pytest.raises(DiagramError, match="does not load"):
        definition_at(new, "HEAD")


def test_a_saga_outside_a_git_work_tree_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"loose_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "checkout.py").write_text(V1)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    with pytest.raises(DiagramError, match="not in a git work tree"):
        definition_at(load(package), "HEAD")


def test_a_saga_declared_outside_a_file_has_no_history() -> None:
    namespace: dict[str, object] = {}
    exec(compile(V1, "<string>", "exec"), namespace)
    with pytest.raises(DiagramError, match="not loaded from a file"):
        definition_at(namespace["Checkout"], "HEAD")  # type: ignore[arg-type]
    saga = namespace["Checkout"]
    assert isinstance(saga, type)
    built_by_hand = attrs.evolve(saga.definition, saga_class=None)  # type: ignore[attr-defined]
    with pytest.raises(DiagramError, match="has no class"):
        definition_at(built_by_hand, "HEAD")
