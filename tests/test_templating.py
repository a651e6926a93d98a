"""{replica} and {port} in command arguments and env values: the pure expansion, the
checks at config load, and real replicas that each get their own arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from procorch import templating
from procorch.config import Config
from tests.conftest import PY, config_error, load_toml, wait_for
from tests.test_cli import assert_one_line_error

# == the pure functions ===============================================================


@pytest.mark.parametrize(
    ("template", "replica", "base_port", "expected"),
    [
        ("plain", 3, None, "plain"),
        ("w{replica}", 0, None, "w0"),
        ("w{replica}", 12, None, "w12"),
        ("w{replica:03d}", 7, None, "w007"),
        ("{port}", 2, 8000, "8002"),
        ("--bind=127.0.0.1:{port}", 0, 9000, "--bind=127.0.0.1:9000"),
        ("{{replica}} is {replica}", 1, None, "{replica} is 1"),
        ("{{}}", 0, None, "{}"),
        ("a}}b{{c", 0, None, "a}b{c"),
    ],
)
def test_expand(template: str, replica: int, base_port: int | None, expected: str) -> None:
    assert templating.problem(template, base_port) is None
    assert templating.expand(template, replica, base_port) == expected


@pytest.mark.parametrize(
    ("template", "base_port", "expected"),
    [
        ("{name}", None, "unknown placeholder {name} in '{name}'"),
        ("${HOME}/x", None, "unknown placeholder {HOME} in '${HOME}/x'"),
        ("{}", None, "unknown placeholder {} in '{}'"),
        ("{0}", None, "unknown placeholder {0}"),
        ("{replica.real}", None, "unknown placeholder {replica.real}"),
        ("{replica", None, "expected '}' before end of string in '{replica'"),
        ("a}b", None, "Single '}' encountered in format string in 'a}b'"),
        ("{port}", None, "{port} in '{port}' needs `base_port`"),
        ("{replica:q}", None, "cannot fill in '{replica:q}'"),
    ],
)
def test_problems(template: str, base_port: int | None, expected: str) -> None:
    problem = templating.problem(template, base_port)
    assert problem is not None and problem.startswith(expected), problem
    if "unknown" in expected or "Single" in expected:
        assert "write {{ and }} for literal braces" in problem


# == at config load ===================================================================


def test_each_replica_gets_its_command_and_env(tmp_path: Path) -> None:
    cfg = load_toml(
        tmp_path,
        """
        [services.w]
        command = ["worker", "--name", "w{replica}", "--port", "{port}", "{{literal}}"]
        replicas = 3
        base_port = 8000
        env = { SLOT = "s{replica}", URL = "http://127.0.0.1:{port}/", PLAIN = "x" }
        """,
    )
    svc = cfg.service("w")
    assert svc.command == ("worker", "--name", "w{replica}", "--port", "{port}", "{{literal}}")
    assert svc.argv(2) == ("worker", "--name", "w2", "--port", "8002", "{literal}")
    assert svc.environment(1) == {"SLOT": "s1", "URL": "http://127.0.0.1:8001/", "PLAIN": "x"}
    assert Config.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'command = ["w", "--id", "{worker}"]',
            "services.w.command: unknown placeholder {worker} in '{worker}' (known: {replica}, "
            "{port}; write {{ and }} for literal braces)",
        ),
        (
            "command = \"sh -c 'echo ${HOME}'\"",
            "services.w.command: unknown placeholder {HOME} in 'echo ${HOME}'",
        ),
        (
            'command = ["w"]\nenv = { P = "{port}" }',
            "services.w.env.P: {port} in '{port}' needs `base_port` (the port of replica 0)",
        ),
        (
            'command = ["w", "{port}"]\nbase_port = 65535\nreplicas = 2',
            "services.w.base_port: 65535 + 1 (the last replica's port) is above 65535",
        ),
        ('command = ["w"]\nbase_port = 0', "services.w.base_port: expected an integer ≥ 1"),
    ],
)
def test_config_errors_name_the_key_and_the_placeholder(
    tmp_path: Path, body: str, expected: str
) -> None:
    message = config_error(tmp_path, "[services.w]\n" + body + "\n")
    assert message.startswith(expected), message


def test_a_bad_placeholder_is_exit_2_in_one_line(stack) -> None:
    stack.write('[services.w]\ncommand = ["w", "{nope}"]\n')
    assert_one_line_error(stack.cli("up"), 2, "unknown placeholder {nope}")
    assert not stack.run_dir.exists()  # nothing started


# == real replicas ====================================================================


def test_real_replicas_get_their_own_arguments_and_env(stack) -> None:
    out = stack.root / "out"
    out.mkdir()
    code = (
        "import json, os, sys; "
        "open(sys.argv[1], 'w').write(json.dumps([sys.argv[2:], os.environ['PORT_URL']])); "
        "import time; time.sleep(1e6)"
    )
    stack.write(
        f"""
        [services.w]
        command = [{json.dumps(PY)}, "-c", {json.dumps(code)}, "{out}/w{{replica}}.json",
                   "--name", "w{{replica:02d}}", "--port", "{{port}}", "{{{{x}}}}"]
        replicas = 3
        base_port = 18000
        env = {{ PORT_URL = "http://127.0.0.1:{{port}}/r{{replica}}" }}
        start_seconds = 0.1
        """
    )
    stack.up()

    def written() -> list | None:
        """What each replica wrote, once all three have (a file may be empty at first)."""
        try:
            return [json.loads((out / f"w{i}.json").read_text()) for i in range(3)]
        except (OSError, ValueError):
            return None

    for i, arguments in enumerate(wait_for(written, timeout=10)):
        assert arguments == [
            ["--name", f"w{i:02d}", "--port", str(18000 + i), "{x}"],
            f"http://127.0.0.1:{18000 + i}/r{i}",
        ]
