"""Logging: every record of a run carries its identity; levels say how bad it is."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sagas
from sagas import Fatal, Order, journal

from statesaga import Engine, Status
from statesaga.logging import RUN_FIELDS, JsonFormatter, configure


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    journal.calls.clear()
    journal.fail.clear()
    journal.error.clear()


def run_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "statesaga.engine"]


def test_a_compensation_is_logged_with_the_correlation_id(
    caplog: pytest.LogCaptureFixture, db: str
) -> None:
    journal.fail["charge"] = -1
    journal.error["charge"] = Fatal
    with caplog.at_level(logging.DEBUG, logger="statesaga"), Engine(db) as engine:
        run = engine.start(sagas.Linear, Order("l-1"), correlation_id="order-7")
    assert run.status is Status.COMPENSATED
    (undone,) = [r for r in caplog.records if r.getMessage().startswith("compensated reserve")]
    assert undone.levelno == logging.INFO
    assert undone.correlation_id == "order-7"  # type: ignore[attr-defined]
    assert undone.instance_id == run.id  # type: ignore[attr-defined]
    assert undone.step == "reserve.undo"  # type: ignore[attr-defined]
    assert undone.saga == "linear"  # type: ignore[attr-defined]


def test_every_record_of_a_run_carries_its_fields_at_the_right_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal.fail["ship"] = 1  # one retry
    with caplog.at_level(logging.DEBUG, logger="statesaga"), Engine("sqlite://") as engine:
        run = engine.start(sagas.Linear, Order("l-2"), correlation_id="corr-2")
    assert run.status is Status.COMPLETED
    records = run_records(caplog)
    assert records
    for record in records:
        for field in RUN_FIELDS:
            assert hasattr(record, field), (field, record.getMessage())
        assert record.correlation_id == "corr-2"  # type: ignore[attr-defined]
    levels = {r.getMessage().split()[0]: r.levelno for r in records}
    assert levels["started"] == logging.INFO
    assert levels["completed"] == logging.INFO
    assert levels["step"] == logging.WARNING  # "step ship of linear ... failed (attempt 1)"
    transitions = [r for r in records if r.levelno == logging.DEBUG]
    assert len(transitions) >= 4  # start, reserve, charge, retry, ship


def test_a_failed_compensation_leaves_an_error_record(caplog: pytest.LogCaptureFixture) -> None:
    journal.fail["charge"] = -1
    journal.error["charge"] = Fatal
    journal.fail["undo_reserve"] = -1
    with caplog.at_level(logging.INFO, logger="statesaga"), Engine("sqlite://") as engine:
        run = engine.start(sagas.Linear, Order("l-3"), correlation_id="corr-3")
    assert run.status is Status.FAILED
    (error,) = [r for r in run_records(caplog) if r.levelno == logging.ERROR]
    assert "failed" in error.getMessage()
    assert "statesaga retry" in error.getMessage()
    assert error.step == "reserve.undo"  # type: ignore[attr-defined]
    assert error.correlation_id == "corr-3"  # type: ignore[attr-defined]


def test_the_json_formatter_writes_one_object_per_record_with_the_run_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="statesaga"), Engine("sqlite://") as engine:
        run = engine.start(sagas.Linear, Order("l-4"), correlation_id="corr-4")
    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(r)) for r in run_records(caplog)]
    started = next(line for line in lines if line["message"].startswith("started"))
    assert started["level"] == "INFO"
    assert started["logger"] == "statesaga.engine"
    assert started["instance_id"] == run.id
    assert started["correlation_id"] == "corr-4"
    assert started["saga"] == "linear"
    assert "time" in started
    assert "step" not in started  # None fields are left out


def test_configure_installs_json_lines_on_the_root_logger() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure(json_lines=True)
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        stream = io.StringIO()
        handler.setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("statesaga.worker").info("hello", extra={"saga": "s"})
        assert json.loads(stream.getvalue())["saga"] == "s"
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


def test_an_exception_is_part_of_the_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("statesaga").makeRecord(
            "statesaga", logging.ERROR, "", 0, "oops", (), exc_info=__import__("sys").exc_info()
        )
    line = json.loads(JsonFormatter(timestamps=False).format(record))
    assert "ValueError: boom" in line["exception"]


def test_the_worker_command_logs_json_lines_and_cleans_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    with Engine(url, clock=lambda: time.time() - 40 * 86400) as engine:
        old = engine.start(sagas.Linear, Order("old"))  # finished 40 days ago
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    command = [sys.executable, "-m", "statesaga.cli", "worker", "--saga", "sagas:Linear"]
    command += ["--db", url, "--poll", "0.05", "--log-json", "--retention-days", "30"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 20
        with Engine(url) as reader:
            while reader.store.get(old.id) is not None:
                assert time.monotonic() < deadline, "the worker did not clean up"
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    messages = [(line["logger"], line["message"]) for line in lines]
    assert any(m.startswith("deleted 1 finished run(s)") for _, m in messages), messages
    assert any(logger == "statesaga.worker" and "stopped" in m for logger, m in messages)
