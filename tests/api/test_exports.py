"""The public surface is deliberate: these names, and no others, are exported."""

from __future__ import annotations

import subprocess
import sys

import statesaga


def test_the_package_exports_exactly_these_names() -> None:
    assert sorted(statesaga.__all__) == sorted(
        [
            "AsyncEngine",
            "CancelNotAllowed",
            "ConcurrencyError",
            "ConnectionLost",
            "Definition",
            "DefinitionError",
            "DuplicateStart",
            "Engine",
            "EngineOverloaded",
            "EntityBusy",
            "ErrorInfo",
            "ErrorKind",
            "Event",
            "EventNotAllowed",
            "FencedOut",
            "ForkNotAllowed",
            "HistoryEntry",
            "HistoryKind",
            "InProcessLocks",
            "InputError",
            "InstanceNotFound",
            "InvalidOperation",
            "LeaseLost",
            "LocksUnavailable",
            "Migration",
            "MigrationEntry",
            "MigrationReport",
            "MissingResource",
            "NonRetryableError",
            "NotFound",
            "PayloadTooLarge",
            "ResolveNotAllowed",
            "Retry",
            "RetryNotAllowed",
            "Run",
            "Delivery",
            "DeliveryStatus",
            "InboxEntry",
            "Saga",
            "SagaNotRegistered",
            "SettingsError",
            "SqlLocks",
            "State",
            "StateSagaError",
            "Status",
            "StepContext",
            "Resources",
            "StepTimeout",
            "StoreBusy",
            "StoreError",
            "Transition",
            "Branch",
        ]
    )


def test_every_exported_name_resolves() -> None:
    for name in statesaga.__all__:
        assert getattr(statesaga, name) is not None, name


def test_every_error_derives_from_the_root() -> None:
    errors = [
        getattr(statesaga, n)
        for n in statesaga.__all__
        if n.endswith(
            (
                "Error",
                "Busy",
                "Out",
                "Lost",
                "Allowed",
                "Found",
                "Registered",
                "Timeout",
                "Start",
                "Operation",
                "Unavailable",
            )
        )
    ]
    assert errors
    assert all(issubclass(error, statesaga.StateSagaError) for error in errors)


def test_the_store_and_locks_protocols_load_no_sql_toolkit() -> None:
    code = (
        "import sys\n"
        "from statesaga.store import Store, InstanceRow\n"
        "from statesaga.locks import Locks, Lease, InProcessLocks\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy was imported'\n"
        "from statesaga.store import SqlStore\n"
        "from statesaga.locks import SqlLocks, AdvisoryLocks\n"
        "assert 'sqlalchemy' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
