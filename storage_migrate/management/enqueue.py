"""migrate_storage --enqueue: send the batches to Celery, and with --wait gather their reports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError

from ..migrate.batches import BATCH_ROWS
from ..report.problems import EXIT_CONFIG

if TYPE_CHECKING:
    from ..report.migration import MigrationReport


def refuse_enqueue_options(options: dict[str, Any]) -> None:
    """Options that --enqueue cannot honour, and those that only --enqueue uses: exit 2."""
    refusals = []
    if options["enqueue"]:
        if options["delete_source"]:
            refusals.append(
                "--delete-source is not for --enqueue (a source is deleted only once every row "
                "that shares it is done, which needs the whole table in one process): copy with "
                "--enqueue, then run purge_source"
            )
        if options["until_stable"]:
            refusals.append(
                "--until-stable is not for --enqueue: run --enqueue --wait --pending again until "
                "it copies nothing"
            )
        if options["shard"] is not None:
            refusals.append(
                "--shard is not for --enqueue (the batches already share the work among the "
                "workers): choose one"
            )
        ceilings = [f"--{o.replace('_', '-')}" for o in ("max_rate", "max_requests") if options[o]]
        if ceilings:
            refusals.append(
                f"{ceilings[0]} is not for --enqueue yet (the workers would each keep to the whole "
                "figure): limit the workers' concurrency instead"
            )
        if options["wait_timeout"] is not None and not options["wait"]:
            refusals.append("--wait-timeout goes with --wait")
    else:
        given = [f"--{o.replace('_', '-')}" for o in ("wait", "batch_rows") if options[o]]
        if options["wait_timeout"] is not None:
            given.append("--wait-timeout")
        if given:
            refusals.append(f"{', '.join(given)} go(es) with --enqueue")
    if refusals:
        raise CommandError(refusals[0] + ".", returncode=EXIT_CONFIG)


def on_celery(
    command: BaseCommand, options: dict[str, Any], report_path: Path | None
) -> MigrationReport | None:
    """Send the batches; without --wait, print them and return None; with --wait, return the
    gathered report (printed by the caller as a run's)."""
    from ..migrate.enqueue import enqueue_migration, gather_batches
    from .commandline import plain, run_with_progress
    from .output import migration_error, show_enqueued, show_migration

    wait = bool(options["wait"])
    enqueued = run_with_progress(
        command,
        {**options, "no_progress": True},  # sending is quick: no bar
        lambda on_row, on_start, **kwargs: enqueue_migration(**kwargs),
        interrupted="Interrupted while sending: the batches sent will run on the Celery workers "
        "(a run without --enqueue, or verify_files, tells what they did).",
        on_interrupt=lambda sent: show_enqueued(command, sent, report_path, options),
        on_config_error=lambda message: migration_error(message, report_path, options),
        to=options["to"],
        source=options["source"],
        models=options["models"],
        dry_run=options["dry_run"],
        workers=options["workers"],
        batch_size=options["batch_size"],
        batch_rows=options["batch_rows"] or BATCH_ROWS,
        limit=options["limit"],
        overwrite=options["overwrite"],
        rewrite_checksums=options["rewrite_checksums"],
        create_bucket=options["create_bucket"],
        pending=options["pending"],
        results=wait,
    )
    if not wait:
        show_enqueued(command, enqueued, report_path, options)
        return None
    if int(options["verbosity"]) >= 1 and options["format"] == "text":
        for _, line in list(enqueued.text_lines())[:1]:
            command.stderr.write(f"{line}; waiting for them", style_func=plain)
    report: MigrationReport = run_with_progress(
        command,
        options,
        lambda on_start, on_batch: gather_batches(
            enqueued, timeout=options["wait_timeout"], on_start=on_start, on_batch=on_batch
        ),
        interrupted="Interrupted while waiting: the batches not gathered go on running on the "
        "Celery workers; run the same command without --enqueue (or --pending) to finish and "
        "report.",
        on_interrupt=lambda partial: show_migration(command, partial, report_path, options),
        batches=True,
    )
    return report
