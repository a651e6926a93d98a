"""What differs between a running config and the file: a pure function, tested alone."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from procorch.confdiff import ConfigDiff, describe, diff
from procorch.config import load_config


def resolved(tmp_path: Path, toml: str, **kwargs) -> dict:
    path = tmp_path / "procorch.toml"
    path.write_text(textwrap.dedent(toml))
    return json.loads(load_config(path, environ={}, **kwargs).to_json())


A = """
[services.a]
command = "sleep 1"
"""


def test_the_same_config_differs_in_nothing(tmp_path):
    assert not diff(resolved(tmp_path, A), resolved(tmp_path, A))
    assert describe(ConfigDiff()) == []


def test_services_added_removed_and_changed_in_start_order(tmp_path):
    old = resolved(tmp_path, A + "[services.b]\ncommand = 'sleep 1'\n")
    new = resolved(
        tmp_path,
        "[services.c]\ncommand = 'sleep 2'\n[services.a]\ncommand = 'sleep 2'\nreplicas = 3\n",
    )
    d = diff(old, new)
    assert d.added == ("c",) and d.removed == ("b",)
    assert d.changed == {"a": ("command", "replicas")}
    assert describe(d) == ["added: c", "removed: b", "changed: a (command, replicas)"]


def test_sections_name_keys_never_values(tmp_path):
    secret = "a-very-secret-token-123"
    old = resolved(tmp_path, A)
    new = resolved(tmp_path, A + f"[procorch]\nmax_restarts = 9\n[gateway]\ntoken = '{secret}'\n")
    lines = describe(diff(old, new))
    assert "changed: [procorch] (max_restarts)" in lines
    assert "changed: [gateway] (token)" in lines
    assert secret not in "\n".join(lines)


def test_another_file_is_named(tmp_path):
    old = resolved(tmp_path, A)
    other = tmp_path / "other"
    other.mkdir()
    new = resolved(other, A, run_dir=tmp_path / ".procorch")
    assert describe(diff(old, new))[0] == (
        f"config file: running {tmp_path / 'procorch.toml'}, asked {other / 'procorch.toml'}"
    )
