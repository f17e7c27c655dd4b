"""Celery tasks (the ``celery`` extra): one batch of a migration, a primary-key range of one model
and field, run on a worker of the project's Celery app.

Imported by the workers (the app's ``autodiscover_tasks()`` finds it, ``storage_migrate`` being
an installed app) and by ``migrate_storage --enqueue``; nothing else in the package imports
Celery but ``storage_migrate.celeryapp``. Importing it loads the app STORAGE_MIGRATE['CELERY_APP']
names, so that the task, sent from any process, goes to the project's broker.

A batch is idempotent: run again, it skips what its first run verified and committed. So the
task acknowledges its message only once it is done (``acks_late``), and a worker process lost
mid-batch (killed, out of memory) hands the message back to the queue for another delivery
(``reject_on_worker_lost``); a Redis broker also delivers again a message left unacknowledged
past its visibility timeout. Either way the rows end right, and the report that reaches the
caller is the last run's.
"""

from __future__ import annotations

import json
from typing import Any

from celery import shared_task

from .celeryapp import named_app
from .migrate.plan import PkRange
from .migrate.run import migrate_storage

# The project's app, before the task is made: a project that does not import its app at every
# start (it names it in the settings) still has the task bound to it, not to Celery's default.
named_app()


@shared_task(  # type: ignore[untyped-decorator]  # Celery has no type hints
    name="storage_migrate.migrate_batch",
    acks_late=True,
    reject_on_worker_lost=True,
)
def migrate_batch(
    to: str,
    source: str,
    model_label: str,
    field_name: str,
    pk_min: Any,
    pk_max: Any,
    *,
    dry_run: bool = False,
    workers: int | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    rewrite_checksums: bool = False,
    pending: bool = False,
) -> dict[str, Any]:
    """Migrate the rows of ``model_label``'s ``field_name`` whose primary key is between
    ``pk_min`` and ``pk_max`` (both included) from ``source`` to ``to``; return the batch's
    report in its JSON form."""
    report = migrate_storage(
        to=to,
        source=source,
        models=[f"{model_label}.{field_name}"],
        dry_run=dry_run,
        workers=workers,
        batch_size=batch_size,
        overwrite=overwrite,
        rewrite_checksums=rewrite_checksums,
        pending=pending,
        pk_range=PkRange(pk_min, pk_max),
    )
    try:
        # Through the JSON text: what a result backend stores is plain JSON, whatever a
        # problem's values are (report.to_dict() may hold a UUID).
        data: dict[str, Any] = json.loads(report.to_json())
        return data
    finally:
        report.close()
