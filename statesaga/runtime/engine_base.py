"""What ``Engine`` and ``AsyncEngine`` expose of the ``Runtime`` they hold.

A thin base: the constructor, ``from_settings`` and the read-only attributes
both engines share. The work is done by the runtime's rooms; each engine adds
only its way of pumping the runtime's operations (plain calls or ``await``).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from statesaga.definition import Definition
from statesaga.locks.base import AsyncLocks, Locks
from statesaga.retry import Retry
from statesaga.run import HistoryEntry
from statesaga.runtime.leases import DEFAULT_MAX_IN_FLIGHT
from statesaga.runtime.limits import DEFAULT_MAX_PAYLOAD_BYTES
from statesaga.runtime.runtime import Runtime, settings_arguments
from statesaga.store.base import Store

if TYPE_CHECKING:
    from typing import Self

    from statesaga.context import Resources
    from statesaga.observability import Observer
    from statesaga.settings import Settings

__all__ = ["EngineBase"]


class EngineBase:
    """Holds a :class:`~statesaga.runtime.Runtime` (``runtime``) built from its arguments."""

    _asynchronous: ClassVar[bool] = False

    def __init__(
        self,
        database: str | Store | None = None,
        *,
        sagas: Iterable[type | Definition] = (),
        locks: Locks | AsyncLocks | None = None,
        lease_ttl: float = 30.0,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        max_inline_sleep: float = 5.0,
        default_deadline: float | None = None,
        default_retry: Retry | None = None,
        observer: Observer | None = None,
        resources: Iterable[object] = (),
        max_payload_bytes: int | None = DEFAULT_MAX_PAYLOAD_BYTES,
        max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        #: the runtime this engine pumps; ``runtime.recovery`` is what ``Worker`` uses
        self.runtime = Runtime(
            database,
            asynchronous=self._asynchronous,
            sagas=sagas,
            locks=locks,
            lease_ttl=lease_ttl,
            owner=owner,
            clock=clock,
            max_inline_sleep=max_inline_sleep,
            default_deadline=default_deadline,
            default_retry=default_retry,
            observer=observer,
            resources=resources,
            max_payload_bytes=max_payload_bytes,
            max_in_flight=max_in_flight,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        sagas: Iterable[type | Definition] = (),
        observer: Observer | None = None,
        resources: Iterable[object] = (),
        **overrides: Any,
    ) -> Self:
        """An engine configured by :class:`~statesaga.settings.Settings`.

        ``settings`` defaults to ``Settings.load()`` (environment, TOML); setting
        names given as ``overrides`` (``database_url=...``) win. The store is
        opened on ``database_url`` (in ``schema``), with Redis entity locks when
        ``redis_url`` is set, leases of ``lease_duration`` and ``default_deadline``.
        """
        from statesaga.settings import Settings

        settings = Settings.load(**overrides) if settings is None else settings.replace(**overrides)
        arguments = settings_arguments(settings, asynchronous=cls._asynchronous)
        return cls(**arguments, sagas=sagas, observer=observer, resources=resources)

    @property
    def store(self) -> Store:
        """The store runs are persisted in."""
        return self.runtime.store

    @property
    def locks(self) -> Locks | AsyncLocks | None:
        """The entity locks (``None``: the store's row lease is the only lock)."""
        return self.runtime.locks

    @property
    def lease_ttl(self) -> float:
        """Seconds a lease lasts (renewed while a step runs longer)."""
        return self.runtime.lease_ttl

    @property
    def owner(self) -> str:
        """This engine's name on the leases it takes."""
        return self.runtime.owner

    @property
    def clock(self) -> Callable[[], float]:
        """The engine's clock (epoch seconds)."""
        return self.runtime.clock

    @property
    def max_inline_sleep(self) -> float:
        """Retry delays up to this many seconds are slept in place."""
        return self.runtime.max_inline_sleep

    @property
    def default_deadline(self) -> float | None:
        """Seconds a run may take when neither the start nor the saga says."""
        return self.runtime.default_deadline

    @property
    def default_retry(self) -> Retry | None:
        """The retry policy of every step that declares none."""
        return self.runtime.default_retry

    @property
    def observer(self) -> Observer | None:
        """The observer told of runs, steps and lock waits."""
        return self.runtime.observer

    @property
    def resources(self) -> Resources:
        """What steps find in ``ctx.resources``."""
        return self.runtime.resources

    def register(self, *sagas: type | Definition) -> None:
        """Register saga classes (or definitions); several versions of one saga may coexist."""
        self.runtime.registry.register(*sagas)

    @property
    def definitions(self) -> builtins.list[Definition]:
        """Every registered definition."""
        return self.runtime.registry.definitions

    def history(self, instance_id: str) -> builtins.list[HistoryEntry]:
        """The run's persisted transitions, oldest first."""
        return self.runtime.reads.history(instance_id)

    def close(self) -> None:
        """Stop the lease keeper and close the store."""
        self.runtime.close()
