"""The documentation says what the code does: config keys, shipped config, the two commands."""

from __future__ import annotations

import re

import config
from tests.helpers import MASTER_KEY
from tests.servers import REPO

REFERENCE = (REPO / "docs" / "configuration.md").read_text()


def documented_keys(heading: str) -> set[str]:
    """The backticked keys in the first column of the table under `heading`."""
    section = REFERENCE.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))


def test_documented_keys_are_exactly_the_accepted_keys():
    assert documented_keys("### litellm_params") == config._DEPLOYMENT_PARAMS
    assert documented_keys("### model_info") == config._MODEL_INFO_KEYS
    assert documented_keys("## litellm_settings") == config._LITELLM_SETTINGS
    assert documented_keys("## general_settings") == config._GENERAL_SETTINGS


def test_shipped_config_uses_only_supported_keys():
    shipped = config.load_config(str(REPO / "config.yaml"), {"LITELLM_MASTER_KEY": MASTER_KEY})
    assert shipped.warnings == ()


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    commands = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(commands) == 2
    run, test = commands
    assert "gunicorn -c gunicorn.conf.py 'app:create_app()'" in run
    procfile = dict(line.split(": ", 1) for line in (REPO / "Procfile").read_text().strip().splitlines())
    assert procfile == {"release": "python cli.py migrate", "web": "gunicorn -c gunicorn.conf.py 'app:create_app()'"}
    assert test in (REPO / ".ci" / "run").read_text().splitlines()


def test_every_environment_setting_the_code_reads_is_documented():
    table = REFERENCE.split("\n## Environment\n", 1)[1].split("\n#", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z_]+)`", table))
    sources = [path for path in REPO.glob("**/*.py") if path.parts[len(REPO.parts)] not in ("tests", "bench")]
    read = set()
    for path in sources:
        read |= set(re.findall(r"\b(?:environ|env)\.get\(\s*\"([A-Z][A-Z_]+)\"", path.read_text()))
    assert {"DATABASE_URL", "TOLLGATE_MIGRATIONS", "DATABASE_POOL_SIZE"} <= read
    assert read - documented == set()
