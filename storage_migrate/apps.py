from django.apps import AppConfig


class StorageMigrateConfig(AppConfig):
    name = "storage_migrate"
    verbose_name = "Storage migration"
