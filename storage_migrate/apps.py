from typing import Any

from django.apps import AppConfig


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    # The checks' module is imported when the checks run, not at every start (a --help).
    from .checks import check_settings

    return check_settings(app_configs, **kwargs)


def check_digest_columns(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from .checks import check_digest_columns

    return check_digest_columns(app_configs, **kwargs)


class StorageMigrateConfig(AppConfig):
    name = "storage_migrate"
    verbose_name = "Storage migration"

    def ready(self) -> None:
        from django.core.checks import Tags, register

        register(check_settings)
        # Reads a few values of each checksum column: only with `check --database`, and in
        # every run's own start (a configuration error, exit 2).
        register(check_digest_columns, Tags.database)
