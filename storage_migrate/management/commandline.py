"""What both management commands share: option types, exit status 2 for bad options, and a
check that an output path can be written before any work is done."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.core.management.color import Style

from ..errors import ConfigurationError, DatabaseLost, one_line
from ..report.base import SUMMARY, Report
from ..report.problems import EXIT_CONFIG
from ..shards import Shard, parse_shard
from ..stopping import Terminated, stop_at_safe_points
from .progress import Progress

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
R = TypeVar("R")


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


def non_negative_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {value}")
    return number


def shard_option(value: str) -> Shard:
    """--shard K/N (argparse names the option in its one line)."""
    try:
        return parse_shard(value)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_writable(path: Path, option: str) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CommandError(f"{option} {path} is a directory", returncode=EXIT_CONFIG)
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise CommandError(
            f"{option} {path}: folder {folder} does not exist or is not writable",
            returncode=EXIT_CONFIG,
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise CommandError(f"{option} {path} is not writable", returncode=EXIT_CONFIG)


class ExitTwoOnBadOptions(BaseCommand):
    """Bad options exit 2 also through call_command() (Django's parser says 1 there). The
    system checks do not run first: the commands check their own settings and say what is
    wrong in one line with exit 2 (a SystemCheckError would be exit 1 and many lines)."""

    requires_system_checks: list[str] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        def error(message: str) -> NoReturn:
            if parser.called_from_command_line:  # one line, as for every other usage error
                parser.exit(EXIT_CONFIG, f"{parser.prog}: error: {message}\n")
            raise CommandError(f"Error: {message}", returncode=EXIT_CONFIG)

        parser.error = error  # type: ignore[method-assign]
        return parser

    def run_from_argv(self, argv: list[str]) -> None:
        """With --traceback, Django re-raises a CommandError (exit 1): print its traceback, the
        error it was raised from included, and keep its exit status."""
        try:
            super().run_from_argv(argv)
        except CommandError as exc:  # only with --traceback: else Django has exited already
            self.stderr.write("".join(traceback.format_exception(exc)), ending="")
            sys.exit(exc.returncode)


def run_with_progress(
    command: BaseCommand,
    options: dict[str, Any],
    call: Callable[..., R],
    *,
    interrupted: str,
    on_interrupt: Callable[[Any], None] | None = None,
    on_config_error: Callable[[str], None] | None = None,
    batches: bool = False,
    **kwargs: Any,
) -> R:
    """Call the library with a progress display; a configuration error exits 2 with its one
    line, Ctrl-C exits 130 and SIGTERM 143 with ``interrupted``, neither with a traceback.
    ``on_interrupt`` gets the partial report of an interrupted run (to print and write it).
    With ``batches``, the progress moves a batch at a time (``on_batch``), not a row."""
    verbosity = int(options["verbosity"])
    progress = Progress(
        command,
        verbosity,
        enabled=not options["no_progress"],
        dry_run=bool(options.get("dry_run")),
    )
    handler = None
    if verbosity >= 3:  # debug: the library's decisions, row by row
        handler = logging.StreamHandler(cast(Any, command.stderr)._out)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("storage_migrate")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        with stop_at_safe_points():
            # The rows are counted only for a bar: a count is a scan of the table.
            on_start = progress.start if progress.want_bar else None
            each = {"on_batch": progress.batch} if batches else {"on_row": progress.row}
            return call(on_start=on_start, **each, **kwargs)
    except ConfigurationError as exc:  # chained: --traceback shows where it started
        if on_config_error is not None:  # a report file says it too, for a pipeline to show
            on_config_error(one_line(exc))
        raise CommandError(one_line(exc), returncode=EXIT_CONFIG) from exc
    except DatabaseLost as exc:  # mid-run: what was committed is in the partial report
        progress.close()
        report = getattr(exc, "report", None)
        if report is not None and on_interrupt is not None:
            on_interrupt(report)
        raise CommandError(one_line(exc), returncode=EXIT_CONFIG) from exc
    except KeyboardInterrupt as exc:
        progress.close()
        report = getattr(exc, "report", None)
        if report is not None and on_interrupt is not None:
            on_interrupt(report)
        status = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
        raise CommandError(interrupted, returncode=status) from exc
    finally:
        progress.close()
        if handler is not None:
            logging.getLogger("storage_migrate").removeHandler(handler)


def colour_style(
    command: BaseCommand, stream: OutputWrapper, options: dict[str, Any]
) -> Style | None:
    """Django's style for a stream that is a terminal, or any with --force-color; None with
    --no-color or for a pipe or file (command.style alone asks whether sys.stdout is one)."""
    if options.get("no_color") or not (options.get("force_color") or stream.isatty()):
        return None
    return command.style


def plain(text: str) -> str:
    """A style_func that leaves the text as it is (Django paints all of stderr ERROR)."""
    return text


def paint(style: Style | None, report: Report, tag: str, text: str) -> str:
    """A text report line in Django's colours: a problem that fails the run ERROR, one that
    needs a person's eye but passes (an orphan by default) WARNING; the summary SUCCESS for a
    clean, whole run, ERROR when the run fails, else (passing problems, interrupted) WARNING."""
    if style is None:
        return text
    if tag == SUMMARY:
        if report.exit_code:
            return str(style.ERROR(text))
        clean = not report.problems and not report.interrupted
        return str(style.SUCCESS(text) if clean else style.WARNING(text))
    return str(style.ERROR(text) if report.fails_on(tag) else style.WARNING(text))
