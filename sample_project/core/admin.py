from typing import Any

from django.contrib import admin
from django.utils.html import format_html

from .models import FileManager


@admin.register(FileManager)
class FileManagerAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "id",
        "file_link",
        "file_type",
        "purpose",
        "file_size",
        "bucket",
        "created_at",
    )
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

    @admin.display(description="File", ordering="file_name")
    def file_link(self, obj: FileManager) -> Any:
        """A link to the file where the site serves it (through the default storage's url(),
        which for a FallbackStorage costs no request once it knows the name)."""
        if not obj.file:
            return "-"
        return format_html('<a href="{}">{}</a>', obj.file.url, obj.file_name or obj.file.name)
