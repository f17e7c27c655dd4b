"""migrate_storage on Celery: the run cut into batches, sent to the project's Celery app, and (if
asked) their reports gathered into one by polling their results.

Polling, not a chord: a chord's callback can be lost when a header task is retried or delivered
again, and a task that waits for other tasks can starve its own workers. Celery is imported only
inside these functions: without the ``celery`` extra, the rest of the package works as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import stopping
from ..errors import ConfigurationError
from ..report.base import SUMMARY, plural
from ..report.migration import MigrationReport
from ..report.problems import now
from ..rows import StartCallback
from .batches import BATCH_ROWS, Batch, split_batches
from .gather import Gathering
from .run import prepare

# Seconds between two rounds of asking the result backend about the batches not done yet.
POLL = 0.5

BatchCallback = Callable[[Batch, MigrationReport | None], None]


@dataclass
class Enqueued:
    """What --enqueue sent: one Celery task per batch, and what each batch will be asked."""

    source: str
    destination: str
    dry_run: bool
    pending: bool
    sent: list[tuple[Batch, str]] = field(default_factory=list)  # (batch, task id)
    interrupted: bool = False
    started_at: datetime = field(default_factory=now)
    app: Any = field(default=None, repr=False)  # the Celery app the batches were sent to

    @property
    def rows(self) -> int:
        return sum(batch.rows for batch, _ in self.sent)

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "migrate_storage",
            "enqueued": True,
            "source": self.source,
            "destination": self.destination,
            "dry_run": self.dry_run,
            "pending": self.pending,
            "interrupted": self.interrupted,
            "totals": {"batches": len(self.sent), "rows": self.rows},
            "batches": [{"task_id": task, **batch.to_dict()} for batch, task in self.sent],
        }

    def text_lines(self) -> Iterator[tuple[str, str]]:
        head = "Interrupted: sent" if self.interrupted else "Sent"
        yield (
            SUMMARY,
            f"{self.source} -> {self.destination}: {head} {plural(len(self.sent), 'batch')} "
            f"({plural(self.rows, 'row')}) to the Celery workers"
            + (" (dry run)" if self.dry_run else ""),
        )
        for batch, task in self.sent:
            yield SUMMARY, f"  {task}  {batch} ({plural(batch.rows, 'row')})"


def project_app(*, results: bool) -> Any:
    """The Celery app the Django project configured (storage_migrate.celeryapp), checked: its
    broker answers, and with ``results`` it has a result backend. ConfigurationError
    otherwise."""
    try:
        from kombu.exceptions import OperationalError

        from ..celeryapp import project_app as configured_app
    except ImportError:
        raise ConfigurationError(
            "--enqueue needs Celery: pip install 'django-storage-migrate[celery]'"
        ) from None
    app = configured_app()
    if app is None:
        raise ConfigurationError(
            "--enqueue needs the project's Celery app: name it in "
            "STORAGE_MIGRATE['CELERY_APP'] (such as 'proj.celery.app'), or import it in the "
            "project's __init__.py (see the README, Running on Celery)."
        )
    with app.connection_for_write() as connection:
        try:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=5)
        except OperationalError as exc:
            raise ConfigurationError(
                f"The Celery broker {connection.as_uri()} does not answer ({exc}): is it running?"
            ) from None
    if results:
        from celery.backends.base import DisabledBackend

        if isinstance(app.backend, DisabledBackend):
            raise ConfigurationError(
                "--wait needs a Celery result backend (CELERY_RESULT_BACKEND): the batches "
                "send their reports back through it."
            )
    return app


def enqueue_migration(
    *,
    to: str,
    source: str | None = None,
    models: list[str] | tuple[str, ...] | None = None,
    dry_run: bool = False,
    workers: int | None = None,
    batch_size: int | None = None,
    batch_rows: int = BATCH_ROWS,
    limit: int | None = None,
    overwrite: bool = False,
    rewrite_checksums: bool = False,
    create_bucket: bool = False,
    pending: bool = False,
    results: bool = True,
) -> Enqueued:
    """Check the run as migrate_storage() does (ConfigurationError before anything is sent), cut
    its rows into batches of ``batch_rows`` and send one ``migrate_batch`` task per batch to the
    project's Celery app. Ctrl-C (KeyboardInterrupt) stops the sending; the exception's
    ``report`` says what was sent."""
    if batch_rows < 1:
        raise ConfigurationError("batch_rows must be 1 or more")
    app = project_app(results=results)
    run = prepare(
        to=to,
        source=source,
        models=models,
        dry_run=dry_run,
        workers=workers,
        batch_size=batch_size,
        limit=limit,
        overwrite=overwrite,
        create_bucket=create_bucket,
        pending=pending,
    )
    from ..tasks import migrate_batch

    options = {
        "dry_run": dry_run,
        "workers": workers,
        "batch_size": batch_size,
        "overwrite": overwrite,
        "rewrite_checksums": rewrite_checksums,
        "pending": pending,
    }
    enqueued = Enqueued(run.src.alias, run.dst.alias, dry_run, pending, app=app)
    batches = split_batches(
        run.targets, batch_rows, limit=limit, pending_at=run.dst if pending else None
    )
    try:
        for batch in batches:
            stopping.check()
            args = [enqueued.destination, enqueued.source, batch.model, batch.field]
            result = app.send_task(
                migrate_batch.name, args=[*args, batch.pk_min, batch.pk_max], kwargs=options
            )
            enqueued.sent.append((batch, str(result.id)))
    except KeyboardInterrupt as exc:
        enqueued.interrupted = True
        exc.report = enqueued  # type: ignore[attr-defined]
        raise
    return enqueued


def gather_batches(
    enqueued: Enqueued,
    *,
    timeout: float | None = None,
    poll: float = POLL,
    on_start: StartCallback | None = None,
    on_batch: BatchCallback | None = None,
) -> MigrationReport:
    """Wait for the batches' results and gather their reports into one, as a run in one process
    would have made it. A batch whose task failed, or that has not finished after ``timeout``
    seconds, is an error problem naming its model and primary-key range. Ctrl-C
    (KeyboardInterrupt) stops the waiting, not the batches; the exception's ``report`` has
    those gathered until then."""
    from celery.result import AsyncResult

    gathering = Gathering(
        enqueued.source, enqueued.destination, dry_run=enqueued.dry_run, pending=enqueued.pending
    )
    gathering.report.started_at = enqueued.started_at  # the run's time includes the sending
    if on_start is not None:
        on_start(enqueued.rows)
    waiting = {task: batch for batch, task in enqueued.sent}
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while waiting:
            for task, batch in list(waiting.items()):
                result = AsyncResult(task, app=enqueued.app)
                if not result.ready():
                    continue
                part = None
                if result.successful():
                    part = gathering.add(batch, result.result)
                else:
                    error = result.result
                    gathering.fail(batch, f"its task failed ({type(error).__name__}: {error})")
                result.forget()  # read once: the backend need not keep it
                del waiting[task]
                if on_batch is not None:
                    on_batch(batch, part)
            if waiting and deadline is not None and time.monotonic() >= deadline:
                for batch in waiting.values():
                    gathering.fail(
                        batch, f"not finished after {timeout:g} s (it may still run on a worker)"
                    )
                break
            if waiting:
                stopping.sleep(poll)
    except KeyboardInterrupt as exc:
        exc.report = gathering.finish(interrupted=True)  # type: ignore[attr-defined]
        raise
    return gathering.finish()
