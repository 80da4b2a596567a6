"""The test suite on every supported Python (3.11 to 3.14): `nox` runs them all, `nox -s tests-3.12` one.

Each session installs the pinned packages into its own virtual environment and runs the same
test command as CI (`scripts/test`'s pytest runs need the PostgreSQL server it makes sure of;
run `scripts/test` once first, or set TOLLGATE_TEST_POSTGRES). Pythons that are not installed
are skipped by nox with a message. Install nox itself with `pip install nox==2026.10.20`.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = False


@nox.session(python=["3.11", "3.12", "3.13", "3.14"])
def tests(session: nox.Session) -> None:
    session.install("-r", "requirements-dev.txt")
    session.run("python", "-m", "pytest", *session.posargs)
    session.run("python", "-m", "pytest", *session.posargs, env={"TOLLGATE_TEST_DATABASE_URL": "postgres"})
