"""manage.py migrate_storage: copy every row's file to another storage, verified, then update it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, NoReturn, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser

from storage_migrate.errors import ConfigurationError
from storage_migrate.migration import RowResult, migrate_storage
from storage_migrate.report import EXIT_CONFIG, EXIT_PROBLEMS, MigrationReport, format_bytes

EXIT_INTERRUPTED = 130


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return number


def non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return number


def check_writable(path: Path) -> None:
    """Refuse a report path that cannot be written, before anything is copied."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CommandError(f"--report {path} is a directory", returncode=EXIT_CONFIG)
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise CommandError(
            f"--report {path}: folder {folder} does not exist or is not writable",
            returncode=EXIT_CONFIG,
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise CommandError(f"--report {path} is not writable", returncode=EXIT_CONFIG)


class Command(BaseCommand):
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
            "--workers", type=positive_int, help="Concurrent transfers (default: 16)."
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
            help="Delete each source file after its copy is verified and its row committed.",
        )
        parser.add_argument(
            "--rewrite-checksums",
            action="store_true",
            help="Store the recomputed MD5 where it disagrees with the row's checksum.",
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

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        """Bad options exit 2 also through call_command() (Django's parser says 1 there)."""
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        report_error = parser.error

        def error(message: str) -> NoReturn:
            if parser.called_from_command_line:
                report_error(message)
            raise CommandError(f"Error: {message}", returncode=EXIT_CONFIG)

        parser.error = error  # type: ignore[method-assign]
        return parser

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = int(options["verbosity"])
        report_path = Path(options["report"]) if options["report"] else None
        if report_path is not None:
            check_writable(report_path)
        progress = Progress(self, verbosity, enabled=not options["no_progress"])
        try:
            report = migrate_storage(
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
                on_row=progress.row,
                on_start=progress.start,
            )
        except ConfigurationError as exc:
            raise CommandError(str(exc), returncode=EXIT_CONFIG) from None
        except KeyboardInterrupt:
            raise CommandError(
                "Interrupted. Rows whose copies were verified are committed; run the same "
                "command again to finish.",
                returncode=EXIT_INTERRUPTED,
            ) from None
        finally:
            progress.close()

        if report_path is not None:
            try:
                report_path.write_text(report.to_json() + "\n", encoding="utf-8")
            except OSError as exc:
                self.render(report, options["format"], verbosity)
                raise CommandError(
                    f"Could not write the report to {report_path}: {exc}",
                    returncode=EXIT_CONFIG,
                ) from None
        self.render(report, options["format"], verbosity)
        if report.exit_code:
            raise CommandError(
                f"{len(report.problems)} problem(s); see the report.", returncode=EXIT_PROBLEMS
            )

    def render(self, report: MigrationReport, fmt: str, verbosity: int) -> None:
        if fmt == "json":
            self.stdout.write(report.to_json())
        elif verbosity >= 1:
            self.stdout.write(report.to_text())
        else:
            for problem in report.problems:
                self.stdout.write(problem.line())


class Progress:
    """A tqdm bar on stderr when it is a terminal (verbosity 1+); at -v 2, a line per row."""

    def __init__(self, command: BaseCommand, verbosity: int, *, enabled: bool) -> None:
        self.command = command
        self.verbosity = verbosity
        self.bar: Any = None
        self.copied_bytes = 0
        self.lines = verbosity >= 2
        self.want_bar = enabled and verbosity >= 1 and command.stderr.isatty() and not self.lines

    def start(self, total: int) -> None:
        if self.want_bar:
            from tqdm import tqdm

            stream: Any = cast(Any, self.command.stderr)._out
            self.bar = tqdm(total=total, unit="file", file=stream, dynamic_ncols=True)

    def row(self, result: RowResult) -> None:
        self.copied_bytes += result.bytes
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(format_bytes(self.copied_bytes), refresh=False)
        elif self.lines:
            row = result.row
            size = f" ({format_bytes(result.bytes)})" if result.bytes else ""
            self.command.stderr.write(
                f"{result.outcome:<17} {row.target.label} pk={row.pk} {row.name!r}{size}"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
