from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import URLPattern, URLResolver, path

urlpatterns: list[URLPattern | URLResolver] = [path("admin/", admin.site.urls)]

# Files on local disk, in development: all of them, or during a move those not moved yet.
if settings.DEBUG and (not settings.USE_S3_STORAGE or settings.STORAGE_FALLBACK):
    urlpatterns += static(settings.LOCAL_MEDIA_URL, document_root=settings.MEDIA_ROOT)
