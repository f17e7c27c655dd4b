"""manage.py purge_source: days after a migration, delete the source files whose copies are
proven at the destination now."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...report.problems import EXIT_PROBLEMS
from ..commandline import ExitTwoOnBadOptions, check_writable, positive_int, run_with_progress

# The purge, the reports and the storages' libraries (boto3) are imported where they are used:
# --help starts without them.


def duration(value: str) -> float:
    from ...migrate.purge import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Command(ExitTwoOnBadOptions, BaseCommand):
    help = (
        "Delete from --from each file whose rows all record it at --verified-against, where its "
        "copy is proven, at this moment, to hold the same bytes (never on metadata anyone can "
        "write), the source is unchanged since it was copied, and every row sharing the file "
        "qualifies. Exit status: 0 clean, 1 some files were kept for a problem, 2 usage or "
        "configuration error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--from",
            dest="source",
            required=True,
            metavar="SOURCE",
            help="The storage alias to delete from (the old one: 'local' after --to s3).",
        )
        parser.add_argument(
            "--verified-against",
            required=True,
            metavar="ALIAS",
            help="The storage alias that must hold each file's proven copy (e.g. 's3').",
        )
        parser.add_argument(
            "--model",
            action="append",
            dest="models",
            metavar="app_label.Model[.field]",
            help="What to walk (repeatable). Default: STORAGE_MIGRATE['MODELS'], else every "
            "model with a FileField. Rows of other models that share a file keep it.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Prove and list what would go; nothing is deleted or moved.",
        )
        parser.add_argument(
            "--min-age",
            type=duration,
            default=0.0,
            metavar="DURATION",
            help="Only files whose copy at the destination was written at least this long ago "
            "(7d, 12h, 30m, or seconds; default: 0).",
        )
        parser.add_argument(
            "--quarantine",
            metavar="PREFIX",
            help="Move each file under PREFIX/ in the source storage instead of deleting it "
            "(for a bucket lifecycle rule, or a person, to clear).",
        )
        parser.add_argument(
            "--workers", type=positive_int, help="Files proven and deleted at once (default: 32)."
        )
        parser.add_argument(
            "--batch-size", type=positive_int, help="Rows read per database query (default: 500)."
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

    def handle(self, *args: Any, **options: Any) -> None:
        from ...migrate.purge import purge_source
        from ..output import purge_error, show_migration

        report_path = Path(options["report"]) if options["report"] else None
        if report_path is not None:
            check_writable(report_path, "--report")
        report = run_with_progress(
            self,
            options,
            purge_source,
            interrupted="Interrupted. Nothing is half deleted; run the same command again to "
            "finish.",
            source=options["source"],
            verified_against=options["verified_against"],
            models=options["models"],
            dry_run=options["dry_run"],
            min_age=options["min_age"],
            quarantine=options["quarantine"],
            batch_size=options["batch_size"],
            workers=options["workers"],
            on_interrupt=lambda partial: show_migration(self, partial, report_path, options),
            on_config_error=lambda message: purge_error(message, report_path, options),
        )
        show_migration(self, report, report_path, options)
        if report.exit_code:
            where = f"; the report has all of them: {report_path}" if report_path else ""
            raise CommandError(
                f"{len(report.problems)} file(s) kept for a problem{where}.",
                returncode=EXIT_PROBLEMS,
            )
