"""--shard K/N: N processes share one migration, each taking the rows whose file hashes to its
shard. The hash is pinned (processes of two versions must agree), shards partition every set of
names, rows sharing a file are always in one shard, and N shards end where one process ends."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.models import FileManager
from storage_migrate import ConfigurationError, migrate_storage
from storage_migrate.conf import get_conf
from storage_migrate.endpoints.factory import endpoint_for
from storage_migrate.names import unsafe_reason
from storage_migrate.shards import Shard, as_shard, parse_shard, shard_name, shard_of
from storage_migrate.testing import s3_client
from tests.conftest import reset_storages
from tests.helpers import make, s3_bytes, s3_keys

# --- the hash ----------------------------------------------------------------------------------

# Shards of a running migration whose processes run two versions must agree: a change of these
# values moves rows between shards (some walked twice, some by no one). Never edit them to make
# a change pass; a new hash needs a new option.
PINNED = {
    "file_manager/2026/11/21/a.pdf": [1, 2, 3, 2, 931],
    "holiday photo.jpg": [0, 1, 2, 3, 278],
    "façade ñandú 日本語.txt": [1, 0, 3, 1, 903],
    "a/b": [0, 2, 0, 5, 512],
}


@pytest.mark.parametrize(("name", "shards"), PINNED.items())
def test_the_hash_is_pinned(name: str, shards: list[int]) -> None:
    assert [shard_of(name, count) for count in (2, 3, 4, 7, 1000)] == shards


def test_the_hash_is_blake2b_of_the_folded_name() -> None:
    # Pinned independently of PINNED: the algorithm itself, on the bytes of a folded name.
    assert shard_of("a//b", 2**64 - 1) == 0x0DEBD2558BCA8FA0 % (2**64 - 1)


def test_two_spellings_of_one_name_are_one_shard() -> None:
    spellings = ["a/b.txt", "a//b.txt", "a/./b.txt", "./a/b.txt", "a\\b.txt", "a\\.\\b.txt"]
    assert {shard_name(s) for s in spellings} == {"a/b.txt"}
    for count in range(2, 40):
        assert len({shard_of(s, count) for s in spellings}) == 1


names = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=300)
@given(st.sets(names, max_size=60), st.integers(1, 64))
def test_shards_partition_every_set_of_names(all_names: set[str], count: int) -> None:
    shards = [Shard(k, count) for k in range(count)]
    parts = [{n for n in all_names if shard.holds(n)} for shard in shards]
    assert sum(len(part) for part in parts) == len(all_names)  # none twice
    assert set().union(*parts) == all_names  # none left out


def respelled(name: str, where: int, how: str) -> str:
    """``name`` with one part of it spelled another way, at ``where``."""
    at = where % (len(name) + 1)
    if how == "slashes":
        return name.replace("/", "//")
    if how == "backslashes":
        return name.replace("/", "\\")
    if how == "prefix":
        return "./" + name
    return name[:at] + how + name[at:]  # "/", "./", "/./" inserted


@pytest.mark.django_db
@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.text("ab/.\\", min_size=1, max_size=8),
    st.lists(
        st.tuples(
            st.integers(0, 8), st.sampled_from(["slashes", "backslashes", "prefix", "/", "./"])
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_names_one_storage_keeps_as_one_are_in_one_shard(
    s3_bucket: str, name: str, changes: list[tuple[int, str]]
) -> None:
    """The attack: two rows whose names a storage folds into one object (at the source or at
    the destination) but that land in two shards would be copied by two processes at once."""
    other = name
    for where, how in changes:
        other = respelled(other, where, how)
    conf = get_conf()
    if unsafe_reason(name) or unsafe_reason(other):
        return  # never read nor written, whichever shard reports it
    for endpoint in (endpoint_for("local", conf), endpoint_for("s3", conf)):
        try:
            same = endpoint.canonical(name) == endpoint.canonical(other)
            same = same or endpoint.key(name) == endpoint.key(other)
        except Exception:  # a name the storage refuses (its root): an unsafe_name row
            continue
        if same:
            assert shard_name(name) == shard_name(other), endpoint.alias


# --- K/N ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "shard"), [("0/1", (0, 1)), ("3/4", (3, 4)), (" 2 / 5 ", (2, 5))])
def test_k_of_n_is_parsed(text: str, shard: tuple[int, int]) -> None:
    parsed = parse_shard(text)
    assert (parsed.index, parsed.count) == shard
    assert as_shard(shard) == parsed and as_shard(text) == parsed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("3/2", "0 <= K < N"),
        ("2/2", "0 <= K < N"),
        ("-1/4", "0 <= K < N"),
        ("a/b", "whole numbers"),
        ("0/0", "0 <= K < N"),
        ("1", "K/N"),
        ("/4", "unset variable"),
        ("٣/٤", "whole numbers"),  # Arabic-Indic digits: int() would take them
        ("$(JOB_COMPLETION_INDEX)/4", "completionMode: Indexed"),
        ("${JOB_COMPLETION_INDEX}/4", "not expanded"),
    ],
)
def test_a_shard_that_does_not_exist_is_refused(text: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says.replace("$", r"\$")):
        parse_shard(text)


@pytest.mark.parametrize("value", [(1, 1), (0,), (True, 2), ("0", "2"), 3])
def test_a_bad_shard_in_the_python_api_is_refused(value: Any) -> None:
    with pytest.raises(ConfigurationError):
        as_shard(value)


# --- migrations --------------------------------------------------------------------------------


def shared_rows() -> dict[str, list[int]]:
    """Forty files, two rows that share one name, and rows spelling one file three ways."""
    rows = [make(f"file {i}.txt", f"content {i} ".encode() * (i + 1)) for i in range(40)]
    twin = FileManager.objects.create(file=rows[0].file.name)
    folder, base = str(rows[1].file.name).rsplit("/", 1)
    spelled = [
        FileManager.objects.create(file=f"{folder}//{base}"),
        FileManager.objects.create(file=f"{folder}/./{base}"),
    ]
    groups = {str(r.file.name): [r.pk] for r in rows}
    groups[str(rows[0].file.name)].append(twin.pk)
    groups[str(rows[1].file.name)] += [r.pk for r in spelled]
    return groups


COLUMNS = ("file", "bucket", "object_key", "file_size", "checksum", "content_type")


def column_values() -> dict[int, tuple[Any, ...]]:
    return {row[0]: row[1:] for row in FileManager.objects.values_list("pk", *COLUMNS)}


def run_shards(count: int, **options: Any) -> tuple[list[Any], dict[int, int]]:
    """Shards 0 to count - 1 one after another: their reports, and each row's shard."""
    reports, seen = [], Counter[int]()
    shard_by_pk: dict[int, int] = {}
    for k in range(count):

        def on_row(result: Any, k: int = k) -> None:
            seen.update([result.row.pk])
            shard_by_pk[result.row.pk] = k

        reports.append(migrate_storage(to="s3", shard=(k, count), on_row=on_row, **options))
    assert max(seen.values()) == 1, "a row walked twice"
    return reports, shard_by_pk


