"""Attacks on server-side copies between two S3 storages on one store: a source replaced during
the copy on a store that ignores x-amz-copy-source-if-match, a foreign object appearing under
the name, lost answers and their retries, encrypted destinations whose ETags are not MD5s,
hostile names under two prefixes, one place under two aliases, --delete-source after a copy, a
store whose UploadPartCopy says no ETag, and a dry run that must predict all of it. Each test
fails if its attack works."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from botocore.exceptions import ClientError

from core.models import FileManager
from storage_migrate import ConfigurationError, migrate_storage
from storage_migrate.endpoints import s3copy
from storage_migrate.endpoints.s3 import S3Endpoint
from storage_migrate.endpoints.s3write import S3Engine
from storage_migrate.testing import s3_client
from tests.conftest import BOTH_SERVERS, ManagePy, reset_storages
from tests.helpers import MiB, kinds, md5, s3_bytes, s3_keys
from tests.test_migrate_e2e import make_row
from tests.test_migrate_kill import rows_pointing_at, run_until
from tests.test_server_side import (
    NEW,
    multipart_source,
    new_alias,
    no_downloads,
    to_s3,
    two_buckets,
)
from tests.test_server_side_e2e import run

__all__ = ["no_downloads", "two_buckets"]  # fixtures

# How a store handles the headers a server-side copy relies on (what the probe would find).
ROUTES = {
    # If-None-Match honoured on CopyObject (real S3): one conditional CopyObject.
    "conditional_copy": s3copy.CopySupport(
        pins_source=False, conditional_copy=True, part_copy=True
    ),
    # Ignored on CopyObject, honoured on completions: a one-part multipart copy.
    "one_part": s3copy.CopySupport(pins_source=False, conditional_copy=False, part_copy=True),
    # Neither conditional copies nor answers to UploadPartCopy (rclone): a HEAD first.
    "head_first": s3copy.CopySupport(pins_source=False, conditional_copy=False, part_copy=False),
}


def route(name: str) -> Any:
    return mock.patch.object(s3copy, "_probe", return_value=ROUTES[name])


def small_cutoff(settings: Any) -> None:
    """Parts from 5 MiB up: a 12 MiB object is copied in parts."""
    settings.STORAGE_MIGRATE = {
        **settings.STORAGE_MIGRATE,
        "COPY_CUTOFF": 5 * MiB,
        "MULTIPART_CHUNKSIZE": 5 * MiB,
    }


def at_copy_request(action: Callable[[], None], *, nth: int = 1) -> Any:
    """ServerCopy._call that runs ``action`` right before the nth request that copies bytes
    (CopyObject, UploadPartCopy): moto ignores x-amz-copy-source-if-match, as rclone does."""
    original = s3copy.ServerCopy._call
    seen: list[int] = []

    def call(self: s3copy.ServerCopy, method: Any, **kwargs: Any) -> Any:
        if "CopySource" in kwargs:
            seen.append(1)
            if len(seen) == nth:
                action()
        return original(self, method, **kwargs)

    return mock.patch.object(s3copy.ServerCopy, "_call", call)


def not_moved(row: FileManager, bucket: str) -> None:
    row.refresh_from_db()
    assert row.bucket == bucket


# --- a source replaced during the copy ------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("checksum", [True, False], ids=["checksum", "no-checksum"])
@pytest.mark.parametrize("source_parts", [False, True], ids=["single-source", "multipart-source"])
@pytest.mark.parametrize("replacement_parts", [False, True], ids=["put", "multipart"])
@pytest.mark.parametrize(
    ("way", "nth"),
    [
        ("conditional_copy", 1),
        ("one_part", 1),
        ("head_first", 1),
        ("parts", 1),
        ("parts", 2),  # between the parts: a copy of two versions
    ],
)
def test_a_source_replaced_during_the_copy(
    two_buckets: str,
    settings: Any,
    checksum: bool,
    source_parts: bool,
    replacement_parts: bool,
    way: str,
    nth: int,
) -> None:
    data = os.urandom(12 * MiB)
    (row,) = to_s3(("docs/replaced.bin", data))
    key = str(row.file.name)
    if source_parts:
        multipart_source(two_buckets, key, data)
    if not checksum:
        FileManager.objects.filter(pk=row.pk).update(checksum="")
    other = os.urandom(12 * MiB)  # the same size

    def replace() -> None:
        if replacement_parts:
            multipart_source(two_buckets, key, other)
        else:
            s3_client().put_object(Bucket=two_buckets, Key=key, Body=other)

    if way == "parts":
        small_cutoff(settings)
    with route("one_part" if way == "parts" else way), at_copy_request(replace, nth=nth):
        report = migrate_storage(to="s3_new", source="s3")
    assert (report.copied, report.copied_server_side) == (0, 0)
    assert kinds(report) == ["error"], [p.detail for p in report.problems]
    assert s3_keys(NEW) == []  # the copy of other bytes, ours, was removed
    not_moved(row, two_buckets)
    # A re-run copies what the source holds now, and proves it.
    again = migrate_storage(to="s3_new", source="s3")
    assert (again.copied_server_side, kinds(again)) == (
        1,
        ["checksum_mismatch"] if checksum else [],
    )
    assert s3_bytes(NEW, key) == other


# --- a foreign object under the name ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("same", [False, True], ids=["other-bytes", "same-bytes"])
@pytest.mark.parametrize("way", ["one_part", "parts"])
def test_a_foreign_object_appearing_before_the_completion(
    two_buckets: str, settings: Any, same: bool, way: str
) -> None:
    """The store ignores If-None-Match on CopyObject: the copy is made as a multipart upload
    whose completion is conditional; a writer that puts an object under the name after the
    HEAD keeps it, and the row is a conflict (or, for the same bytes, takes it unharmed)."""
    data = os.urandom(7 * MiB)
    (row,) = to_s3(("docs/raced.bin", data))
    key = str(row.file.name)
    theirs = data if same else b"another writer's object"
    if way == "parts":
        small_cutoff(settings)
    original = S3Engine._refuse_taken

    def refuse_taken(engine: S3Engine, taken: str) -> None:
        original(engine, taken)
        s3_client().put_object(Bucket=NEW, Key=taken, Body=theirs)

    with route("one_part"), mock.patch.object(S3Engine, "_refuse_taken", refuse_taken):
        report = migrate_storage(to="s3_new", source="s3")
    assert s3_bytes(NEW, key) == theirs
    assert s3_client().head_object(Bucket=NEW, Key=key)["ETag"].strip('"') == md5(theirs)
    if same:
        assert (report.copied, list(report.problems)) == (1, [])
        row.refresh_from_db()
        assert (row.bucket, row.checksum) == (NEW, md5(data))
    else:
        assert (report.copied, kinds(report)) == (0, ["conflict"])
        not_moved(row, two_buckets)
    assert s3_client().list_multipart_uploads(Bucket=NEW).get("Uploads", []) == []


# --- lost answers ---------------------------------------------------------------------------


@pytest.fixture
def proxied_new(http_bucket: str, s3_endpoint: str, through_proxy: Any, settings: Any) -> Any:
    """``start(**behaviour)``: the `s3` alias on moto's HTTP server through the fault proxy,
    and an `s3_new` alias (a fresh bucket) through the same proxy."""

    def start(**behaviour: Any) -> tuple[Any, str]:
        proxy = through_proxy(**behaviour)
        new = f"new-{uuid.uuid4().hex[:12]}"
        s3_client(s3_endpoint).create_bucket(Bucket=new)
        new_alias(settings, endpoint_url=proxy.url, bucket=new)
        return proxy, new

    return start


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("way", "copies", "completions"),
    [
        ("conditional_copy", ("lost_answer",), ()),
        # The retry is refused: the first attempt made the object (a store that honours it).
        ("conditional_copy", ("lost_answer", "precondition_failed"), ()),
        ("one_part", ("lost_answer",), ()),
        ("one_part", (), ("lost_answer",)),
        ("one_part", (), ("lost_answer", "precondition_failed")),
        ("parts", (), ("lost_answer", "precondition_failed")),
        ("head_first", ("lost_answer",), ()),
    ],
)
@pytest.mark.parametrize("source_parts", [False, True], ids=["single-source", "multipart-source"])
def test_a_lost_answer_and_its_retry(
    proxied_new: Any,
    http_bucket: str,
    s3_endpoint: str,
    settings: Any,
    way: str,
    copies: tuple[str, ...],
    completions: tuple[str, ...],
    source_parts: bool,
) -> None:
    """The copy is made, its answer lost, and botocore retries: the copy ends proven and the
    row moved, once, in this run; a retry refused (412) finds our own copy and proves it."""
    proxy, new = proxied_new(copy_answers=copies, complete_answers=completions)
    if way == "parts":
        small_cutoff(settings)
    data = os.urandom(11 * MiB)
    (row,) = to_s3(("docs/lost answer.bin", data))
    key = str(row.file.name)
    if source_parts:
        client = s3_client(s3_endpoint)
        upload = client.create_multipart_upload(Bucket=http_bucket, Key=key)
        parts: list[Any] = []
        for number, start in enumerate(range(0, len(data), 5 * MiB), 1):
            answer = client.upload_part(
                Bucket=http_bucket,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=data[start : start + 5 * MiB],
            )
            parts.append({"ETag": answer["ETag"], "PartNumber": number})
        client.complete_multipart_upload(
            Bucket=http_bucket,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": parts},
        )
    with route("one_part" if way == "parts" else way):
        report = migrate_storage(to="s3_new", source="s3")
    assert proxy.copy_answers == proxy.complete_answers == []  # every fault was served
    assert list(report.problems) == [], [p.detail for p in report.problems]
    assert (report.copied, report.copied_server_side) == (1, 1)
    row.refresh_from_db()
    assert (row.bucket, row.checksum) == (new, md5(data))
    client = s3_client(s3_endpoint)
    assert bytes(client.get_object(Bucket=new, Key=key)["Body"].read()) == data
    assert client.list_multipart_uploads(Bucket=new).get("Uploads", []) == []


# --- encrypted destinations ---------------------------------------------------------------


def kms_answers() -> Any:
    """ServerCopy._call whose answers are those of an SSE-KMS store: ETags that are not MD5s
    (moto gives MD5s even there), and the header that says so."""
    original = s3copy.ServerCopy._call
    real: dict[str, str] = {}  # the ETags given for the parts, and moto's

    def call(self: s3copy.ServerCopy, method: Any, **kwargs: Any) -> Any:
        given = [p["ETag"] for p in kwargs.get("MultipartUpload", {}).get("Parts", [])]
        for part in kwargs.get("MultipartUpload", {}).get("Parts", []):
            part["ETag"] = real.get(part["ETag"], part["ETag"])
        answer = original(self, method, **kwargs)
        answer["ServerSideEncryption"] = "aws:kms"
        if given:  # S3 computes a multipart ETag from the parts' ETags, MD5s or not
            joined = b"".join(bytes.fromhex(e.strip('"')) for e in given)
            answer["ETag"] = f'"{md5(joined)}-{len(given)}"'
            return answer
        for holder in (answer, answer.get("CopyObjectResult"), answer.get("CopyPartResult")):
            if holder and holder.get("ETag"):
                suffix = holder["ETag"].strip('"').partition("-")[2]
                fake = f'"{uuid.uuid4().hex}{"-" + suffix if suffix else ""}"'
                real[fake], holder["ETag"] = holder["ETag"], fake
        return answer

    return mock.patch.object(s3copy.ServerCopy, "_call", call)


@pytest.mark.django_db
@pytest.mark.parametrize("declared", [True, False], ids=["in-settings", "bucket-default"])
@pytest.mark.parametrize("way", ["conditional_copy", "one_part", "head_first", "parts"])
@pytest.mark.parametrize("source_parts", [False, True], ids=["single-source", "multipart-source"])
@pytest.mark.parametrize("pins", [False, True], ids=["unpinned", "pinned"])
def test_an_encrypted_destination_proves_nothing_by_etag(
    two_buckets: str,
    settings: Any,
    declared: bool,
    way: str,
    source_parts: bool,
    pins: bool,
) -> None:
    """SSE-KMS at the destination (in its settings, or only as the bucket's default, which the
    answers' headers tell): no ETag of the copy is an MD5, nothing is taken from one, and the
    row's checksum is the bytes' MD5 (the store pinning the source or not)."""
    options = {"object_parameters": {"ServerSideEncryption": "aws:kms"}} if declared else {}
    new_alias(settings, **options)
    if way == "parts":
        small_cutoff(settings)
    data = os.urandom(11 * MiB)
    (row,) = to_s3(("docs/secret.bin", data))
    key = str(row.file.name)
    if source_parts:
        multipart_source(two_buckets, key, data)
    FileManager.objects.filter(pk=row.pk).update(checksum="")
    support = ROUTES["one_part" if way == "parts" else way]
    support = s3copy.CopySupport(pins, support.conditional_copy, support.part_copy)
    with (
        mock.patch.object(s3copy, "_probe", return_value=support),
        kms_answers(),
    ):
        report = migrate_storage(to="s3_new", source="s3")
    assert list(report.problems) == [], [p.detail for p in report.problems]
    assert report.copied_server_side == 1
    row.refresh_from_db()
    assert (row.bucket, row.checksum) == (NEW, md5(data))
    assert s3_bytes(NEW, key) == data


# --- names and prefixes ---------------------------------------------------------------------

HOSTILE = (
    ("docs/a report + notes 100%.txt", b"percent and plus\n"),
    ("docs/%2F encoded %20 twice.txt", b"not decoded\n"),
    (
        "docs/caf\u00e9 \u65e5\u672c\u8a9e \u00f1and\u00fa.csv",
        "\u00fcn\u00efc\u00f6d\u00e9".encode(),
    ),
    ("docs/a..b/..c d../x..txt", b"dots that are not a parent\n"),
    ("docs/  two  spaces .txt", b"spaces\n"),
    ("docs/empty.txt", b""),
)


@pytest.mark.django_db
@pytest.mark.parametrize("way", ["conditional_copy", "one_part", "head_first"])
def test_hostile_names_under_two_prefixes(
    two_buckets: str, settings: Any, way: str, no_downloads: Any
) -> None:
    settings.AWS_LOCATION = "old media"
    reset_storages()
    rows = to_s3(*HOSTILE)
    new_alias(settings, location="new/site + 100%")
    with route(way):
        report = migrate_storage(to="s3_new", source="s3")
    assert list(report.problems) == [], [p.detail for p in report.problems]
    assert report.copied_server_side == len(HOSTILE)
    keys = []
    for row, (_name, data) in zip(rows, HOSTILE, strict=True):
        row.refresh_from_db()
        name = str(row.file.name)
        key = f"new/site + 100%/{name}"
        keys.append(key)
        assert (row.bucket, row.object_key, row.checksum) == (NEW, key, md5(data))
        assert s3_bytes(NEW, key) == data
        assert s3_bytes(two_buckets, f"old media/{name}") == data
    assert s3_keys(NEW) == sorted(keys)  # nothing else: no probe left behind, no double prefix
    again = migrate_storage(to="s3_new", source="s3")
    assert (again.skipped, list(again.problems)) == (len(HOSTILE), [])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("old", "new"),
    [("", ""), ("media", "media/"), ("site/media", "site/media/")],
)
def test_one_bucket_and_prefix_under_two_aliases_is_refused(
    two_buckets: str, settings: Any, old: str, new: str
) -> None:
    settings.AWS_LOCATION = old
    reset_storages()
    (row,) = to_s3(("docs/self.txt", b"onto itself"))
    row.refresh_from_db()
    key = str(row.object_key)
    new_alias(settings, bucket=two_buckets, location=new)
    for dry_run in (True, False):
        with pytest.raises(ConfigurationError):
            migrate_storage(to="s3_new", source="s3", dry_run=dry_run)
    with pytest.raises(ConfigurationError):
        migrate_storage(to="s3_new", source="s3", overwrite=True)
    assert s3_bytes(two_buckets, key) == b"onto itself"
    not_moved(row, two_buckets)


# --- --delete-source ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("moment", ["after-the-copy", "before-the-delete"])
@pytest.mark.parametrize("source_parts", [False, True], ids=["single-source", "multipart-source"])
def test_delete_source_after_a_server_side_copy(
    two_buckets: str, settings: Any, moment: str, source_parts: bool
) -> None:
    kept, changed = b"a file that stays the same", os.urandom(6 * MiB)
    rows = to_s3(("docs/kept.txt", kept), ("docs/changed.bin", changed))
    key = str(rows[1].file.name)
    if source_parts:
        multipart_source(two_buckets, key, changed)
    newer = os.urandom(6 * MiB)

    def replace() -> None:
        s3_client().put_object(Bucket=two_buckets, Key=key, Body=newer)

    if moment == "after-the-copy":
        original_copy = s3copy.ServerCopy.run

        def run(self: s3copy.ServerCopy) -> Any:
            done = original_copy(self)
            if self.src.key(self.name) == key:
                replace()
            return done

        patch = mock.patch.object(s3copy.ServerCopy, "run", run)
    else:
        original_remove = S3Endpoint.remove_if_unchanged

        def remove(endpoint: S3Endpoint, name: str, *args: Any, **kwargs: Any) -> Any:
            if endpoint.key(name) == key:
                replace()
            return original_remove(endpoint, name, *args, **kwargs)

        patch = mock.patch.object(S3Endpoint, "remove_if_unchanged", remove)
    with patch:
        report = migrate_storage(to="s3_new", source="s3", delete_source=True)
    assert report.deleted == 1
    assert s3_keys(two_buckets) == [key]  # the changed source was not deleted
    assert s3_bytes(two_buckets, key) == newer
    assert report.problems, "the source that changed is reported"
    rows[0].refresh_from_db()
    assert rows[0].bucket == NEW


# --- a store that answers UploadPartCopy without an ETag ---------------------------------


@pytest.mark.django_db
def test_large_objects_on_a_store_without_part_copies(
    two_buckets: str, settings: Any, no_downloads: Any
) -> None:
    """`rclone serve s3` answers UploadPartCopy with no ETag (the probe finds it): an object
    above COPY_CUTOFF is still copied (one CopyObject takes up to 5 GB), and what a dry run
    said is what happens."""
    small_cutoff(settings)
    data = os.urandom(12 * MiB)
    (row,) = to_s3(("video/large.mp4", data))
    with route("head_first"):
        predicted = migrate_storage(to="s3_new", source="s3", dry_run=True)
        report = migrate_storage(to="s3_new", source="s3")
    assert list(report.problems) == [], [p.detail for p in report.problems]
    assert (report.copied, report.copied_server_side) == (1, 1)
    assert (predicted.copied, predicted.copied_server_side) == (1, 1)
    row.refresh_from_db()
    assert (row.bucket, row.checksum) == (NEW, md5(data))


@pytest.mark.django_db
def test_above_5_gb_on_a_store_without_part_copies_the_bytes_are_streamed(
    two_buckets: str, settings: Any
) -> None:
    """Above what one CopyObject takes (5 GB; smaller here), a store without part copies gets
    the bytes streamed through this process, and the report says which way they went."""
    small_cutoff(settings)
    data = os.urandom(12 * MiB)
    (row,) = to_s3(("video/huge.mp4", data))
    with route("head_first"), mock.patch.object(s3copy, "MAX_PART", 10 * MiB):
        report = migrate_storage(to="s3_new", source="s3")
    assert list(report.problems) == [], [p.detail for p in report.problems]
    assert (report.copied, report.copied_server_side) == (1, 0)
    row.refresh_from_db()
    assert (row.bucket, row.checksum) == (NEW, md5(data))
    assert s3_bytes(NEW, str(row.file.name)) == data


# --- a dry run predicts the real run ------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("way", ["one_part", "parts"])
def test_a_dry_run_predicts_a_stale_checksum_of_a_multipart_source(
    two_buckets: str, settings: Any, way: str
) -> None:
    """The row's checksum is not the MD5 of its multipart source: a streamed copy would say so,
    the dry run says so, and so must the server-side copy (whose ETag equals the source's and
    tells no MD5)."""
    if way == "parts":
        small_cutoff(settings)
    data = os.urandom(12 * MiB)
    (row,) = to_s3(("docs/stale.bin", data))
    multipart_source(two_buckets, str(row.file.name), data)
    stale = md5(b"what the file was once")
    FileManager.objects.filter(pk=row.pk).update(checksum=stale)
    with route("one_part"):
        predicted = migrate_storage(to="s3_new", source="s3", dry_run=True)
        report = migrate_storage(to="s3_new", source="s3")
    assert kinds(predicted) == kinds(report) == ["checksum_mismatch"]
    assert predicted.totals == report.totals
    problem = report.problems[0]
    assert (problem.expected, problem.actual) == (stale, md5(data))
    row.refresh_from_db()
    assert (row.bucket, row.checksum) == (NEW, stale)  # kept, as a streamed copy keeps it


# --- killed mid-run (manage.py, both servers) -----------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
@BOTH_SERVERS
def test_killed_mid_copy_then_converges(
    manage_py: ManagePy, media_root: Path, s3_endpoint: str, http_bucket: str, s3_kind: str
) -> None:
    """Large objects copied in parts (a small COPY_CUTOFF), manage.py SIGKILLed while parts are
    copied and after a first commit: no row ever points at an object that does not hold its
    bytes, a re-run finishes every row server-side or as a skip, and no multipart upload is
    left (rclone serve s3 copies no parts: it copies each in one CopyObject)."""
    sources: dict[int, str] = {}
    for i in range(6):
        data = os.urandom(12 * MiB + i)
        row = make_row(media_root, f"clip {i} + 100%.mp4", data)
        sources[row.pk] = md5(data)
    status, first, stderr = run(manage_py, "--to", "s3")
    assert (status, first["totals"]["copied"]) == (0, 6), stderr
    new = f"new-{uuid.uuid4().hex[:12]}"
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=new)
    env = {
        **manage_py.env,
        "NEW_AWS_STORAGE_BUCKET_NAME": new,
        "STORAGE_MIGRATE_COPY_CUTOFF": str(5 * MiB),
    }
    manage_py.env = env
    args = ["migrate_storage", "--from", "s3", "--to", "s3_new", "--no-progress"]
    args += ["--workers", "2", "--batch-size", "2"]

    def uploads() -> list[Any]:
        try:
            return list(client.list_multipart_uploads(Bucket=new).get("Uploads", []))
        except ClientError:  # rclone: NoSuchUpload when there are none
            return []

    def probing() -> bool:  # a scratch object or upload of the copy probe is there
        listed = client.list_objects_v2(Bucket=new).get("Contents", [])
        keys = [o["Key"] for o in listed] + [u["Key"] for u in uploads()]
        return any(s3copy.PROBE in key for key in keys)

    def parts_in_flight() -> bool:
        return any(s3copy.PROBE not in u["Key"] for u in uploads())

    def first_commit() -> bool:
        return len(rows_pointing_at(new)) > 0

    killed = []
    for moment in (probing, parts_in_flight, first_commit):
        killed.append(run_until(env, args, moment))
        for pk, key in rows_pointing_at(new).items():
            body = client.get_object(Bucket=new, Key=key)["Body"].read()
            assert md5(body) == sources[pk], f"row {pk} points at bad bytes"
    if s3_kind == "moto":  # rclone copies no parts
        assert killed[1], "the run finished before its parts were copied"
    status, report, stderr = run(manage_py, "--from", "s3", "--to", "s3_new")
    assert status == 0, stderr
    assert report["problems"] == []
    totals = report["totals"]
    assert totals["copied"] == totals["copied_server_side"]
    assert totals["copied"] + totals["skipped"] == 6
    assert set(rows_pointing_at(new)) == set(sources)
    for row in FileManager.objects.all():
        assert row.checksum == sources[row.pk]
        body = client.get_object(Bucket=new, Key=str(row.object_key))["Body"].read()
        assert md5(body) == sources[row.pk]
    assert uploads() == []
    # Nothing but the rows' objects: no scratch object of the probe, no half copy.
    listed = client.list_objects_v2(Bucket=new).get("Contents", [])
    assert sorted(o["Key"] for o in listed) == sorted(
        str(r.object_key) for r in FileManager.objects.all()
    )
    verified = manage_py("verify_files", "--storage", "s3_new", "--no-progress")
    assert verified.returncode == 0, verified.stdout + verified.stderr
