"""manage.py migrate_storage: copy every row's file to another storage, verified, then update it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...migrate.batches import BATCH_ROWS
from ..commandline import (
    ExitTwoOnBadOptions,
    check_writable,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_with_progress,
    shard_option,
)
from ..enqueue import on_celery, refuse_enqueue_options

if TYPE_CHECKING:
    from ...report.migration import MigrationReport

# The run, the reports and the storages' libraries (boto3, Celery) are imported by handle():
# --help, and a usage error, start without them.


class Command(ExitTwoOnBadOptions, BaseCommand):
    help = (
        "Copy each row's file from one storage to another under the same name, verify the copy "
        "(size and MD5), and only then update the row's metadata. Exit status: 0 clean, 1 some "
        "rows have problems, 2 usage or configuration error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--to",
            required=True,
            metavar="TARGET",
            help="Destination storage: 's3', 'local', or any alias in settings.STORAGES.",
        )
        parser.add_argument(
            "--from",
            dest="source",
            metavar="SOURCE",
            help="Source storage alias. Default: 'local' for --to s3, 's3' for --to local.",
        )
        parser.add_argument(
            "--model",
            action="append",
            dest="models",
            metavar="app_label.Model[.field]",
            help="What to walk (repeatable). Default: STORAGE_MIGRATE['MODELS'], else every "
            "model with a FileField.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Plan and report only: nothing written, changed or deleted.",
        )
        parser.add_argument(
            "--workers", type=positive_int, help="Concurrent transfers (default: 32)."
        )
        parser.add_argument(
            "--batch-size", type=positive_int, help="Rows read per database query (default: 500)."
        )
        parser.add_argument("--limit", type=non_negative_int, help="Stop after this many rows.")
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="Replace a destination object that holds different content (else: conflict).",
        )
        parser.add_argument(
            "--delete-source",
            action="store_true",
            help="Once the run is over, delete each source whose copy is verified and whose rows "
            "were all committed clean (local disk and S3 only; not with --limit, --pending or "
            "--shard).",
        )
        parser.add_argument(
            "--rewrite-checksums",
            action="store_true",
            help="Store the recomputed MD5 where it disagrees with the row's checksum.",
        )
        parser.add_argument(
            "--pending",
            action="store_true",
            help="Only rows whose bucket and object key columns do not already record them at "
            "the destination (the catch-up after the switch); a model without a bucket column "
            "is walked whole.",
        )
        parser.add_argument(
            "--until-stable",
            action="store_true",
            help="Repeat --pending passes (implied) until one copies nothing, for the end of a "
            "rolling deploy; exit 1 if files still arrive after --max-passes.",
        )
        parser.add_argument(
            "--max-passes",
            type=positive_int,
            default=10,
            metavar="N",
            help="With --until-stable: at most this many passes (default: 10).",
        )
        parser.add_argument(
            "--pause",
            type=non_negative_float,
            default=5.0,
            metavar="SECONDS",
            help="With --until-stable: the wait between two passes (default: 5).",
        )
        parser.add_argument(
            "--max-rate",
            type=positive_float,
            metavar="MB_PER_S",
            help="At most this many MB a second sent, received or copied inside the store, for "
            "the whole run (with --shard K/N, each shard takes its share).",
        )
        parser.add_argument(
            "--max-requests",
            type=positive_float,
            metavar="PER_S",
            help="At most this many S3 requests a second, for the whole run (with --shard K/N, "
            "each shard takes its share).",
        )
        parser.add_argument(
            "--shard",
            type=shard_option,
            metavar="K/N",
            help="Only the rows whose file hashes to shard K of N (K from 0, as "
            "JOB_COMPLETION_INDEX): N processes share one migration, each with its own K.",
        )
        parser.add_argument(
            "--create-bucket",
            action="store_true",
            help="Create the destination bucket if it does not exist.",
        )
        parser.add_argument(
            "--format",
            choices=["text", "json"],
            default="text",
            help="What to print on stdout (default: text).",
        )
        parser.add_argument(
            "--report", type=Path, metavar="PATH", help="Also write the JSON report to PATH."
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar on stderr.")
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="Cut the rows into batches and send them to the project's Celery app (the "
            "celery extra); print the batches' task ids, or with --wait their gathered report.",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="With --enqueue: wait for the batches and report as a run in one process does.",
        )
        parser.add_argument(
            "--batch-rows",
            type=positive_int,
            metavar="N",
            help=f"With --enqueue: rows per batch (one Celery task each; default: {BATCH_ROWS}).",
        )
        parser.add_argument(
            "--wait-timeout",
            type=non_negative_float,
            metavar="SECONDS",
            help="With --wait: batches not finished by then are reported as errors (default: "
            "no limit).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from ...report.problems import EXIT_PROBLEMS
        from ..output import show_migration

        report_path = Path(options["report"]) if options["report"] else None
        refuse_enqueue_options(options)
        if report_path is not None:
            check_writable(report_path, "--report")
        if options["enqueue"]:
            report = on_celery(self, options, report_path)
            if report is None:
                return
        else:
            report = self.run_here(options, report_path)
        show_migration(self, report, report_path, options)
        if report.exit_code:
            where = f"; the report has all of them: {report_path}" if report_path else ""
            raise CommandError(
                f"{len(report.problems)} problem(s){where}.", returncode=EXIT_PROBLEMS
            )

    def run_here(self, options: dict[str, Any], report_path: Path | None) -> MigrationReport:
        from ...migrate.run import migrate_storage
        from ..output import deletion_line, migration_error, show_migration

        return run_with_progress(
            self,
            options,
            migrate_storage,
            interrupted="Interrupted. Rows whose copies were verified are committed; run the "
            "same command again to finish.",
            to=options["to"],
            source=options["source"],
            models=options["models"],
            dry_run=options["dry_run"],
            workers=options["workers"],
            batch_size=options["batch_size"],
            limit=options["limit"],
            overwrite=options["overwrite"],
            delete_source=options["delete_source"],
            rewrite_checksums=options["rewrite_checksums"],
            create_bucket=options["create_bucket"],
            pending=options["pending"],
            until_stable=options["until_stable"],
            max_passes=options["max_passes"],
            pause=options["pause"],
            max_rate=options["max_rate"],
            max_requests=options["max_requests"],
            shard=options["shard"],
            on_deleted=deletion_line(self, options),
            on_interrupt=lambda partial: show_migration(self, partial, report_path, options),
            on_config_error=lambda message: migration_error(message, report_path, options),
        )
