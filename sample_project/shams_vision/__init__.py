"""The sample site. Its Celery app (shams_vision/celery.py) is not imported here, as Celery's
documentation has it for Django, but where a task is sent: STORAGE_MIGRATE['CELERY_APP'] names
it, and `celery -A shams_vision worker` finds it. So a start that sends no task (every manage.py
command but migrate_storage --enqueue, the web processes) does not import Celery."""
