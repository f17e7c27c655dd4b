"""ProblemLog: a run's problems in bounded memory, spilled to a temporary file, all rendered."""

from __future__ import annotations

import gc
import json
import os
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path
from uuid import UUID

import pytest

from storage_migrate.report import MigrationReport, Problem, ProblemLog, VerificationReport
from storage_migrate.report import problems as report_module

MiB = 1024 * 1024
UID = UUID("12345678-1234-5678-1234-567812345678")


@pytest.fixture
def small_memory(monkeypatch: pytest.MonkeyPatch) -> int:
    """Keep only 3 problems in memory, so a handful of problems already spill."""
    monkeypatch.setattr(report_module, "MEMORY_PROBLEMS", 3)
    return 3


def problem(i: int, kind: str = "missing", **extra: object) -> Problem:
    values: dict[str, object] = {
        "kind": kind,
        "model": "testapp.Document",
        "field": "file",
        "pk": i,
        "name": f"docs/report-{i:06}.pdf",
        "detail": "File not found at the source",
        **extra,
    }
    return Problem(**values)


@pytest.mark.slow  # tracemalloc makes it take about 15 s
def test_200_000_problems_stay_in_bounded_memory_and_all_are_written(tmp_path: Path) -> None:
    n = 200_000
    kinds = ("missing", "conflict", "error", "checksum_mismatch")
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        report = MigrationReport(source="local", destination="s3")
        for i in range(n):
            report.problems.append(
                problem(i, kinds[i % 4], expected="d41d8cd98f00b204e9800998ecf8427e", actual=i)
            )
        grown = tracemalloc.get_traced_memory()[1] - base
        assert grown < 16 * MiB, f"appending {n} problems took {grown / MiB:.1f} MiB"

        assert len(report.problems) == n
        assert report.problems.counts() == Counter({k: n // 4 for k in kinds})
        assert report.totals["problems"] == n
        assert report.exit_code == 1
        assert report.problems_phrase() == (
            "200000 problems (50000 checksum_mismatch, 50000 conflict, 50000 error, 50000 missing)"
        )

        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        assert sum(1 for _ in report.problems) == n
        with (tmp_path / "report.json").open("w", encoding="utf-8") as out:
            report.write_json(out)
        grown = tracemalloc.get_traced_memory()[1] - base
        assert grown < 16 * MiB, f"iterating and writing the JSON took {grown / MiB:.1f} MiB"
    finally:
        tracemalloc.stop()

    with (tmp_path / "report.json").open(encoding="utf-8") as written:
        pks = [int(line.split(":")[1].rstrip(",\n")) for line in written if '    "pk": ' in line]
    assert pks == list(range(n))


def test_names_and_values_round_trip_through_the_spill_file(small_memory: int) -> None:
    originals = [
        problem(1, name="nul\x00byte.txt"),
        problem(2, name="lone \udcff surrogate"),
        problem(3, name="emoji \U0001f600 and \u00e9"),
        problem(4, name="tab\tnewline\nescape\x1b del\x7f \u2028", pk="slug-pk"),
        problem(5, name="\udcff\x00\U0001f600", pk=UID, expected=None, actual=None),
        problem(6, pk=None, kind="orphan", expected=12, actual="0" * 32),
        problem(7, pk=(1, "a"), expected=True, actual=1.5),
        problem(8, name='quote " and \\ backslash', expected=2**70, actual=-1),
    ]
    log = ProblemLog(originals)
    assert log.path is not None  # most of them live only in the file

    back = list(log)
    assert back == originals
    assert [type(p.pk) for p in back] == [int, int, int, str, UUID, type(None), tuple, int]
    assert [(type(p.expected), type(p.actual)) for p in back[5:]] == [
        (int, str),
        (bool, float),
        (int, int),
    ]
    assert Path(log.path).read_bytes().isascii()


def test_every_rendering_streams_every_problem_as_a_list_would(small_memory: int) -> None:
    originals = [
        problem(1, name="a\x00b"),
        problem(2, kind="orphan", pk=None, name="stray \udcff.bin", expected=5),
        problem(3, kind="checksum_mismatch", pk=UID, expected="aa", actual="bb"),
        problem(4, name="\U0001f600.png"),
        problem(5, kind="orphan", pk=None, name="other.bin"),
    ]
    report = VerificationReport(storage="s3", level="checksum")
    report.problems.extend(originals)
    expected = report.to_dict()
    assert expected["problems"] == [p.to_dict() for p in originals]
    assert report.to_json() == json.dumps(expected, indent=2, ensure_ascii=False, default=str)
    lines = report.to_text().splitlines()
    assert lines[1:] == [
        "missing (2):",
        originals[0].line(),
        originals[3].line(),
        "checksum_mismatch (1):",
        originals[2].line(),
        "orphan (2):",
        originals[1].line(),
        originals[4].line(),
    ]
    assert len(report.to_csv().splitlines()) == 1 + len(originals)
    assert report.to_junit().count("<failure ") == len(originals)
    assert (report.orphans, report.exit_code) == (2, 1)


def test_json_of_a_report_without_problems_is_unchanged() -> None:
    report = MigrationReport(source="local", destination="s3")
    assert report.to_json() == json.dumps(
        report.to_dict(), indent=2, ensure_ascii=False, default=str
    )
    assert json.loads(report.to_json())["problems"] == []


def test_only_orphans_count_without_failing_verification() -> None:
    report = VerificationReport(storage="s3", level="exists")
    report.problems.extend(problem(i, kind="orphan", pk=None) for i in range(3))
    assert (report.orphans, report.totals["problems"], report.exit_code) == (3, 3, 0)


def test_order_counts_slices_and_equality(small_memory: int) -> None:
    originals = [problem(i, kind=("missing", "error")[i % 2]) for i in range(10)]
    log = ProblemLog()
    assert not log
    assert log == []
    assert log.counts() == Counter()
    assert list(log) == []
    assert log.path is None  # nothing spilled, no file

    log.extend(originals[:4])
    for p in originals[4:]:
        log.append(p)
    assert log
    assert len(log) == 10
    assert list(log) == originals
    assert log == originals
    assert log == ProblemLog(originals)
    assert log != originals[:-1]
    assert log != originals[::-1]
    assert log != [*originals[:-1], problem(99)]
    assert (len(log), log) != (10, [])
    assert log.counts() == Counter(missing=5, error=5)
    assert log[0] == originals[0]
    assert log[7] == originals[7]
    assert log[-1] == originals[-1]
    assert log[2:6] == originals[2:6]
    assert log[::3] == originals[::3]
    assert log[::-2] == originals[::-2]
    assert log[8:2:-1] == originals[8:2:-1]
    assert log[20:] == []
    with pytest.raises(IndexError):
        log[10]
    with pytest.raises(IndexError):
        log[-11]
    assert log.index(originals[6]) == 6
    assert originals[9] in log
    assert repr(log).startswith("ProblemLog([Problem(") and "7 more" in repr(log)

    log.extend(log)  # as a list would: the items once more, not forever
    assert list(log) == originals + originals


def test_spill_file_is_removed_when_the_report_is_collected(small_memory: int) -> None:
    report = MigrationReport(source="local", destination="s3")
    report.problems.extend(problem(i) for i in range(5))
    path = report.problems.path
    assert path is not None and os.path.exists(path)
    assert os.path.dirname(path) == tempfile.gettempdir()

    del report
    gc.collect()
    assert not os.path.exists(path)


def test_spill_file_is_removed_on_close(small_memory: int) -> None:
    report = MigrationReport(source="local", destination="s3")
    report.problems.extend(problem(i) for i in range(5))
    path = report.problems.path
    assert path is not None and os.path.exists(path)

    report.close()
    assert not os.path.exists(path)
    assert (len(report.problems), report.exit_code) == (5, 1)  # the counts stay
    with pytest.raises(ValueError, match="closed"):
        list(report.problems)
    with pytest.raises(ValueError, match="closed"):
        report.problems.append(problem(6))
