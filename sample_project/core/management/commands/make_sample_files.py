"""Create FileManager rows with files of varied types, sizes and awkward names."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.models import FileManager

KiB = 1024
MiB = 1024 * KiB

# (extension, file type, purpose)
KINDS = [
    ("jpg", FileManager.FileType.IMAGE, FileManager.Purpose.PROFILE_IMAGE),
    ("png", FileManager.FileType.IMAGE, FileManager.Purpose.ATTACHMENT),
    ("pdf", FileManager.FileType.DOCUMENT, FileManager.Purpose.DOCUMENT),
    ("docx", FileManager.FileType.DOCUMENT, FileManager.Purpose.DOCUMENT),
    ("txt", FileManager.FileType.DOCUMENT, FileManager.Purpose.ATTACHMENT),
    ("mp4", FileManager.FileType.VIDEO, FileManager.Purpose.ATTACHMENT),
    ("mp3", FileManager.FileType.AUDIO, FileManager.Purpose.ATTACHMENT),
    ("csv.gz", FileManager.FileType.OTHER, FileManager.Purpose.OTHER),
    ("bin", FileManager.FileType.OTHER, FileManager.Purpose.OTHER),
]
# Names that trip up naive tools: spaces, non-ASCII, '+', '&', '%', leading dots.
STEMS = [
    "report",
    "holiday photo",
    "façade ñandú",
    "scan+copy",
    "tom & jerry",
    "100% done",
    "résumé",
    "日本語",
    ".hidden",
    "contract_v2",
]


class Command(BaseCommand):
    help = "Create FileManager rows with files of varied types and sizes (default storage)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=300, help="How many rows to create.")
        parser.add_argument(
            "--large",
            type=int,
            default=0,
            help="How many of them are large files (above the usual 8 MiB multipart threshold).",
        )
        parser.add_argument("--seed", type=int, default=2026, help="Seed for names and contents.")

    def handle(self, *args: Any, **options: Any) -> None:
        count, large = options["count"], options["large"]
        if count < 0 or large < 0 or large > count:
            raise CommandError("--count and --large must be >= 0, with --large <= --count.")
        rng = random.Random(options["seed"])
        user, _ = get_user_model().objects.get_or_create(username="demo")
        made: Counter[str] = Counter()
        total = 0
        for i in range(count):
            ext, file_type, purpose = KINDS[i % len(KINDS)]
            stem = STEMS[i % len(STEMS)]
            if i < large:
                size = 9 * MiB + rng.randrange(MiB)
            elif i % 50 == 7:
                size = 0
            else:
                size = rng.randrange(1, 200 * KiB)
            row = FileManager.objects.create(
                file=ContentFile(rng.randbytes(size), name=f"{stem} {i:04d}.{ext}"),
                file_type=file_type,
                purpose=purpose,
                user=user if i % 3 == 0 else None,
            )
            made[row.file_type] += 1
            total += size
            if options["verbosity"] >= 2:
                self.stdout.write(f"  {row.pk:>5}  {row.file_size:>9}  {row.file.name}")
        kinds = ", ".join(f"{n} {kind.lower()}" for kind, n in sorted(made.items()))
        self.stdout.write(
            self.style.SUCCESS(f"Created {count} files ({total / 1e6:.1f} MB): {kinds or 'none'}.")
        )