@pytest.mark.django_db
def test_n_shards_cover_every_row_once_and_end_as_one_process(
    s3_bucket: str, media_root: Path, settings: Any
) -> None:
    shared_rows()
    before = column_values()
    one = migrate_storage(to="s3")
    assert one.exit_code == 0, one.to_text()
    alone = {key: s3_bytes(s3_bucket, key) for key in s3_keys(s3_bucket)}
    after_one = column_values()

    for pk, values in before.items():  # back as the rows were, into a fresh bucket
        FileManager.objects.filter(pk=pk).update(**dict(zip(COLUMNS, values, strict=True)))
    other = f"{s3_bucket}-shards"
    s3_client().create_bucket(Bucket=other)
    settings.AWS_STORAGE_BUCKET_NAME = other
    reset_storages()
    reports, shard_by_pk = run_shards(3)

    assert set(shard_by_pk) == set(before)
    assert all(r.exit_code == 0 and r.shard == f"{k}/3" for k, r in enumerate(reports))
    assert sum(r.rows for r in reports) == len(before) == one.rows
    assert sum(r.copied for r in reports) == one.copied == len(alone)
    assert all(r.rows > 0 for r in reports)  # 43 rows: an empty shard is a one-in-10^7 chance
    assert {key: s3_bytes(other, key) for key in s3_keys(other)} == alone
    in_other = {
        pk: tuple(other if v == s3_bucket else v for v in row) for pk, row in after_one.items()
    }
    assert column_values() == in_other


