"""What the runtime tells the world: log lines and observer calls, never the run's fate.

An observer hook that raises is logged and ignored; with no observer (the
default) no hook is called at all, so the hot path pays nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from statesaga.core import ErrorInfo, Next, Status
from statesaga.runtime.held import HeldRun

if TYPE_CHECKING:
    from statesaga.observability import Observer, StepTrace

__all__ = ["Reporter", "log", "log_extra"]

log = logging.getLogger("statesaga.engine")


def log_extra(run: HeldRun, step: str | None = None) -> dict[str, Any]:
    """The fields every log line about ``run`` carries (correlation id included)."""
    return {
        "instance_id": run.id,
        "saga": run.definition.name,
        "state": run.snapshot.state,
        "step": step,
        "correlation_id": run.correlation_id,
    }


class Reporter:
    """Logs and reports (to ``observer``, when there is one) what happens to runs."""

    def __init__(self, observer: Observer | None) -> None:
        # None (the default) skips every hook call: nothing to pay on the hot path
        self.observer = observer

    def started(self, run: HeldRun) -> None:
        """A run was started (its first transition committed)."""
        log.info("started %s %s", run.definition.name, run.id, extra=log_extra(run))
        if self.observer is not None:
            notify(
                self.observer.run_started,
                saga=run.definition.name,
                instance_id=run.id,
                correlation_id=run.correlation_id,
            )

    def trace(self, run: HeldRun, operation: str) -> str | None:
        """Begin tracing this engine call's drive of ``run``, if the observer traces runs.

        Returns the trace context a run being started stores (``None``: none).
        """
        if self.observer is None or run.trace is not None:
            return None
        try:
            run.trace = self.observer.trace_run(
                saga=run.definition.name,
                instance_id=run.id,
                correlation_id=run.correlation_id,
                operation=operation,
                trace_context=run.trace_context,
            )
        except Exception:
            log.exception("observer %s failed to trace a run", type(self.observer).__name__)
            return None
        return None if run.trace is None else run.trace.trace_context

    def end_trace(self, run: HeldRun, error: BaseException | None) -> None:
        """End the trace of ``run``'s drive (``error``: the drive raised it)."""
        trace = run.trace
        if trace is None:
            return
        run.trace = None
        snapshot = run.snapshot
        if error is not None:
            notify(trace.end, status=None, error=error)
        else:
            terminal = snapshot.status.is_terminal
            notify(trace.end, status=snapshot.status, error=snapshot.error if terminal else None)

    def step_trace(self, run: HeldRun, step: str, attempt: int, *, undo: bool) -> StepTrace | None:
        """The trace of a step's (or, ``undo``, a compensation's) attempt, if the run is traced."""
        if run.trace is None:
            return None
        try:
            return run.trace.step(step=step, attempt=attempt, undo=undo)
        except Exception:
            log.exception("observer %s failed to trace a step", type(self.observer).__name__)
            return None

    def lock_waited(self, key: str, seconds: float, *, acquired: bool, saga: str) -> None:
        """An entity lock was waited for (and taken, or not)."""
        if self.observer is not None:
            notify(
                self.observer.lock_waited, key=key, seconds=seconds, acquired=acquired, saga=saga
            )

    def transitions(self, run: HeldRun, nxt: Next) -> None:
        """The records of a committed transition, at debug level."""
        if log.isEnabledFor(logging.DEBUG):
            for record in nxt.records:
                log.debug(
                    "%s %s %s: %s -> %s",
                    run.definition.name,
                    run.id,
                    record.kind.value,
                    record.from_state,
                    record.to_state,
                    extra=log_extra(run, record.transition),
                )

    def step_failed(self, run: HeldRun, step: str, attempt: int, message: str) -> None:
        """A step's attempt failed."""
        log.warning(
            "step %s of %s %s failed (attempt %d): %s",
            step,
            run.definition.name,
            run.id,
            attempt,
            message,
            extra=log_extra(run, step),
        )

    def compensated(self, run: HeldRun, step: str, attempt: int) -> None:
        """A compensation succeeded."""
        log.info(
            "compensated %s of %s %s (attempt %d)",
            step,
            run.definition.name,
            run.id,
            attempt,
            extra=log_extra(run, step),
        )

    def compensation_failed(
        self, run: HeldRun, step: str, attempt: int, error: BaseException
    ) -> None:
        """A compensation's attempt failed."""
        log.warning(
            "compensation %s of %s %s failed (attempt %d): %s",
            step,
            run.definition.name,
            run.id,
            attempt,
            error,
            extra=log_extra(run, step),
        )

    def rejected(self, run: HeldRun, kind: str, event: str | None, reason: str | None) -> None:
        """An inbox entry was not accepted."""
        log.info(
            "%s %s of %s %s not accepted: %s",
            kind,
            event or "",
            run.definition.name,
            run.id,
            reason,
            extra=log_extra(run),
        )

    def connection_lost(self, run: HeldRun, step: str) -> None:
        """A transactional step's connection died; it runs again on a fresh one."""
        log.warning(
            "the database connection died under %s of %s %s; running it again on a "
            "fresh connection",
            step,
            run.definition.name,
            run.id,
            extra=log_extra(run, step),
        )

    def finished(self, run: HeldRun, now: float) -> None:
        """Log (and report) a run that just reached a terminal status."""
        snapshot = run.snapshot
        error = snapshot.error
        if snapshot.status is Status.COMPLETED:
            log.info("completed %s %s", run.definition.name, run.id, extra=log_extra(run))
        elif snapshot.status is Status.COMPENSATED:
            log.info(
                "compensated %s %s after %s",
                run.definition.name,
                run.id,
                "an error" if error is None else f"{error.type}: {error.message}",
                extra=log_extra(run, None if error is None else error.step),
            )
        else:
            log.error(
                "%s %s failed: %s; fix the cause, then `statesaga retry %s`",
                run.definition.name,
                run.id,
                "unknown error" if error is None else f"{error.type}: {error.message}",
                run.id,
                extra=log_extra(run, None if error is None else error.step),
            )
        if self.observer is not None:
            notify(
                self.observer.run_finished,
                saga=run.definition.name,
                instance_id=run.id,
                correlation_id=run.correlation_id,
                status=snapshot.status,
                error=error,
                started=run.created_at,
                finished=now,
            )

    def step_finished(
        self,
        run: HeldRun,
        step: str,
        attempt: int,
        started: float,
        error: ErrorInfo | None,
        *,
        undo: bool,
    ) -> None:
        """A step (or, ``undo``, a compensation) finished and its transition committed."""
        if self.observer is None:
            return
        hook = self.observer.compensation_finished if undo else self.observer.step_finished
        notify(
            hook,
            saga=run.definition.name,
            instance_id=run.id,
            correlation_id=run.correlation_id,
            step=step,
            attempt=attempt,
            started=started,
            finished=run.updated_at,
            error=error,
        )


def notify(hook: Callable[..., None], **details: Any) -> None:
    """Call an observer hook; its failure must not fail the run it reports."""
    try:
        hook(**details)
    except Exception:
        log.exception("observer %s failed", getattr(hook, "__qualname__", hook))
