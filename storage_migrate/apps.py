from django.apps import AppConfig


class StorageMigrateConfig(AppConfig):
    name = "storage_migrate"
    verbose_name = "Storage migration"

    def ready(self) -> None:
        from django.core.checks import register

        from .checks import check_settings

        register(check_settings)
