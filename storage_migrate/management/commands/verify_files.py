"""manage.py verify_files: is every row's file where the app reads it, with its size and MD5?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...report.problems import DEFAULT_FAIL_ON, EXIT_CONFIG, EXIT_PROBLEMS, VERIFY_PROBLEMS
from ...verify import LEVELS
from ..commandline import ExitTwoOnBadOptions, check_writable, positive_int, run_with_progress

# The run, the reports and the storages' libraries (boto3) are imported by handle(): --help,
# and a usage error, start without them.

FORMATS = ("text", "json", "csv", "junit")


class Command(ExitTwoOnBadOptions, BaseCommand):
    help = (
        "Check that every row's file exists where the app reads it and matches the row's size "
        "and checksum; optionally list orphans. Exit status: 0 clean, 1 a problem of a "
        "--fail-on kind, 2 usage or configuration error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--storage",
            metavar="ALIAS",
            help="Where to look (a STORAGES alias). Default: each field's own storage.",
        )
        parser.add_argument(
            "--model",
            action="append",
            dest="models",
            metavar="app_label.Model[.field]",
            help="What to check (repeatable). Default: STORAGE_MIGRATE['MODELS'], else every "
            "model with a FileField.",
        )
        parser.add_argument(
            "--level",
            choices=LEVELS,
            default="checksum",
            help="exists; size; checksum (default: MD5 from the ETag or our metadata, reading "
            "the file only where they cannot prove it); deep (always read and hash).",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="A row without a stored checksum is a problem (unverifiable).",
        )
        parser.add_argument(
            "--orphans",
            action="store_true",
            help="Also list files below the fields' upload folders that no row points to.",
        )
        parser.add_argument(
            "--fix-metadata",
            action="store_true",
            help="Rewrite size, content type, bucket and object key columns from the storage, "
            "and fill empty checksums; a checksum that disagrees is never overwritten.",
        )
        parser.add_argument(
            "--sample", type=positive_int, metavar="N", help="Check N random rows per field."
        )
        parser.add_argument(
            "--format", choices=FORMATS, default="text", help="Report format (default: text)."
        )
        parser.add_argument(
            "--output",
            type=Path,
            metavar="PATH",
            help="Write the report to PATH instead of stdout; a summary line goes to stderr.",
        )
        parser.add_argument(
            "--fail-on",
            metavar="KINDS",
            default=",".join(DEFAULT_FAIL_ON),
            help="Comma-separated problem kinds that make the exit status 1 "
            f"(default: all but orphan; known: {', '.join(VERIFY_PROBLEMS)}).",
        )
        parser.add_argument("--workers", type=positive_int, help="Concurrent checks (default 32).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar on stderr.")

    def handle(self, *args: Any, **options: Any) -> None:
        from ...verify.run import verify_files
        from ..output import show_verification, verification_error

        output = Path(options["output"]) if options["output"] else None
        if output is not None:
            check_writable(output, "--output")
        fail_on = tuple(k.strip() for k in str(options["fail_on"]).split(",") if k.strip())
        if not fail_on:  # an empty list would never fail: a typo must not pass a pipeline
            raise CommandError(
                f"--fail-on needs at least one problem kind (known: {', '.join(VERIFY_PROBLEMS)})",
                returncode=EXIT_CONFIG,
            )
        interrupted = (
            "Interrupted; nothing was changed except the --fix-metadata columns already written."
            if options["fix_metadata"]
            else "Interrupted; nothing was changed."
        )
        report = run_with_progress(
            self,
            options,
            verify_files,
            interrupted=interrupted,
            storage=options["storage"],
            models=options["models"],
            level=options["level"],
            strict=options["strict"],
            orphans=options["orphans"],
            fix_metadata=options["fix_metadata"],
            sample=options["sample"],
            fail_on=fail_on,
            workers=options["workers"],
            on_interrupt=lambda partial: show_verification(self, partial, output, options),
            on_config_error=lambda message: verification_error(message, output, options),
        )
        show_verification(self, report, output, options)
        if report.exit_code:
            counts = report.problems.counts()
            failing = sum(counts[kind] for kind in report.fail_on)
            raise CommandError(
                f"{failing} problem(s) of a --fail-on kind.", returncode=EXIT_PROBLEMS
            )
