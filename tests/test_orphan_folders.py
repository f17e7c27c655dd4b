"""--orphans under a callable upload_to: the settings name the folders to list (Wagtail's are
known); a bad setting is an error before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile

from storage_migrate import verify_files
from storage_migrate.checks import check_settings
from storage_migrate.errors import ConfigurationError
from tests.testapp.models import HashedFile

pytestmark = pytest.mark.django_db
HASHED = ["testapp.HashedFile"]


def orphans(report: Any) -> list[str]:
    return sorted(p.name for p in report.problems if p.kind == "orphan")


def test_a_callable_upload_to_is_listed_where_the_settings_say(
    media_root: Path, settings: Any
) -> None:
    kept = HashedFile.objects.create(file=ContentFile(b"kept", name="kept.bin"))
    stray = media_root / "hashed" / "nobody's.bin"
    stray.write_bytes(b"stray")
    (media_root / "elsewhere.bin").write_bytes(b"outside every folder named")

    unknown = verify_files(storage="local", models=HASHED, orphans=True, level="exists")
    assert orphans(unknown) == []  # a function's folder is not guessed

    settings.STORAGE_MIGRATE = {"ORPHAN_FOLDERS": {"testapp.HashedFile.file": ["hashed"]}}
    found = verify_files(storage="local", models=HASHED, orphans=True, level="exists")
    assert orphans(found) == ["hashed/nobody's.bin"]
    assert kept.file.name == "hashed/kept.bin"  # its own file is no orphan
    assert stray.exists()  # reported, never deleted


@pytest.mark.parametrize(
    ("folders", "says"),
    [
        ({"testapp.HashedFile.file": "hashed/"}, "maps to 'hashed/'"),
        ({"testapp.HashedFile.file": ["../up"]}, "'../up' is not a folder inside the storage"),
        ({"testapp.HashedFile": ["hashed/"]}, "is not 'app_label.Model.field'"),
        ({"testapp.HashedFile.nope": ["x/"]}, "has no FileField 'nope'"),
        (["hashed/"], "must be a dict"),
    ],
)
def test_a_bad_orphan_folders_setting_is_refused(
    settings: Any, folders: Any, says: str, media_root: Path
) -> None:
    settings.STORAGE_MIGRATE = {"ORPHAN_FOLDERS": folders}
    (error,) = check_settings()
    assert error.id == "storage_migrate.E005" and says in error.msg, error.msg
    with pytest.raises(ConfigurationError, match=says.replace("(", r"\(")):
        verify_files(storage="local", models=HASHED, orphans=True)
