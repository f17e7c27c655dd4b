"""The project's Celery app (the ``celery`` extra): the one STORAGE_MIGRATE['CELERY_APP'] names,
imported only where a task is sent; else the one the project's package imported at start
(Celery's pattern for Django, which makes every start of the project pay for importing Celery).

Imported by ``migrate_storage --enqueue`` and ``storage_migrate.tasks`` only."""

from __future__ import annotations

from typing import Any

from celery import Celery, _state
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import get_conf
from .errors import ConfigurationError


def named_app() -> Any | None:
    """The app STORAGE_MIGRATE['CELERY_APP'] names, imported (creating it makes it Celery's
    current app, so a ``shared_task`` sent from this process goes to its broker); None when the
    setting is not given. ConfigurationError when it names no Celery app."""
    try:
        name = get_conf().CELERY_APP
    except ImproperlyConfigured as exc:
        raise ConfigurationError(str(exc)) from exc
    if name is None:
        return None
    try:
        app = import_string(name)
    except ImportError as exc:
        raise ConfigurationError(
            f"STORAGE_MIGRATE['CELERY_APP'] is {name!r}, which cannot be imported ({exc})."
        ) from exc
    if not isinstance(app, Celery):
        raise ConfigurationError(
            f"STORAGE_MIGRATE['CELERY_APP'] is {name!r}, a {type(app).__name__}, not a Celery app."
        )
    return app


def project_app() -> Any | None:
    """The project's Celery app: the one named in the settings, else the current one if the
    project made it (at start, in its package); None when there is neither."""
    app = named_app()
    if app is not None:
        return app
    app = _state._tls.current_app or _state.default_app
    # None, or Celery's own fallback (named 'default', without the fix-ups, Django's among
    # them, that an app the project creates has): no app was made by the project.
    if app is None or (app.main == "default" and not app.fixups):
        return None
    return app
