"""Create FileManager rows with files of varied types, sizes and awkward names."""

from __future__ import annotations

import os
import posixpath
import random
from collections import Counter
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.models import FileManager, stored_key
from storage_migrate.conf import get_conf

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
    help = (
        "Create FileManager rows with files of varied types, sizes and awkward names (spaces, "
        "accents, '+', '&', '%'), kept as an older site stored them, in the default storage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=300, help="How many rows to create.")
        parser.add_argument(
            "--large",
            type=int,
            default=0,
            help="How many of them are large: a few MiB above STORAGE_MIGRATE's "
            "MULTIPART_THRESHOLD (64 MiB unless set), so that they go to S3 in parts.",
        )
        parser.add_argument(
            "--missing",
            type=int,
            default=0,
            help="How many of them then lose their file (the row stays), as after a lost upload.",
        )
        parser.add_argument("--seed", type=int, default=2026, help="Seed for names and contents.")

    def handle(self, *args: Any, **options: Any) -> None:
        count, large, missing = options["count"], options["large"], options["missing"]
        if min(count, large, missing) < 0 or large + missing > count:
            raise CommandError(
                "--count, --large and --missing must be >= 0, with --large + --missing <= --count."
            )
        try:
            large_size = get_conf().MULTIPART_THRESHOLD + 4 * MiB if large else 0
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc), returncode=2) from None
        rng = random.Random(options["seed"])
        user, _ = get_user_model().objects.get_or_create(username="demo")
        made: Counter[str] = Counter()
        total = 0
        lost: list[FileManager] = []
        try:
            for i in range(count):
                ext, file_type, purpose = KINDS[i % len(KINDS)]
                name = f"{STEMS[i % len(STEMS)]} {i:04d}.{ext}"
                if i < large:
                    size = large_size + rng.randrange(MiB)
                elif i % 50 == 7:
                    size = 0
                else:
                    size = rng.randrange(1, 200 * KiB)
                row = FileManager.objects.create(
                    file=ContentFile(rng.randbytes(size), name=name),
                    file_type=file_type,
                    purpose=purpose,
                    user=user if i % 3 == 0 else None,
                )
                keep_name(row, name)
                if i >= count - missing:
                    lost.append(row)
                made[row.file_type] += 1
                total += size
                if options["verbosity"] >= 2:
                    self.stdout.write(f"  {row.pk:>5}  {row.file_size:>9}  {row.file.name}")
            for row in lost:
                row.file.storage.delete(str(row.file.name))
                if options["verbosity"] >= 2:
                    self.stdout.write(f"  {row.pk:>5}  deleted {row.file.name} (the row stays)")
        except KeyboardInterrupt:  # one line and exit 130, as the library's commands do
            raise CommandError(
                f"Interrupted after {sum(made.values())} of {count} files.", returncode=130
            ) from None
        kinds = ", ".join(f"{n} {kind.lower()}" for kind, n in sorted(made.items()))
        gone = f" Then deleted the file of {len(lost)} of them (the rows stay)." if lost else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"Created {count} files ({total / 1e6:.1f} MB): {kinds or 'none'}.{gone}"
            )
        )


def keep_name(row: FileManager, name: str) -> None:
    """Give the row's file the name as uploaded. Django's get_valid_name() turns spaces into '_'
    and drops '+', '&' and '%'; older code and other tools stored such names as they came."""
    storage = row.file.storage
    stored = str(row.file.name)
    wanted = posixpath.join(posixpath.dirname(stored), name)
    if wanted == stored:
        return
    if isinstance(storage, FileSystemStorage):
        wanted = storage.get_available_name(wanted)
        os.rename(storage.path(stored), storage.path(wanted))
    else:
        with storage.open(stored, "rb") as content:
            wanted = storage.save(wanted, content)
        storage.delete(stored)
    FileManager.objects.filter(pk=row.pk).update(
        file=wanted, object_key=stored_key(storage, wanted)
    )
    row.refresh_from_db()
