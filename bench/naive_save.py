#!/usr/bin/env python
"""The naive migration, as a contender: re-save each row's file through django-storages.

For every core.FileManager row, in primary-key order, one at a time: open the local file and
``S3Storage.save(name, file)`` on the sample project's ``s3`` alias (the bucket comes from
AWS_STORAGE_BUCKET_NAME, the server from AWS_S3_ENDPOINT_URL). Rows are not changed. Run with the
sample project's settings (DJANGO_SETTINGS_MODULE=shams_vision.settings, sample_project on
PYTHONPATH); prints the number of files saved.
"""

from __future__ import annotations

import sys

import django


def main() -> int:
    django.setup()
    from django.core.files.storage import storages

    from core.models import FileManager

    local, s3 = storages["local"], storages["s3"]
    saved = 0
    for name in FileManager.objects.order_by("pk").values_list("file", flat=True).iterator():
        with local.open(name, "rb") as source:
            stored = s3.save(name, source)
        if stored != name:  # the bucket is fresh: a new name means something else is wrong
            raise SystemExit(f"{name!r} was saved as {stored!r}")
        saved += 1
    print(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
