"""How durable the services' own databases are: `[procorch] synchronous`, end to end."""

from __future__ import annotations

import json

import pytest

from procorch.services.database import Database
from tests.conftest import python_service


@pytest.mark.parametrize(("setting", "pragma"), [(None, 1), ("normal", 1), ("full", 2)])
def test_the_services_databases_sync_as_configured(stack, setting, pragma):
    settings = f'synchronous = "{setting}"\n' if setting else ""
    stack.write(python_service("durable", cls="Durable", replicas=2), settings=settings)
    stack.up()
    for _ in range(4):  # spread over both replicas
        reply = stack.cli("call", "durable", "synchronous", "--json")
        assert reply.returncode == 0, reply.stderr
        assert json.loads(reply.stdout)["data"] == {"synchronous": pragma}


def test_a_database_file_and_its_log_are_owner_only_and_full_syncs(tmp_path):
    db = Database(tmp_path, "t", "CREATE TABLE t (x)", synchronous="full")
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    assert db.one("PRAGMA synchronous") == {"synchronous": 2}
    for path in (tmp_path / "data").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    db.close()


def test_a_bad_setting_is_refused_in_one_line(stack):
    stack.config.write_text('[procorch]\nsynchronous = "sometimes"\n')
    result = stack.cli("up")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("procorch: procorch.toml: procorch.synchronous")
    assert "Traceback" not in result.stderr
