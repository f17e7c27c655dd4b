"""A page with an image (rendered through a rendition) and a document link: what a Wagtail
site's pages are made of."""

from django.db import models
from wagtail.models import Page


class HomePage(Page):  # type: ignore[misc]
    photo = models.ForeignKey(
        "wagtailimages.Image", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    brochure = models.ForeignKey(
        "wagtaildocs.Document", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
