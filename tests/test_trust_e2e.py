"""The trust attacks end to end: manage.py as a subprocess against moto's HTTP server (through a
proxy where the attack needs the network to misbehave) and the test database."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from core.models import FileManager
from storage_migrate.testing import s3_client
from tests.conftest import ManagePy
from tests.faults import faulty_proxy
from tests.test_migrate_e2e import make_row, sources

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_default_and_local_are_one_folder_and_nothing_is_deleted(
    manage_py: ManagePy, media_root: Path
) -> None:
    for i in range(5):
        make_row(media_root, f"keep {i}.txt", f"keep {i}".encode())
    before = sources(media_root)

    result = manage_py("migrate_storage", "--to", "default", "--from", "local", "--delete-source")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "one place" in one_line_error(result.stderr)
    assert sources(media_root) == before


def test_default_and_s3_are_one_bucket_and_nothing_is_deleted(
    manage_py: ManagePy, moto_endpoint: str, http_bucket: str
) -> None:
    s3 = s3_client(moto_endpoint)
    s3.put_object(Bucket=http_bucket, Key="file_manager/a.txt", Body=b"only copy")
    FileManager.objects.create(file="file_manager/a.txt")
    manage_py.env["USE_S3_STORAGE"] = "True"

    result = manage_py("migrate_storage", "--to", "default", "--from", "s3", "--delete-source")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "one place" in one_line_error(result.stderr)
    assert s3.get_object(Bucket=http_bucket, Key="file_manager/a.txt")["Body"].read() == (
        b"only copy"
    )


def test_a_bit_flipped_in_a_multipart_download_is_never_committed_nor_its_source_deleted(
    manage_py: ManagePy, moto_endpoint: str, http_bucket: str, media_root: Path
) -> None:
    data = os.urandom(11 * MiB)
    s3 = s3_client(moto_endpoint)
    s3.upload_fileobj(
        io.BytesIO(data),
        http_bucket,
        "file_manager/site-upload.mp4",
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB),
    )
    row = FileManager.objects.create(file="file_manager/site-upload.mp4")

    with faulty_proxy(moto_endpoint, rate=0.0, flip_gets=True) as proxy:
        manage_py.env["AWS_S3_ENDPOINT_URL"] = proxy.url
        result = manage_py("migrate_storage", "--to", "local", "--delete-source", "--no-progress")

    assert proxy.flipped >= 1
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error" in result.stdout
    assert not (media_root / "file_manager" / "site-upload.mp4").exists()
    row.refresh_from_db()
    assert (row.checksum, row.file_size) == ("", None)
    body = s3.get_object(Bucket=http_bucket, Key="file_manager/site-upload.mp4")["Body"].read()
    assert hashlib.md5(body).hexdigest() == hashlib.md5(data).hexdigest()


def test_forged_md5_metadata_never_gets_a_good_source_deleted(
    manage_py: ManagePy, moto_endpoint: str, http_bucket: str, media_root: Path
) -> None:
    good = os.urandom(6 * MiB)
    row = make_row(media_root, "contract.pdf", good)
    foreign = os.urandom(6 * MiB)
    parts = [
        hashlib.md5(foreign[i : i + 5 * MiB]).digest() for i in range(0, len(foreign), 5 * MiB)
    ]
    forged = f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"
    s3_client(moto_endpoint).upload_fileobj(
        io.BytesIO(foreign),
        http_bucket,
        str(row.file.name),
        ExtraArgs={"Metadata": {"md5": hashlib.md5(good).hexdigest(), "etag": forged}},
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB),
    )
    manage_py.env["STORAGE_MIGRATE_MULTIPART_THRESHOLD"] = str(5 * MiB)

    result = manage_py("migrate_storage", "--to", "s3", "--delete-source", "--no-progress")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "conflict" in result.stdout
    assert (media_root / str(row.file.name)).read_bytes() == good
    verified = manage_py("verify_files", "--storage", "s3", "--level", "deep", "--no-progress")
    assert verified.returncode == 1
    assert "checksum_mismatch" in verified.stdout


def test_credentials_in_the_endpoint_url_are_never_printed_nor_sent(
    manage_py: ManagePy, moto_endpoint: str, http_bucket: str, media_root: Path
) -> None:
    row = make_row(media_root, "secret.txt", b"payload")
    manage_py.env["AWS_S3_ENDPOINT_URL"] = moto_endpoint.replace("http://", "http://alice:hunter2@")

    result = manage_py("migrate_storage", "--to", "s3", "--no-progress", "-v", "2")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    body = s3_client(moto_endpoint).get_object(Bucket=http_bucket, Key=str(row.file.name))["Body"]
    assert body.read() == b"payload"
    manage_py.env["AWS_STORAGE_BUCKET_NAME"] = "no-such-bucket"
    refused = manage_py("migrate_storage", "--to", "s3", "--no-progress")
    assert refused.returncode == 2
    assert "hunter2" not in one_line_error(refused.stderr) + refused.stdout
