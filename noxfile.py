"""The Django and Python versions our users run, each running `make test-fast` (without the
end-to-end tests) in its own venv.

    nox                 # the whole matrix
    nox -s tests-3.12-django-6.0

The interpreters come from PATH; with pyenv, every installed 3.11-3.13 is made visible to its
shims first (pyenv exposes only the global version otherwise), so the matrix needs nothing from
outside the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

# (Python, Django): the LTS most sites run, the first 6.x (which needs 3.12), the newest.
MATRIX = [("3.11", "5.2"), ("3.12", "6.0"), ("3.13", "newest")]

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True


def _pyenv_versions() -> None:
    if shutil.which("pyenv") is None or os.environ.get("PYENV_VERSION"):
        return
    installed = subprocess.run(
        ["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False
    ).stdout.split()
    wanted = {python for python, _ in MATRIX}
    chosen = [v for v in installed if ".".join(v.split(".")[:2]) in wanted]
    if chosen:
        os.environ["PYENV_VERSION"] = ":".join(chosen)


_pyenv_versions()


def _tests(session: nox.Session, django: str) -> None:
    pin = "Django" if django == "newest" else f"Django~={django}.0"
    # As `make install` does: the SPDX license string needs setuptools 77 or later.
    session.install("--upgrade", "pip", "setuptools>=77", "wheel")
    session.install("-e", ".[test,wagtail]", pin)
    session.run("python", "-m", "django", "--version")
    venv = session.virtualenv.location
    # The Makefile's install stamp, so that `make test-fast` uses this venv as it is.
    open(os.path.join(venv, ".installed-stamp"), "w").close()
    extra = [f"PYTEST_ARGS={' '.join(session.posargs)}"] if session.posargs else []
    # The end-to-end tests (manage.py subprocesses against S3 servers) run in the main suite on
    # both databases; here, what depends on the Python and Django versions.
    fast = "FAST_MARK=not slow and not e2e"
    session.run("make", "test-fast", f"VENV={venv}", fast, *extra, external=True)


def _register(python: str, django: str) -> None:
    @nox.session(python=python, name=f"tests-{python}-django-{django}")
    def tests(session: nox.Session) -> None:
        _tests(session, django)


for _python, _django in MATRIX:
    _register(_python, _django)
