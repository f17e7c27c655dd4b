"""What verify_files proves on a Wagtail site, and what it costs: the test site of
tests/wagtail_site filled through Wagtail's own APIs (images with a rendition each, documents,
an avatar), moved to `rclone serve s3`, then verified at --level checksum and --level deep,
with Wagtail's file_hash known as a SHA-1 (now) and with it unmapped (as before: no digest the
toolkit could compare). Prints a Markdown table.

    python bench/wagtail_verify.py [--images 200] [--documents 50]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANAGE = REPO / "tests" / "wagtail_site" / "manage.py"
sys.path.insert(0, str(REPO))

from storage_migrate.testing import rclone_s3_server, s3_client  # noqa: E402

BEFORE = json.dumps(
    {
        "METADATA_FIELDS": {
            "wagtailimages.Image": {"sha1": None},
            "wagtaildocs.Document": {"sha1": None},
        }
    }
)


def fill(images: int, documents: int) -> None:
    """Runs inside the site's settings (a child process): content through Wagtail's APIs."""
    import django

    django.setup()
    from django.core.files.base import ContentFile
    from django.core.files.images import ImageFile
    from PIL import Image as PILImage
    from wagtail.documents import get_document_model
    from wagtail.images import get_image_model

    rng = random.Random(1)
    Image, Document = get_image_model(), get_document_model()
    for i in range(images):
        picture = PILImage.new("RGB", (400, 300), (rng.randrange(256), i % 256, 90))
        out = io.BytesIO()
        picture.save(out, format="PNG")
        image = Image(title=f"Image {i}", file=ImageFile(out, name=f"photo {i} + café.png"))
        image._set_image_file_metadata()
        image.save()
        image.get_rendition("width-120")
    for i in range(documents):
        size = rng.randrange(20_000, 400_000)
        document = Document(title=f"Doc {i}", file=ContentFile(rng.randbytes(size), f"d{i}.pdf"))
        document._set_document_file_metadata()
        document.save()


def manage(env: dict[str, str], *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(MANAGE), *args], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--documents", type=int, default=50)
    parser.add_argument("--fill", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        fill(args.images, args.documents)
        return
    work = Path(tempfile.mkdtemp(prefix="bench-wagtail-"))
    with rclone_s3_server() as endpoint:
        s3_client(endpoint).create_bucket(Bucket="wagtail-site")
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DJANGO_SETTINGS_MODULE": "tests.wagtail_site.settings",
            "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
            "MEDIA_ROOT": str(work / "media"),
            "AWS_S3_ENDPOINT_URL": endpoint,
            "AWS_STORAGE_BUCKET_NAME": "wagtail-site",
        }
        manage(env, "migrate", "-v", "0")
        counts = [f"--images={args.images}", f"--documents={args.documents}"]
        subprocess.run([sys.executable, __file__, "--fill", *counts], env=env, check=True)
        copied, _ = manage(env, "migrate_storage", "--to", "s3", "--no-progress", "-v", "0")
        print(f"Wagtail test site: {args.images} images (+ a rendition each), ")
        print(f"{args.documents} documents; moved to rclone serve s3 in {copied:.1f} s\n")
        print("| knowledge | level | rows | checked by content | unchecked | read | time |")
        print("|---|---|---|---|---|---|---|")
        for knowledge, extra in (("before (MD5 only)", BEFORE), ("now (file_hash is SHA-1)", "")):
            run_env = {**env, "STORAGE_MIGRATE_JSON": extra} if extra else env
            for level in ("checksum", "deep"):
                seconds, out = manage(
                    run_env,
                    "verify_files",
                    "--storage",
                    "s3",
                    "--level",
                    level,
                    "--format",
                    "json",
                    "--no-progress",
                )
                totals = json.loads(out)["totals"]
                checked = totals["rows"] - totals["unchecked"]
                print(
                    f"| {knowledge} | {level} | {totals['rows']} | {checked} | "
                    f"{totals['unchecked']} | {totals['downloaded']} | {seconds:.2f} s |"
                )


if __name__ == "__main__":
    main()
