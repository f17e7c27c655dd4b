"""System checks of STORAGE_MIGRATE (storage_migrate.E001-E004), and metadata columns of the wrong
type refused before anything is written."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core import checks
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.db import models
from django.test.utils import isolate_apps

from core.models import FileManager
from storage_migrate import ConfigurationError, migrate_storage
from storage_migrate.conf import get_conf
from storage_migrate.targets import metadata_columns
from tests.helpers import s3_keys

ROW_COLUMNS = ("pk", "file", "bucket", "object_key", "file_size", "content_type", "checksum")


def ours() -> list[tuple[str, str]]:
    """(id, message) of every storage_migrate check message, after checking each has a hint."""
    found = [m for m in checks.run_checks() if str(m.id).startswith("storage_migrate.")]
    assert all(m.level == checks.ERROR and m.hint for m in found), found
    return [(str(m.id), m.msg) for m in found]


def ids() -> list[str]:
    return [code for code, _ in ours()]


def test_sample_settings_pass() -> None:
    assert ours() == []


def test_a_valid_mapping_passes(settings: Any) -> None:
    settings.STORAGE_MIGRATE = {
        "MODELS": ["core.FileManager", "testapp.Document.scan"],
        "METADATA_FIELDS": {
            "testapp.Document.scan": {"checksum": "md5_hex", "file_size": "bytes"},
            "core.FileManager": {"content_type": None},
        },
    }
    assert ours() == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["WORKERS"], "must be a dict, not list"),
        ({"WORKER": 3}, "Unknown STORAGE_MIGRATE key(s): WORKER (known: BATCH_SIZE,"),
    ],
)
def test_e001_shape_and_unknown_keys(settings: Any, value: Any, expected: str) -> None:
    settings.STORAGE_MIGRATE = value
    [(code, message)] = ours()
    assert code == "storage_migrate.E001"
    assert expected in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"WORKERS": 0}, "STORAGE_MIGRATE['WORKERS'] must be at least 1."),
        ({"MULTIPART_CHUNKSIZE": 1024}, "must be at least 5 MiB"),
        ({"ENGINE": "fast"}, "must be 'auto', 'native' or 'boto3'"),
        ({"BATCH_SIZE": "many"}, "wrong type"),
        ({"CELERY_APP": "celery_app"}, "must be the dotted path of the project's Celery app"),
        ({"CELERY_APP": 3}, "must be the dotted path of the project's Celery app"),
    ],
)
def test_e002_values_conf_refuses(settings: Any, value: Any, expected: str) -> None:
    settings.STORAGE_MIGRATE = value
    [(code, message)] = ours()
    assert code == "storage_migrate.E002"
    assert expected in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("core.Nope", "Unknown model 'core.Nope'"),
        ("core.FileManager.nope", "has no FileField 'nope' (its FileFields: file)"),
        ("testapp.Media", "has no FileField to migrate"),
        ("FileManager", "Bad model 'FileManager'"),
    ],
)
def test_e003_models(settings: Any, spec: str, expected: str) -> None:
    settings.STORAGE_MIGRATE = {"MODELS": ["core.FileManager", spec]}
    [(code, message)] = ours()
    assert code == "storage_migrate.E003"
    assert message.startswith("STORAGE_MIGRATE['MODELS']: ")
    assert expected in message


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({"core.Nope": {}}, "['core.Nope']: Unknown model 'core.Nope'"),
        ({"testapp.Document.nope": {}}, "has no FileField 'nope'"),
        ({"testapp.Document": {"checksum": "md5_hex"}}, "has several FileFields"),
        ({"core.FileManager": {"digest": "checksum"}}, "unknown role(s) digest"),
        ({"core.FileManager": {"checksum": "md5"}}, "'md5', which core.FileManager does not"),
        ({"core.FileManager": {"checksum": "file_size"}}, "a BigIntegerField: 'checksum' must"),
        ({"core.FileManager": {"bucket": "user"}}, "'bucket' to 'user', a ForeignKey"),
        ({"core.FileManager": {"checksum": "file_type"}}, "CharField(max_length=16)"),
        ({"core.FileManager": {"file_size": "checksum"}}, "must be an integer field"),
        ({"core.FileManager": {"file_size": "user"}}, "'file_size' to 'user', a ForeignKey"),
        ({"core.FileManager": {"object_key": "id"}}, "'object_key' to 'id', a"),
        ({"core.FileManager": {"content_type": "file"}}, "a FileField"),
        (["core.FileManager"], "must be a dict of"),
        ({"core.FileManager": ["checksum"]}, "must be a dict of"),
    ],
)
def test_e004_metadata_fields(settings: Any, mapping: Any, expected: str) -> None:
    settings.STORAGE_MIGRATE = {"METADATA_FIELDS": mapping}
    [(code, message)] = ours()
    assert code == "storage_migrate.E004"
    assert message.startswith("STORAGE_MIGRATE['METADATA_FIELDS']")
    assert expected in message


def test_a_bad_mapping_of_a_listed_model_is_reported_once(settings: Any) -> None:
    settings.STORAGE_MIGRATE = {
        "MODELS": ["core.FileManager"],
        "METADATA_FIELDS": {"core.FileManager": {"checksum": "file_size"}},
    }
    assert ids() == ["storage_migrate.E004"]


def test_several_problems_are_all_reported(settings: Any) -> None:
    settings.STORAGE_MIGRATE = {
        "MODELS": ["core.Nope", "testapp.Nope"],
        "METADATA_FIELDS": {"core.FileManager": {"bucket": "user"}, "x.Y": {}},
    }
    assert ids() == ["storage_migrate.E003"] * 2 + ["storage_migrate.E004"] * 2


def test_check_command_fails(settings: Any) -> None:
    settings.STORAGE_MIGRATE = {"METADATA_FIELDS": {"core.FileManager": {"bucket": "user"}}}
    with pytest.raises(SystemCheckError, match=r"storage_migrate\.E004"):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


def test_wrong_type_error_names_setting_role_column_and_type(settings: Any) -> None:
    settings.STORAGE_MIGRATE = {"METADATA_FIELDS": {"core.FileManager": {"checksum": "file_size"}}}
    with pytest.raises(ConfigurationError) as info:
        migrate_storage(to="s3", models=["core.FileManager"])
    assert str(info.value) == (
        "STORAGE_MIGRATE['METADATA_FIELDS']['core.FileManager'] maps 'checksum' to 'file_size', "
        "a BigIntegerField: 'checksum' must be a CharField or TextField (or a subclass) with "
        "max_length of at least 32."
    )


def test_columns_of_the_right_types_are_accepted(settings: Any) -> None:
    with isolate_apps("tests.testapp"):

        class Wide(models.Model):  # noqa: DJ008
            upload = models.FileField()
            digest = models.TextField()  # no max_length: any digest fits
            size = models.PositiveIntegerField(null=True)
            where = models.SlugField(max_length=3)
            key = models.TextField()
            mime = models.CharField(max_length=100)

            class Meta:
                app_label = "testapp"

        mapping = {
            "checksum": "digest",
            "file_size": "size",
            "bucket": "where",
            "object_key": "key",
            "content_type": "mime",
        }
        settings.STORAGE_MIGRATE = {"METADATA_FIELDS": {"testapp.Wide": mapping}}
        columns = metadata_columns(Wide, Wide._meta.get_field("upload"), get_conf())
    assert columns == {
        "checksum": "digest",
        "file_size": "size",
        "bucket": "where",
        "object_key": "key",
        "content_type": "mime",
    }


def test_columns_found_by_name_of_the_wrong_type_are_not_metadata(settings: Any) -> None:
    with isolate_apps("tests.testapp"):

        class Owner(models.Model):  # noqa: DJ008
            class Meta:
                app_label = "testapp"

        class Odd(models.Model):  # noqa: DJ008
            upload = models.FileField()
            checksum = models.CharField(max_length=16)  # too short for an MD5
            file_size = models.CharField(max_length=20)
            bucket = models.ForeignKey(Owner, on_delete=models.CASCADE)
            object_key = models.IntegerField()
            content_type = models.CharField(max_length=100)  # the one real metadata column

            class Meta:
                app_label = "testapp"

        columns = metadata_columns(Odd, Odd._meta.get_field("upload"), get_conf())
        assert columns == {"content_type": "content_type"}
        settings.STORAGE_MIGRATE = {"METADATA_FIELDS": {"testapp.Odd": {"file_size": "file_size"}}}
        with pytest.raises(Exception, match=r"maps 'file_size' to 'file_size', a CharField"):
            metadata_columns(Odd, Odd._meta.get_field("upload"), get_conf())


@pytest.fixture
def two_rows(db: None) -> list[tuple[Any, ...]]:
    for name in ("a.txt", "b.txt"):
        FileManager.objects.create(file=ContentFile(name.encode() * 10, name=name))
    return list(FileManager.objects.order_by("pk").values_list(*ROW_COLUMNS))


@pytest.mark.parametrize("role_column", [("checksum", "file_size"), ("bucket", "user")])
def test_migrate_storage_exits_two_and_writes_nothing(
    settings: Any, s3_bucket: str, two_rows: list[tuple[Any, ...]], role_column: tuple[str, str]
) -> None:
    role, column = role_column
    settings.STORAGE_MIGRATE = {"METADATA_FIELDS": {"core.FileManager": {role: column}}}
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("migrate_storage", "--to", "s3", stdout=out, stderr=io.StringIO())
    assert info.value.returncode == 2
    assert f"maps {role!r} to {column!r}" in str(info.value)
    assert out.getvalue() == ""
    assert s3_keys(s3_bucket) == []
    assert list(FileManager.objects.order_by("pk").values_list(*ROW_COLUMNS)) == two_rows


def test_verify_files_fix_metadata_exits_two_and_writes_nothing(
    settings: Any, two_rows: list[tuple[Any, ...]]
) -> None:
    FileManager.objects.update(checksum="", file_size=None)
    before = list(FileManager.objects.order_by("pk").values_list(*ROW_COLUMNS))
    settings.STORAGE_MIGRATE = {"METADATA_FIELDS": {"core.FileManager": {"file_size": "user"}}}
    with pytest.raises(CommandError) as info:
        call_command(
            "verify_files", "--storage", "local", "--fix-metadata", "--no-progress",
            stdout=io.StringIO(), stderr=io.StringIO(),
        )  # fmt: skip
    assert info.value.returncode == 2
    assert "maps 'file_size' to 'user', a ForeignKey" in str(info.value)
    assert list(FileManager.objects.order_by("pk").values_list(*ROW_COLUMNS)) == before
