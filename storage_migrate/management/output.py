"""What the two commands print and write: the text in Django's colours, the report files (also
for a run that could not start or was interrupted), and a line per deleted source at -v 2."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError

from ..report import (
    EXIT_CONFIG,
    SUMMARY,
    MigrationReport,
    Problem,
    PurgeReport,
    Report,
    VerificationReport,
    format_bytes,
)
from .commandline import colour_style, paint, plain


def write_report(path: Path, write: Callable[[IO[str]], object], *, quiet: bool = False) -> None:
    """Write a report file, streamed. One that cannot be written (the disk filled up, the folder
    went away) is exit 2; with ``quiet`` (a run that could not start, whose line says why) it is
    left as it is."""
    try:
        with path.open("w", encoding="utf-8") as out:
            write(out)
            out.write("\n")
    except OSError as exc:
        if not quiet:
            raise CommandError(
                f"Could not write the report to {path}: {exc}", returncode=EXIT_CONFIG
            ) from None


def print_lines(
    command: BaseCommand, options: dict[str, Any], report: Report, lines: Iterable[tuple[str, str]]
) -> None:
    """Text lines, each tagged with what it is about, on stdout in Django's colours."""
    style = colour_style(command, command.stdout, options)
    for tag, text in lines:
        command.stdout.write(paint(style, report, tag, text))


def problem_lines(report: Report) -> Iterable[tuple[str, str]]:
    """-v 0: the problem lines alone."""
    return ((problem.kind, problem.line()) for problem in report.problems)


# --- migrate_storage --------------------------------------------------------------------------


def show_migration(
    command: BaseCommand,
    report: MigrationReport | PurgeReport,
    path: Path | None,
    options: dict[str, Any],
) -> None:
    """Write --report and print the summary: of the whole run, or of an interrupted one (also
    when the report could not be written). purge_source's report too."""
    written = None
    try:
        if path is not None:
            write_report(path, report.write_json)
            written = str(path)
    finally:
        if options["format"] == "json":
            command.stdout.write(report.to_json())
        elif int(options["verbosity"]) >= 1:
            print_lines(command, options, report, report.text_lines(report=written))
        else:
            print_lines(command, options, report, problem_lines(report))


def show_enqueued(
    command: BaseCommand, enqueued: Any, path: Path | None, options: dict[str, Any]
) -> None:
    """--enqueue without --wait: the batches sent and their task ids (--report: as JSON)."""
    document = json.dumps(enqueued.to_dict(), indent=2, ensure_ascii=False)
    if path is not None:
        write_report(path, lambda out: out.write(document))
    if options["format"] == "json":
        command.stdout.write(document)
    elif int(options["verbosity"]) >= 1:
        for _, line in enqueued.text_lines():
            command.stdout.write(line)


def migration_error(message: str, path: Path | None, options: dict[str, Any]) -> None:
    """The run could not start: --report says why, for a pipeline that shows it."""
    report = MigrationReport(
        source=options["source"] or "",
        destination=options["to"],
        dry_run=options["dry_run"],
        shard=None if options.get("shard") is None else str(options["shard"]),
        error=message,
    )
    write_error(report, path, "json")


def write_error(report: Report, path: Path | None, fmt: str) -> None:
    """A run that could not start: its report file says why (its line says it too)."""
    if path is not None:
        report.finished_at = report.started_at
        write_report(path, lambda out: out.write(report.to_format(fmt)), quiet=True)


def deletion_line(command: BaseCommand, options: dict[str, Any]) -> Callable[[Problem, int], None]:
    """At -v 2, a line on stderr per source deleted (in a dry run: that would be)."""
    verb = "would delete" if options["dry_run"] else "deleted"
    verbosity = int(options["verbosity"])

    def said(row: Problem, size: int) -> None:
        if verbosity >= 2:
            where = f"{row.model} pk={row.pk}"
            command.stderr.write(f"{verb:<17} {where} {row.name!r} ({format_bytes(size)})")

    return said


# --- purge_source -----------------------------------------------------------------------------


def purge_error(message: str, path: Path | None, options: dict[str, Any]) -> None:
    report = PurgeReport(
        source=options["source"],
        destination=options["verified_against"],
        dry_run=options["dry_run"],
        error=message,
    )
    write_error(report, path, "json")


# --- verify_files -----------------------------------------------------------------------------


def show_verification(
    command: BaseCommand, report: VerificationReport, output: Path | None, options: dict[str, Any]
) -> None:
    """Print the report, or write it to --output with the summary on stderr: of the whole run,
    or of an interrupted one."""
    verbosity = int(options["verbosity"])
    fmt = options["format"]
    if output is not None:
        report.text_limit = None  # a text file has every problem, as the other formats do
        write_report(output, lambda out: out.write(report.to_format(fmt)))  # never coloured
    elif fmt == "text":
        lines = report.text_lines() if verbosity >= 1 else problem_lines(report)
        print_lines(command, options, report, lines)
    else:
        command.stdout.write(report.to_format(fmt))  # a document for a program: not coloured
    # The summary is the text report's first line; beside any other report it is on stderr.
    if output is not None or (verbosity >= 1 and fmt != "text"):
        style = colour_style(command, command.stderr, options)
        summary = paint(style, report, SUMMARY, report.summary())
        command.stderr.write(summary, style_func=plain)  # not Django's red for all of stderr


def verification_error(message: str, output: Path | None, options: dict[str, Any]) -> None:
    """The run could not start: --output says why, in its format (a JUnit error case), so that
    CI shows it."""
    report = VerificationReport(
        storage=options["storage"] or "each field's storage",
        level=options["level"],
        sample=options["sample"],
        error=message,
    )
    write_error(report, output, options["format"])
