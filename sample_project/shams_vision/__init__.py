"""The sample site. Its Celery app is imported here, as Celery's documentation has it for Django,
so that it is the app of every process that loads the settings (manage.py migrate_storage
--enqueue sends to it); without the celery extra installed, the site runs without it."""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("celery") is not None:
    from .celery import app as celery_app

    __all__ = ["celery_app"]
