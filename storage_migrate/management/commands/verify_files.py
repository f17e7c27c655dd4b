"""manage.py verify_files: is every row's file where the app reads it, with its size and MD5?"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...report.base import SUMMARY
from ...report.problems import DEFAULT_FAIL_ON, EXIT_CONFIG, EXIT_PROBLEMS, VERIFY_PROBLEMS
from ...report.verification import VerificationReport
from ...verify.run import LEVELS, verify_files
from ..commandline import (
    ExitTwoOnBadOptions,
    check_writable,
    colour_style,
    paint,
    plain,
    positive_int,
    run_with_progress,
)

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
            on_interrupt=lambda partial: self.finish(partial, output, options),
            on_config_error=lambda message: write_error(message, output, options),
        )
        self.finish(report, output, options)
        if report.exit_code:
            counts = report.problems.counts()
            failing = sum(counts[kind] for kind in report.fail_on)
            raise CommandError(
                f"{failing} problem(s) of a --fail-on kind.", returncode=EXIT_PROBLEMS
            )

    def finish(
        self, report: VerificationReport, output: Path | None, options: dict[str, Any]
    ) -> None:
        """Print the report, or write it to --output with the summary on stderr: of the whole
        run, or of an interrupted one."""
        verbosity = int(options["verbosity"])
        fmt = options["format"]
        if output is not None:
            report.text_limit = None  # a text file has every problem, as the other formats do
            try:
                output.write_text(render(report, fmt) + "\n", encoding="utf-8")  # not coloured
            except OSError as exc:  # the disk filled up, the folder went away
                raise CommandError(
                    f"Could not write the report to {output}: {exc}", returncode=EXIT_CONFIG
                ) from None
        elif fmt == "text" and verbosity == 0:  # errors only: the problem lines
            style = colour_style(self, self.stdout, options)
            for problem in report.problems:
                self.stdout.write(paint(style, report, problem.kind, problem.line()))
        elif fmt == "text":
            style = colour_style(self, self.stdout, options)
            for tag, text in report.text_lines():
                self.stdout.write(paint(style, report, tag, text))
        else:
            self.stdout.write(render(report, fmt))  # a document for a program: never coloured
        # The summary is the text report's first line; beside any other report it is on stderr.
        if output is not None or (verbosity >= 1 and fmt != "text"):
            style = colour_style(self, self.stderr, options)
            summary = paint(style, report, SUMMARY, report.summary())
            self.stderr.write(summary, style_func=plain)  # not Django's red for all of stderr


def write_error(message: str, output: Path | None, options: dict[str, Any]) -> None:
    """The run could not start: --output says why, in its format (a JUnit error case), so that
    CI shows it."""
    if output is None:
        return
    report = VerificationReport(
        storage=options["storage"] or "each field's storage",
        level=options["level"],
        sample=options["sample"],
        error=message,
    )
    report.finished_at = report.started_at
    with contextlib.suppress(OSError):
        output.write_text(render(report, options["format"]) + "\n", encoding="utf-8")


def render(report: VerificationReport, fmt: str) -> str:
    if fmt == "json":
        return report.to_json()
    if fmt == "csv":
        return report.to_csv().rstrip("\n")
    if fmt == "junit":
        return report.to_junit()
    return report.to_text()