@pytest.mark.django_db
@pytest.mark.parametrize("count", [2, 3, 5, 8])
def test_rows_sharing_a_file_are_walked_by_one_shard(
    s3_bucket: str, media_root: Path, count: int
) -> None:
    groups = shared_rows()
    reports, shard_by_pk = run_shards(count, dry_run=True)
    for pks in groups.values():
        assert len({shard_by_pk[pk] for pk in pks}) == 1, pks
    assert sum(r.rows for r in reports) == sum(len(pks) for pks in groups.values())
    assert not [p for r in reports for p in r.problems]  # no conflict between two spellings


@pytest.mark.django_db
def test_pending_limit_and_the_bar_count_only_the_shard(s3_bucket: str, media_root: Path) -> None:
    rows = [make(f"f{i}.txt", b"x" * i) for i in range(30)]
    ours = [r for r in rows if Shard(1, 3).holds(str(r.file.name))]
    totals: list[int] = []
    limited = migrate_storage(to="s3", shard=(1, 3), limit=2, on_start=totals.append)
    assert (limited.rows, limited.copied, totals) == (2, 2, [2])

    pending = migrate_storage(to="s3", shard=(1, 3), pending=True, on_start=totals.append)
    assert (pending.rows, pending.copied, totals[-1]) == (len(ours) - 2,) * 3
    assert sorted(s3_keys(s3_bucket)) == sorted(str(r.file.name) for r in ours)

    stable = migrate_storage(to="s3", shard=(0, 3), until_stable=True, pause=0)
    theirs = [r for r in rows if Shard(0, 3).holds(str(r.file.name))]
    assert (stable.copied, stable.stable, stable.shard) == (len(theirs), True, "0/3")


# --- the command -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["3/2", "-1/4", "a/b", "0/0", "$(JOB_COMPLETION_INDEX)/4"])
def test_a_bad_shard_option_is_exit_2_naming_it(s3_bucket: str, value: str) -> None:
    with pytest.raises(CommandError) as error:
        call_command("migrate_storage", "--to", "s3", f"--shard={value}", "--no-progress")
    assert error.value.returncode == 2
    assert "--shard" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.django_db
@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_delete_source_with_a_shard_is_refused(s3_bucket: str, extra: list[str]) -> None:
    make("kept.txt", b"kept")
    with pytest.raises(CommandError) as error:
        call_command("migrate_storage", "--to", "s3", "--shard", "0/2", "--delete-source", *extra)
    assert error.value.returncode == 2
    assert "purge_source" in str(error.value) and "\n" not in str(error.value)
    assert s3_keys(s3_bucket) == []


@pytest.mark.django_db
def test_the_report_says_which_shard(s3_bucket: str, media_root: Path) -> None:
    for i in range(6):
        make(f"r{i}.txt", b"r")
    text, out = io.StringIO(), io.StringIO()
    call_command("migrate_storage", "--to", "s3", "--shard", "1/2", "--dry-run", stdout=text)
    call_command("migrate_storage", "--to", "s3", "--shard", "1/2", "--format", "json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["shard"] == "1/2"
    expected = sum(Shard(1, 2).holds(str(r.file.name)) for r in FileManager.objects.all())
    assert report["totals"]["rows"] == expected
    assert text.getvalue().splitlines()[1].startswith("  Shard 1/2: only the rows")
