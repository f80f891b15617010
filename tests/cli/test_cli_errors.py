"""Every mistake a user makes ends in one or two lines naming it and the fix, never a traceback.

Exit status 1 for an error, 2 for a usage error (an option missing or unknown).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_helpers import CHECKOUT, LINEAR
from typer.testing import CliRunner

from statesaga.cli import app


def fails_clearly(result: object, *fragments: str, code: int = 1) -> str:
    """The one- or two-line error a command printed, checked for what it must say."""
    output: str = result.output  # type: ignore[attr-defined]
    assert result.exit_code == code, output  # type: ignore[attr-defined]
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert 1 <= len(lines) <= 2 or code == 2, output
    flat = " ".join(output.split())
    for fragment in fragments:
        assert fragment in flat, (fragment, output)
    return flat


def test_a_sqlite_file_in_a_folder_that_does_not_exist(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(app, ["list", "--db", "sqlite:///does/not/exist.db"])
    fails_clearly(result, "there is no store at does/not/exist.db", "pass --db")
    result = cli.invoke(app, ["start", LINEAR, "--db", "sqlite:///does/not/exist.db"])
    fails_clearly(result, "cannot open the SQLite database does/not/exist.db", "create the folder")
    assert not (tmp_path / "does").exists()


@pytest.mark.parametrize(
    "command",
    [["list"], ["show", "abc"], ["stats"], ["cleanup", "--older-than", "30d"], ["db", "upgrade"]],
)
def test_a_file_that_is_not_a_database(cli: CliRunner, tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "notes.db").write_text("shopping list: tea, mugs\n")
    result = cli.invoke(app, [*command, "--db", "sqlite:///notes.db"])
    fails_clearly(result, "notes.db is not a SQLite database", "pass --db")
    assert (tmp_path / "notes.db").read_text() == "shopping list: tea, mugs\n"


@pytest.mark.parametrize("command", [["list"], ["show", "abc"], ["stats"]])
def test_read_only_commands_never_create_a_database(
    cli: CliRunner, tmp_path: Path, command: list[str]
) -> None:
    result = cli.invoke(app, command)
    fails_clearly(result, "there is no store at statesaga.db", "statesaga config")
    result = cli.invoke(app, [*command, "--db", "sqlite:///missing.db"])
    fails_clearly(result, "there is no store at missing.db")
    assert list(tmp_path.iterdir()) == []


def test_a_database_without_the_stores_tables_is_not_given_them(
    cli: CliRunner, tmp_path: Path
) -> None:
    with sa.create_engine(f"sqlite:///{tmp_path / 'shop.db'}").begin() as connection:
        connection.execute(sa.text("CREATE TABLE carts (id TEXT)"))
    result = cli.invoke(app, ["list", "--db", "sqlite:///shop.db"])
    fails_clearly(result, "no current statesaga schema", "statesaga db upgrade")
    inspector = sa.inspect(sa.create_engine(f"sqlite:///{tmp_path / 'shop.db'}"))
    assert inspector.get_table_names() == ["carts"]


def test_a_postgresql_database_that_does_not_exist(cli: CliRunner, postgres_url: str) -> None:
    missing = sa.make_url(postgres_url).set(database="statesaga_no_such_database", query={})
    url = missing.render_as_string(hide_password=False)
    for command in (["list"], ["db", "upgrade"], ["start", LINEAR]):
        result = cli.invoke(app, [*command, "--db", url])
        fails_clearly(
            result,
            'the PostgreSQL server has no database "statesaga_no_such_database"',
            "createdb statesaga_no_such_database",
        )


def test_a_closed_port(cli: CliRunner) -> None:
    pytest.importorskip("psycopg")
    with socket.socket() as probe:  # a port nobody listens on: bound, then let go
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
    for command in (["list"], ["db", "upgrade"]):
        result = cli.invoke(app, [*command, "--db", url])
        fails_clearly(result, f"cannot connect to the database at 127.0.0.1:{port}", "start the")


def test_input_from_a_file_that_does_not_exist(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(app, ["start", LINEAR, "-i", "@nofile.json"])
    fails_clearly(result, "--input @nofile.json: cannot read nofile.json", "existing JSON file")
    result = cli.invoke(app, ["send", "paid", "--id", "x", "--payload", "@nofile.json"])
    fails_clearly(result, "--payload @nofile.json: cannot read nofile.json")
    assert list(tmp_path.iterdir()) == []


def test_input_from_a_file(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "order.json").write_text('{"order_id": "o-7"}')
    result = cli.invoke(app, ["start", LINEAR, "-i", "@order.json", "--json"])
    assert result.exit_code == 0, result.output
    assert '"order_id": "o-7"' in result.output


def test_an_unknown_revision(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(app, ["db", "upgrade", "--revision", "9999"])
    fails_clearly(result, "--revision '9999' is not a migration of the store", "head or one of")
    assert list(tmp_path.iterdir()) == []


def test_a_drawing_to_a_file_whose_extension_names_no_format(
    cli: CliRunner, tmp_path: Path
) -> None:
    result = cli.invoke(app, ["diagram", CHECKOUT, "-o", "x.jpg"])
    fails_clearly(result, "x.jpg")
    assert not (tmp_path / "x.jpg").exists()


def test_send_names_its_flags(cli: CliRunner) -> None:
    result = cli.invoke(app, ["send", "paid"])
    flat = fails_clearly(result, "--id ID", "--key KEY with --saga MODULE:ATTR", code=2)
    assert "instance_id" not in flat
    result = cli.invoke(app, ["send", "paid", "--id", "a", "--key", "b"])
    fails_clearly(result, "one of them", code=2)
    result = cli.invoke(app, ["send", "paid", "--key", "cart:1"])
    fails_clearly(result, "--key needs --saga MODULE:ATTR", code=2)


def test_bad_json_and_a_bad_status(cli: CliRunner) -> None:
    fails_clearly(cli.invoke(app, ["start", LINEAR, "-i", "{nope"]), "--input is not valid JSON")
    fails_clearly(cli.invoke(app, ["list", "--status", "done"]), "'done' is not a status")


def test_an_unknown_option_is_a_usage_error(cli: CliRunner) -> None:
    result = cli.invoke(app, ["list", "--saga-name", "x"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "--saga-name" in result.output


def test_an_unexpected_error_is_one_line_and_a_way_to_see_more(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from statesaga.cli import runs

    def broken(given: str | None) -> str | None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(runs, "saga_name", broken)
    result = cli.invoke(app, ["list"])
    fails_clearly(result, "unexpected ZeroDivisionError: division by zero", "STATESAGA_TRACEBACK=1")
    monkeypatch.setenv("STATESAGA_TRACEBACK", "1")
    result = cli.invoke(app, ["list"])
    assert isinstance(result.exception, ZeroDivisionError)
