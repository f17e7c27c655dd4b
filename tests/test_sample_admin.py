"""Files can be uploaded and browsed in the admin."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from core.models import FileManager

pytestmark = pytest.mark.django_db


def test_upload_and_browse_in_admin(
    admin_client: Client, storage_alias: str, default_storage_is: Any
) -> None:
    default_storage_is(storage_alias)
    upload = SimpleUploadedFile("notes from admin.txt", b"uploaded via admin", "text/plain")
    response = admin_client.post(
        "/admin/core/filemanager/add/",
        {"file": upload, "file_type": "DOCUMENT", "purpose": "ATTACHMENT"},
    )
    assert response.status_code == 302, response.content[:2000]
    row = FileManager.objects.get()
    assert row.file_name == "notes from admin.txt"
    assert row.checksum == hashlib.md5(b"uploaded via admin").hexdigest()

    listing = admin_client.get("/admin/core/filemanager/")
    assert listing.status_code == 200
    assert "notes from admin.txt" in listing.content.decode()
    detail = admin_client.get(f"/admin/core/filemanager/{row.pk}/change/")
    assert detail.status_code == 200
    assert row.checksum in detail.content.decode()
