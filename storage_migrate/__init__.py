"""django-storage-migrate."""
