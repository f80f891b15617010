"""The public surface is deliberate: these names, and no others, are exported."""

from __future__ import annotations

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
            "Event",
            "EventNotAllowed",
            "FencedOut",
            "HistoryEntry",
            "HistoryKind",
            "InProcessLocks",
            "InputError",
            "InstanceNotFound",
            "InvalidOperation",
            "LeaseLost",
            "LocksUnavailable",
            "MissingResource",
            "NonRetryableError",
            "NotFound",
            "PayloadTooLarge",
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
            "StoreError",
            "Transition",
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
