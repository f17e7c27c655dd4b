"""Test settings: the sample project's settings, with an environment that never reaches real AWS.

Set before the sample settings are imported, so that neither the developer's shell nor a .env
file next to manage.py can point a test at a real bucket. DATABASE_URL alone is taken from the
environment (CI runs the suite on SQLite and on PostgreSQL).
"""

import os
import tempfile
from pathlib import Path

TEST_ENV = {
    "SECRET_KEY": "tests-only",
    "DEBUG": "False",
    "USE_S3_STORAGE": "False",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_STORAGE_BUCKET_NAME": "test-bucket",
    "AWS_S3_REGION_NAME": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_S3_ENDPOINT_URL": "",
    "AWS_S3_CUSTOM_DOMAIN": "",
    "AWS_QUERYSTRING_AUTH": "True",
    "AWS_LOCATION": "",
    "NEW_AWS_STORAGE_BUCKET_NAME": "",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "SFTP_HOST": "",  # the tests' SFTP server is given per test (conftest.sftp_root)
    "MEDIA_ROOT": str(Path(tempfile.gettempdir()) / "storage-migrate-tests-unused-media"),
}
os.environ.update(TEST_ENV)
os.environ.pop("AWS_PROFILE", None)

_sqlite_dir = Path(tempfile.mkdtemp(prefix="storage-migrate-tests-"))
if not os.environ.get("DATABASE_URL"):
    os.environ["DATABASE_URL"] = f"sqlite:///{_sqlite_dir / 'db.sqlite3'}"

from shams_vision.settings import *  # noqa: E402,F403
from shams_vision.settings import DATABASES, INSTALLED_APPS  # noqa: E402

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

# A file, not :memory:, so that manage.py subprocesses in end-to-end tests see the test database.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["TEST"] = {"NAME": str(_sqlite_dir / "test.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
