"""The site's Celery app: `celery -A shams_vision worker` (run in sample_project/) serves it.

Its settings are the Django settings starting with CELERY_ (broker and result backend from the
environment, Redis on 127.0.0.1:6379 by default); its tasks are found in the installed apps,
storage_migrate.tasks among them (migrate_storage --enqueue).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shams_vision.settings")

app = Celery("shams_vision")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
