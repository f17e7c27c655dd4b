"""A Celery app that nothing imports at start, for the tests of STORAGE_MIGRATE['CELERY_APP']: an
in-memory broker, and not made Celery's current app (the suite's other tests keep the sample
site's)."""

from __future__ import annotations

from celery import Celery

app = Celery("named", broker="memory://", set_as_current=False)
app.conf.task_default_queue = "named-test"
NOT_AN_APP = "a string"
