from django.contrib import admin

from .models import FileManager


@admin.register(FileManager)
class FileManagerAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "file_name", "file_type", "purpose", "file_size", "bucket", "created_at")
    list_filter = ("file_type", "purpose", "bucket", "created_at")
    search_fields = ("file_name", "file", "object_key", "checksum")
    readonly_fields = (
        "file_name",
        "file_size",
        "content_type",
        "bucket",
        "object_key",
        "checksum",
        "created_at",
        "updated_at",
    )
    raw_id_fields = ("user",)
    date_hierarchy = "created_at"
