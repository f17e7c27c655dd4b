"""The sample project's setup: its packaging metadata, and make_sample_files doing what its help
says (awkward names kept, large files above the multipart threshold, a lost file on request)."""

from __future__ import annotations

import hashlib
import tomllib
import warnings
from io import StringIO
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from core.management.commands import make_sample_files
from core.models import FileManager
from tests.conftest import REPO

MiB = 1024 * 1024
AWKWARD = (" ", "é", "ñ", "+", "&", "%")


def test_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert not any(c.startswith("License ::") for c in project.get("classifiers", []))


def test_setuptools_reads_the_license_without_a_warning() -> None:
    pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml")
    distribution = pytest.importorskip("setuptools.dist").Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = pyprojecttoml.apply_configuration(distribution(), str(REPO / "pyproject.toml"))
    assert not [w for w in caught if "license" in str(w.message).lower()]
    assert dist.metadata.license_expression == "MIT"


def help_text() -> str:
    parser = make_sample_files.Command().create_parser("manage.py", "make_sample_files")
    return " ".join(parser.format_help().split())


def test_help_names_the_threshold_that_applies() -> None:
    text = help_text()
    assert "8 MiB" not in text
    assert "MULTIPART_THRESHOLD (64 MiB unless set)" in text
    assert "--missing" in text


@pytest.mark.django_db
def test_names_are_kept_large_files_are_above_the_threshold_and_one_is_lost(
    settings: Any, media_root: Any
) -> None:
    settings.STORAGE_MIGRATE = {**settings.STORAGE_MIGRATE, "MULTIPART_THRESHOLD": 6 * MiB}
    out = StringIO()
    call_command("make_sample_files", count=12, large=2, missing=1, stdout=out)
    assert "Created 12 files" in out.getvalue()
    assert "Then deleted the file of 1 of them" in out.getvalue()

    rows = list(FileManager.objects.order_by("pk"))
    assert len(rows) == 12
    names = [str(row.file.name) for row in rows]
    for char in AWKWARD:
        assert any(char in name.rsplit("/", 1)[1] for name in names), char
    for row in rows:
        assert row.file.name.endswith("/" + row.file_name)  # as uploaded, not get_valid_name()'s
        assert row.object_key == row.file.name
    assert [row.file_size > 6 * MiB for row in rows] == [True, True] + [False] * 10
    lost, kept = rows[-1], rows[:-1]
    assert not (media_root / lost.file.name).exists()
    assert not default_storage.exists(lost.file.name)
    for row in kept:
        data = (media_root / row.file.name).read_bytes()
        assert (len(data), hashlib.md5(data).hexdigest()) == (row.file_size, row.checksum)


@pytest.mark.django_db
def test_a_taken_name_gets_an_alternative_and_nothing_is_overwritten(media_root: Any) -> None:
    call_command("make_sample_files", count=3, stdout=StringIO())
    call_command("make_sample_files", count=3, stdout=StringIO())
    rows = list(FileManager.objects.order_by("pk"))
    assert len({row.file.name for row in rows}) == 6
    for row in rows:
        data = (media_root / row.file.name).read_bytes()
        assert hashlib.md5(data).hexdigest() == row.checksum


@pytest.mark.django_db
def test_ctrl_c_is_one_line_and_exit_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(row: FileManager, name: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(make_sample_files, "keep_name", interrupt)
    with pytest.raises(CommandError, match=r"^Interrupted after 0 of 5 files\.$") as raised:
        call_command("make_sample_files", count=5, stdout=StringIO())
    assert raised.value.returncode == 130


@pytest.mark.django_db
@pytest.mark.parametrize(
    "options", [{"large": 3, "missing": 3}, {"missing": -1}, {"large": 6}, {"count": -1}]
)
def test_impossible_counts_are_refused(options: dict[str, int]) -> None:
    with pytest.raises(CommandError, match="--large \\+ --missing <= --count"):
        call_command("make_sample_files", **{"count": 5, **options}, stdout=StringIO())
