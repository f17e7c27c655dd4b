from django.apps import AppConfig


class StorageMigrateConfig(AppConfig):
    name = "storage_migrate"
    verbose_name = "Storage migration"

    def ready(self) -> None:
        from django.core.checks import Tags, register

        from .checks import check_digest_columns, check_settings

        register(check_settings)
        # Reads a few values of each checksum column: only with `check --database`, and in
        # every run's own start (a configuration error, exit 2).
        register(check_digest_columns, Tags.database)
