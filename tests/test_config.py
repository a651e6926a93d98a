"""Tests for procorch.config: loading, validation messages, ordering and overrides."""

from __future__ import annotations

import dataclasses
import re
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from procorch.config import (
    ENV_OVERRIDES,
    EXAMPLE_TOML,
    Config,
    ConfigError,
    GatewaySettings,
    HealthCheck,
    JobsSettings,
    ServiceConfig,
    Settings,
    auto_workers,
    load_config,
)

BUILT_IN = (
    ServiceConfig(name="UserService", module="procorch.services.users:UserService"),
    ServiceConfig(
        name="NotificationService", module="procorch.services.notifications:NotificationService"
    ),
    ServiceConfig(
        name="OrderService",
        module="procorch.services.orders:OrderService",
        depends_on=("UserService",),
    ),
)
JOB_WORKER = ServiceConfig(name="JobWorker", module="procorch.jobs.worker:JobWorker", replicas=2)
DEFAULT_STACK = (*BUILT_IN, JOB_WORKER)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(text: str, name: str = "procorch.toml") -> Path:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(text: str, environ: dict[str, str] | None = None, **kwargs) -> Config:
    return load_config(write(text), environ=environ or {}, **kwargs)


def error(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(text, environ)
    message = str(info.value)
    assert "\n" not in message
    return message


def names(config: Config) -> list[str]:
    return [svc.name for svc in config.services]


# --- no file, empty file ---------------------------------------------------------


def test_no_file_gives_the_default_stack(tmp_path: Path) -> None:
    config = load_config(environ={})
    assert config.path is None
    assert config.services == DEFAULT_STACK
    assert config.settings == Settings(run_dir=tmp_path / ".procorch")
    assert config.gateway == GatewaySettings()


def test_procorch_toml_in_cwd_is_found(tmp_path: Path) -> None:
    write("[services.web]\ncommand = 'true'\n")
    config = load_config(environ={})
    assert config.path == tmp_path / "procorch.toml"
    assert names(config) == ["web"]


def test_empty_file_gives_the_default_stack_with_path(tmp_path: Path) -> None:
    config = load("")
    assert config.path == tmp_path / "procorch.toml"
    assert config.path.is_absolute()
    assert config.services == DEFAULT_STACK
    assert config.settings == Settings(run_dir=tmp_path / ".procorch")


def test_settings_without_services_keep_the_default_stack() -> None:
    config = load("[procorch]\nmax_restarts = 2\n[services]\n")
    assert config.services == DEFAULT_STACK
    assert config.settings.max_restarts == 2


def test_explicit_missing_file_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^nope\.toml: no such file$"):
        load_config(Path("nope.toml"), environ={})


# --- every key -------------------------------------------------------------------


def test_every_key_is_parsed(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    config = load(
        """
        [procorch]
        run_dir = "state"
        check_interval = 0.5
        heartbeat_timeout = 3
        max_restarts = 0
        restart_window = 30
        backoff_max = 0
        log_max_bytes = 1024
        log_backups = 0
        log_level = "debug"

        [services.worker]
        module = "pkg.sub.mod:Outer.Worker"
        replicas = 3
        env = { A = "x", N = 2, F = 1.5, B = true, C = false }
        heartbeat_timeout = 2.5
        stop_signal = "int"
        restart = "Never"

        [services.web]
        command = ["python", "-m", "http.server", "8000"]
        cwd = "work"
        depends_on = ["worker"]
        restart = "on-failure"
        stop_signal = 9
        stop_timeout = 2
        start_seconds = 0
        health = { tcp = 8000, host = "localhost", timeout = 0.25 }

        [services.api]
        command = "sh -c 'echo \\"hi there\\"'"
        health = { http = "http://127.0.0.1:8080/ready" }

        [gateway]
        enabled = true
        host = "0.0.0.0"
        port = 8080
        """
    )
    assert config.settings == Settings(
        run_dir=tmp_path / "state",
        check_interval=0.5,
        heartbeat_timeout=3.0,
        max_restarts=0,
        restart_window=30.0,
        backoff_max=0.0,
        log_max_bytes=1024,
        log_backups=0,
        log_level="DEBUG",
    )
    assert config.gateway == GatewaySettings(enabled=True, host="0.0.0.0", port=8080)
    worker, web, api, gateway = config.services
    # `workers = "auto"`, the default: one replica per CPU
    replicas = auto_workers()
    assert gateway == ServiceConfig(
        name="Gateway", module="procorch.gateway.service:Gateway", replicas=replicas
    )
    assert worker == ServiceConfig(
        name="worker",
        module="pkg.sub.mod:Outer.Worker",
        replicas=3,
        env={"A": "x", "N": "2", "F": "1.5", "B": "true", "C": "false"},
        heartbeat_timeout=2.5,
        stop_signal=signal.SIGINT,
        restart="never",
    )
    assert web == ServiceConfig(
        name="web",
        command=("python", "-m", "http.server", "8000"),
        cwd=tmp_path / "work",
        depends_on=("worker",),
        restart="on-failure",
        stop_signal=signal.SIGKILL,
        stop_timeout=2.0,
        start_seconds=0.0,
        health=HealthCheck(tcp=8000, host="localhost", timeout=0.25),
    )
    assert api.command == ("sh", "-c", 'echo "hi there"')
    assert api.health == HealthCheck(http="http://127.0.0.1:8080/ready")
    assert not api.is_python and worker.is_python


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ('"TERM"', signal.SIGTERM),
        ('"SIGTERM"', signal.SIGTERM),
        ('"sighup"', signal.SIGHUP),
        ('"int"', signal.SIGINT),
        ("2", signal.SIGINT),
    ],
)
def test_stop_signal_forms(written: str, expected: signal.Signals) -> None:
    config = load(f"[services.s]\ncommand = 'x'\nstop_signal = {written}\n")
    assert config.services[0].stop_signal is expected


def test_cwd_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "proj" / "app").mkdir(parents=True)
    path = write("[services.s]\ncommand = 'x'\ncwd = 'app'\n", "proj/procorch.toml")
    assert load_config(path, environ={}).services[0].cwd == tmp_path / "proj" / "app"


# --- error messages --------------------------------------------------------------

SVC = "[services.web]\ncommand = 'x'\n"  # a valid service to add one bad key to


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # structure
        ("servces = 1\n", "procorch.toml: unknown key 'servces' (did you mean 'services'?)"),
        ("[zzz]\n", "procorch.toml: unknown key 'zzz'"),
        ("procorch = 1\n", "procorch.toml: procorch: expected a table, got 1"),
        ("services = 'web'\n", "procorch.toml: services: expected a table, got 'web'"),
        ("[services]\nweb = 1\n", "procorch.toml: services.web: expected a table, got 1"),
        (
            SVC + "replica = 2\n",
            "procorch.toml: services.web: unknown key 'replica' (did you mean 'replicas'?)",
        ),
        (SVC + "colour = 2\n", "procorch.toml: services.web: unknown key 'colour'"),
        (
            "[procorch]\nlog_levle = 'INFO'\n",
            "procorch.toml: procorch: unknown key 'log_levle' (did you mean 'log_level'?)",
        ),
        # names
        (
            "[services.'a b']\ncommand = 'x'\n",
            "procorch.toml: services: invalid service name 'a b' "
            "(use letters, digits, '_', '-' and '.')",
        ),
        (
            "[services.''] \ncommand = 'x'\n",
            "procorch.toml: services: invalid service name '' "
            "(use letters, digits, '_', '-' and '.')",
        ),
        (
            SVC + "[services.Web]\ncommand = 'y'\n",
            "procorch.toml: services.Web: same name as 'web' (service names ignore case)",
        ),
        # module / command
        (
            "[services.web]\nreplicas = 1\n",
            "procorch.toml: services.web: missing `command` or `module`",
        ),
        (
            SVC + "module = 'a:B'\n",
            "procorch.toml: services.web: give either `command` or `module`, not both",
        ),
        *(
            (
                f"[services.web]\nmodule = {bad}\n",
                f"procorch.toml: services.web.module: "
                f"expected 'package.module:ClassName', got {shown}",
            )
            for bad, shown in [
                ("'pkg.mod'", "'pkg.mod'"),
                ("'a:b:C'", "'a:b:C'"),
                ("':C'", "':C'"),
                ("'pkg.:C'", "'pkg.:C'"),
                ("'1pkg:C'", "'1pkg:C'"),
                ("'pkg:'", "'pkg:'"),
                ("3", "3"),
            ]
        ),
        (
            "[services.web]\ncommand = []\n",
            "procorch.toml: services.web.command: expected a non-empty command, got []",
        ),
        (
            "[services.web]\ncommand = '  '\n",
            "procorch.toml: services.web.command: expected a non-empty command, got '  '",
        ),
        (
            "[services.web]\ncommand = ['a', 1]\n",
            "procorch.toml: services.web.command: expected a list of strings or a string, "
            "got ['a', 1]",
        ),
        (
            "[services.web]\ncommand = 'echo \"oops'\n",
            "procorch.toml: services.web.command: "
            "cannot split 'echo \"oops' (No closing quotation)",
        ),
        # numbers
        (
            SVC + "replicas = 'two'\n",
            "procorch.toml: services.web.replicas: expected an integer ≥ 1, got 'two'",
        ),
        (
            SVC + "replicas = 0\n",
            "procorch.toml: services.web.replicas: expected an integer ≥ 1, got 0",
        ),
        (
            SVC + "replicas = 1001\n",
            "procorch.toml: services.web.replicas: expected an integer ≤ 1000, got 1001",
        ),
        (
            SVC + "replicas = true\n",
            "procorch.toml: services.web.replicas: expected an integer ≥ 1, got true",
        ),
        (
            SVC + "replicas = 1.0\n",
            "procorch.toml: services.web.replicas: expected an integer ≥ 1, got 1.0",
        ),
        (
            SVC + "stop_timeout = 0\n",
            "procorch.toml: services.web.stop_timeout: expected a number > 0, got 0",
        ),
        (
            SVC + "stop_timeout = true\n",
            "procorch.toml: services.web.stop_timeout: expected a number > 0, got true",
        ),
        (
            SVC + "stop_timeout = inf\n",
            "procorch.toml: services.web.stop_timeout: expected a number > 0, got inf",
        ),
        (
            SVC + "stop_timeout = nan\n",
            "procorch.toml: services.web.stop_timeout: expected a number > 0, got nan",
        ),
        (
            SVC + "start_seconds = -1\n",
            "procorch.toml: services.web.start_seconds: expected a number ≥ 0, got -1",
        ),
        (
            SVC + "heartbeat_timeout = '5'\n",
            "procorch.toml: services.web.heartbeat_timeout: expected a number > 0, got '5'",
        ),
        # other service keys
        (
            SVC + "env = { A = [1] }\n",
            "procorch.toml: services.web.env.A: expected a string or a number, got [1]",
        ),
        (SVC + "env = ['A=1']\n", "procorch.toml: services.web.env: expected a table, got ['A=1']"),
        (SVC + "cwd = 3\n", "procorch.toml: services.web.cwd: expected a non-empty string, got 3"),
        (
            SVC + "restart = 'sometimes'\n",
            "procorch.toml: services.web.restart: expected one of 'always', 'on-failure', "
            "'never', got 'sometimes'",
        ),
        (
            SVC + "restart = 'on_failure'\n",
            "procorch.toml: services.web.restart: expected one of 'always', 'on-failure', "
            "'never', got 'on_failure' (did you mean 'on-failure'?)",
        ),
        *(
            (
                SVC + f"stop_signal = {bad}\n",
                f"procorch.toml: services.web.stop_signal: "
                f"expected a signal name like 'TERM' or a number, got {bad}",
            )
            for bad in ["'NOPE'", "999", "true", "1.5"]
        ),
        (
            SVC + "depends_on = 'db'\n",
            "procorch.toml: services.web.depends_on: expected a list of service names, got 'db'",
        ),
        (
            SVC + "depends_on = ['wbe']\n[services.db]\ncommand = 'y'\n",
            "procorch.toml: services.web.depends_on: unknown service 'wbe' (did you mean 'web'?)",
        ),
        (
            SVC + "depends_on = ['zzz']\n",
            "procorch.toml: services.web.depends_on: unknown service 'zzz'",
        ),
        # health
        (
            "[services.web]\nmodule = 'a:B'\nhealth = { tcp = 80 }\n",
            "procorch.toml: services.web.health: only command services can have a health check",
        ),
        (SVC + "health = {}\n", "procorch.toml: services.web.health: missing `tcp` or `http`"),
        (
            SVC + "health = { tcp = 80, http = 'http://x/' }\n",
            "procorch.toml: services.web.health: give either `tcp` or `http`, not both",
        ),
        (
            SVC + "health = { tcp = 0 }\n",
            "procorch.toml: services.web.health.tcp: expected an integer ≥ 1, got 0",
        ),
        (
            SVC + "health = { tcp = 65536 }\n",
            "procorch.toml: services.web.health.tcp: expected an integer ≤ 65535, got 65536",
        ),
        (
            SVC + "health = { http = 'ftp://x/' }\n",
            "procorch.toml: services.web.health.http: expected an http:// or https:// URL, "
            "got 'ftp://x/'",
        ),
        (
            SVC + "health = { http = 'http://[::1/' }\n",
            "procorch.toml: services.web.health.http: expected an http:// or https:// URL, "
            "got 'http://[::1/'",
        ),
        (
            SVC + "health = { http = 'http://x/', host = 'y' }\n",
            "procorch.toml: services.web.health.host: only used with `tcp` "
            "(the `http` URL names the host)",
        ),
        (
            SVC + "health = { tcp = 80, timeout = 0 }\n",
            "procorch.toml: services.web.health.timeout: expected a number > 0, got 0",
        ),
        (
            SVC + "health = { tcp = 80, tiemout = 1 }\n",
            "procorch.toml: services.web.health: unknown key 'tiemout' (did you mean 'timeout'?)",
        ),
        # [procorch]
        (
            "[procorch]\nrun_dir = ''\n",
            "procorch.toml: procorch.run_dir: expected a non-empty string, got ''",
        ),
        (
            "[procorch]\ncheck_interval = 0\n",
            "procorch.toml: procorch.check_interval: expected a number > 0, got 0",
        ),
        (
            "[procorch]\nheartbeat_timeout = -1\n",
            "procorch.toml: procorch.heartbeat_timeout: expected a number > 0, got -1",
        ),
        (
            "[procorch]\nmax_restarts = -1\n",
            "procorch.toml: procorch.max_restarts: expected an integer ≥ 0, got -1",
        ),
        (
            "[procorch]\nmax_restarts = 1.5\n",
            "procorch.toml: procorch.max_restarts: expected an integer ≥ 0, got 1.5",
        ),
        (
            "[procorch]\nrestart_window = 0\n",
            "procorch.toml: procorch.restart_window: expected a number > 0, got 0",
        ),
        (
            "[procorch]\nbackoff_max = -0.5\n",
            "procorch.toml: procorch.backoff_max: expected a number ≥ 0, got -0.5",
        ),
        (
            "[procorch]\nlog_max_bytes = 1023\n",
            "procorch.toml: procorch.log_max_bytes: expected an integer ≥ 1024, got 1023",
        ),
        (
            "[procorch]\nlog_backups = -1\n",
            "procorch.toml: procorch.log_backups: expected an integer ≥ 0, got -1",
        ),
        (
            "[procorch]\nlog_level = 'LOUD'\n",
            "procorch.toml: procorch.log_level: expected one of 'DEBUG', 'INFO', 'WARNING', "
            "'ERROR', 'CRITICAL', got 'LOUD'",
        ),
        # [gateway]
        ("[gateway]\nport = 0\n", "procorch.toml: gateway.port: expected an integer ≥ 1, got 0"),
        (
            "[gateway]\nport = 65536\n",
            "procorch.toml: gateway.port: expected an integer ≤ 65535, got 65536",
        ),
        (
            "[gateway]\nport = '80'\n",
            "procorch.toml: gateway.port: expected an integer ≥ 1, got '80'",
        ),
        (
            "[gateway]\nhost = ''\n",
            "procorch.toml: gateway.host: expected a non-empty string, got ''",
        ),
        (
            "[gateway]\nenabled = 'yes'\n",
            "procorch.toml: gateway.enabled: expected true or false, got 'yes'",
        ),
    ],
)
def test_error_messages(text: str, expected: str) -> None:
    assert error(text) == expected


def test_missing_cwd_names_the_directory(tmp_path: Path) -> None:
    message = error(SVC + "cwd = 'nowhere'\n")
    assert (
        message == f"procorch.toml: services.web.cwd: no such directory: '{tmp_path / 'nowhere'}'"
    )


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("a = 1\nb = = 2\n", "line 2, column 5"),
        ("[x]\n[x]\n", "line 2, column 3"),
        ('a = "x\ny"\n', "line 1, column 7"),
        ("a = ", "end of file"),
    ],
)
def test_toml_syntax_errors_are_one_line_with_position(text: str, position: str) -> None:
    # The problem itself is tomllib's wording, which may change between Python versions.
    assert re.fullmatch(rf"procorch\.toml: {position}: invalid TOML \([^()]+.*\)", error(text))


def test_the_file_is_named_as_given(tmp_path: Path) -> None:
    path = write("[gateway]\nport = 0\n", "conf/my.toml")
    with pytest.raises(ConfigError, match=r"^conf/my\.toml: gateway\.port: "):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))}/conf/my\.toml: "):
        load_config(tmp_path / path, environ={})


def test_non_utf8_file() -> None:
    Path("procorch.toml").write_bytes(b"a = '\xff'\n")
    with pytest.raises(ConfigError, match=r"^procorch\.toml: not UTF-8 text \("):
        load_config(environ={})


def test_a_directory_is_not_a_config_file() -> None:
    Path("procorch.toml").mkdir()
    with pytest.raises(ConfigError, match=r"^procorch\.toml: cannot read \("):
        load_config(environ={})


# --- dependencies ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[services.a]\ncommand = 'x'\ndepends_on = ['a']\n",
            "procorch.toml: services.a.depends_on: dependency cycle a -> a",
        ),
        (
            """
            [services.a]
            command = 'x'
            depends_on = ['b']
            [services.b]
            command = 'x'
            depends_on = ['a']
            """,
            "procorch.toml: services.a.depends_on: dependency cycle a -> b -> a",
        ),
        (
            """
            [services.free]
            command = 'x'
            [services.entry]
            command = 'x'
            depends_on = ['free', 'a']
            [services.a]
            command = 'x'
            depends_on = ['b']
            [services.b]
            command = 'x'
            depends_on = ['c']
            [services.c]
            command = 'x'
            depends_on = ['free', 'A']
            """,
            "procorch.toml: services.a.depends_on: dependency cycle a -> b -> c -> a",
        ),
    ],
)
def test_dependency_cycles(text: str, expected: str) -> None:
    assert error(text) == expected


def test_start_order_puts_dependencies_first_and_keeps_file_order() -> None:
    config = load(
        """
        [services.web]
        command = 'x'
        depends_on = ['db', 'cache']
        [services.standalone]
        command = 'x'
        [services.cache]
        command = 'x'
        [services.db]
        command = 'x'
        depends_on = ['cache']
        [services.zlast]
        command = 'x'
        """
    )
    assert names(config) == ["standalone", "cache", "db", "web", "zlast"]


def test_depends_on_and_service_lookup_ignore_case() -> None:
    config = load(
        """
        [services.Web]
        command = 'x'
        depends_on = ['DB', 'db']
        [services.Db]
        command = 'x'
        """
    )
    assert names(config) == ["Db", "Web"]
    assert config.service("web").depends_on == ("Db",)
    assert config.service("WEB") is config.services[1]
    with pytest.raises(KeyError):
        config.service("nope")


# --- environment overrides -------------------------------------------------------


def test_environment_beats_dotenv_beats_toml() -> None:
    write("[procorch]\nmax_restarts = 1\nlog_level = 'error'\n")
    assert load_config(environ={}).settings.max_restarts == 1
    write("MAX_RESTART_ATTEMPTS=2\nLOG_LEVEL=warning\n", ".env")
    settings = load_config(environ={}).settings
    assert (settings.max_restarts, settings.log_level) == (2, "WARNING")
    settings = load_config(environ={"MAX_RESTART_ATTEMPTS": "3"}).settings
    assert (settings.max_restarts, settings.log_level) == (3, "WARNING")


def test_every_override_variable(tmp_path: Path) -> None:
    environ = {
        "SERVICE_CHECK_INTERVAL": "0.25",
        "HEARTBEAT_TIMEOUT": "7",
        "MAX_RESTART_ATTEMPTS": "9",
        "LOG_LEVEL": "debug",
        "GATEWAY_HOST": "0.0.0.0",
        "GATEWAY_PORT": "8081",
        "PROCORCH_TOKEN": "s3cret-s3cret-s3cret",
    }
    config = load_config(environ=environ)  # no file: overrides apply to the defaults too
    assert config.settings == Settings(
        run_dir=tmp_path / ".procorch",
        check_interval=0.25,
        heartbeat_timeout=7.0,
        max_restarts=9,
        log_level="DEBUG",
    )
    assert config.gateway == GatewaySettings(
        host="0.0.0.0", port=8081, token="s3cret-s3cret-s3cret"
    )
    assert set(environ) == set(ENV_OVERRIDES)


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "7000")
    assert load_config().gateway.port == 7000


def test_empty_variables_count_as_unset() -> None:
    write("GATEWAY_PORT=6000\n", ".env")
    assert load_config(environ={"GATEWAY_PORT": ""}).gateway.port == 6000


def test_dotenv_is_read_beside_the_config_file_not_the_cwd() -> None:
    path = write("[gateway]\nport = 5001\n", "proj/procorch.toml")
    write("GATEWAY_PORT=5002\n", "proj/.env")
    write("GATEWAY_PORT=5003\n", ".env")
    assert load_config(path, environ={}).gateway.port == 5002


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"MAX_RESTART_ATTEMPTS": "x"},
            "environment: MAX_RESTART_ATTEMPTS: expected an integer ≥ 0, got 'x'",
        ),
        (
            {"SERVICE_CHECK_INTERVAL": "0"},
            "environment: SERVICE_CHECK_INTERVAL: expected a number > 0, got '0'",
        ),
        (
            {"HEARTBEAT_TIMEOUT": "soon"},
            "environment: HEARTBEAT_TIMEOUT: expected a number > 0, got 'soon'",
        ),
        (
            {"GATEWAY_PORT": "http"},
            "environment: GATEWAY_PORT: expected an integer ≥ 1, got 'http'",
        ),
        ({"GATEWAY_PORT": "1e3"}, "environment: GATEWAY_PORT: expected an integer ≥ 1, got '1e3'"),
        ({"GATEWAY_HOST": " "}, "environment: GATEWAY_HOST: expected a non-empty string, got ' '"),
        (
            {"LOG_LEVEL": "verbose"},
            "environment: LOG_LEVEL: expected one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', "
            "'CRITICAL', got 'verbose'",
        ),
    ],
)
def test_bad_environment_values(environ: dict[str, str], expected: str) -> None:
    assert error("", environ) == expected


def test_bad_dotenv_value_names_the_dotenv_file() -> None:
    path = write("", "proj/procorch.toml")
    write("GATEWAY_PORT=99999\n", "proj/.env")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == "proj/.env: GATEWAY_PORT: expected an integer ≤ 65535, got '99999'"
    # The real environment wins, so the bad value is never used and does not matter.
    assert load_config(path, environ={"GATEWAY_PORT": "80"}).gateway.port == 80


def test_dotenv_is_imported_only_when_there_is_a_dotenv_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "dotenv", raising=False)
    load_config(environ={})
    assert "dotenv" not in sys.modules


# --- run_dir ---------------------------------------------------------------------


def test_run_dir_precedence(tmp_path: Path) -> None:
    path = write("[procorch]\nrun_dir = 'state'\n", "proj/procorch.toml")
    assert load_config(path, environ={}).settings.run_dir == tmp_path / "proj" / "state"
    by_cli = load_config(path, run_dir=Path("cli"), environ={}).settings.run_dir
    assert by_cli == tmp_path / "cli"  # relative to the cwd, like any CLI argument
    absolute = load_config(path, run_dir=tmp_path / "abs", environ={}).settings.run_dir
    assert absolute == tmp_path / "abs"
    plain = write("", "other/procorch.toml")
    assert load_config(plain, environ={}).settings.run_dir == tmp_path / "other" / ".procorch"


def test_run_dir_is_absolute_and_need_not_exist(tmp_path: Path) -> None:
    run_dir = load("[procorch]\nrun_dir = 'a/../b/c'\n").settings.run_dir
    assert run_dir == tmp_path / "b" / "c"
    assert run_dir.is_absolute() and not run_dir.exists()


# --- the example -----------------------------------------------------------------


def test_example_toml_loads(tmp_path: Path) -> None:
    config = load(EXAMPLE_TOML)
    assert names(config) == [
        "UserService", "NotificationService", "OrderService", "web", "JobWorker"
    ]  # fmt: skip
    *built_in, web, worker = config.services
    assert tuple(built_in) == BUILT_IN
    assert worker == JOB_WORKER
    assert web.command == ("python3", "-m", "http.server", "8000")
    assert (web.replicas, web.restart, web.depends_on) == (1, "on-failure", ("UserService",))
    assert web.health == HealthCheck(tcp=8000)
    assert config.settings == Settings(run_dir=tmp_path / ".procorch")


def test_example_toml_documents_every_key_and_variable() -> None:
    for cls in (Settings, ServiceConfig, HealthCheck, GatewaySettings, JobsSettings):
        for fld in dataclasses.fields(cls):
            if fld.name != "name":
                pattern = rf"^(# )?{fld.name} = |^(# )?\[(services\.\w+|jobs)\.{fld.name}\]$"
                assert re.search(pattern, EXAMPLE_TOML, re.M), fld.name
    for variable in ENV_OVERRIDES:
        assert variable in EXAMPLE_TOML


def test_example_toml_shows_the_real_defaults(tmp_path: Path) -> None:
    # Uncomment every "# key = value" line except those that are examples, not defaults.
    examples = (
        "cwd",
        "http",
        "heartbeat_timeout = 10.0     # default: the",
        "square",
        "send",
        "queues",
        "token",
        "env_file",
        "max_rss",
        "umask",
        "rlimits",
        "user",
        "group",
        "base_port",
        "nightly",
    )
    lines = [
        line[2:] if re.match(r"# \w+ = ", line) and not line[2:].startswith(examples) else line
        for line in EXAMPLE_TOML.splitlines()
    ]
    config = load("\n".join(lines))
    assert config.settings == Settings(run_dir=tmp_path / ".procorch")
    assert config.gateway == GatewaySettings()
    assert config.jobs == JobsSettings(delay=0.5, failure_rate=0.05)
    assert config.services[:3] == BUILT_IN
    assert config.services[3].health == HealthCheck(tcp=8000)


def test_json_handoff_round_trips_every_field(tmp_path):
    """The CLI hands the daemon its config as JSON: nothing may be lost or changed."""
    (tmp_path / "www").mkdir()
    (tmp_path / ".env.web").write_text("B=2\n")
    (tmp_path / "procorch.toml").write_text(
        """
        [procorch]
        check_interval = 0.5
        max_restarts = 7
        [gateway]
        port = 8080
        [services.api]
        module = "pkg.mod:Api"
        replicas = 3
        env = { A = "1" }
        heartbeat_timeout = 4
        [services.web]
        command = ["python", "-m", "http.server"]
        cwd = "www"
        depends_on = ["api"]
        restart = "on-failure"
        stop_signal = "INT"
        health = { http = "http://127.0.0.1:8000/" }
        base_port = 8000
        max_rss = "300M"
        user = "nobody"
        umask = "022"
        rlimits = { nofile = [64, 128], as = "2G" }
        env_file = ".env.web"
        [jobs]
        backend = "redis://10.0.0.5:6380/2"
        workers = 4
        delay = 0.25
        failure_rate = 0.5
        max_attempts = 1
        timeout = 3
        max_n = 1000
        mod = 97
        synchronous = "FULL"
        functions = { square = "myapp.jobs:square" }
        [jobs.schedules]
        nightly = { function = "square", cron = "0 3 * * *", timezone = "Asia/Tokyo", args = [3] }
        often = { function = "fib", every = "5m", args = [10], kwargs = { mod = 7 } }
        """
    )
    config = load_config(tmp_path / "procorch.toml")
    assert Config.from_json(config.to_json()) == config
    assert config.jobs.functions == {"square": {"target": "myapp.jobs:square"}}
    assert config.jobs.schedules["often"] == {
        "function": "fib", "every": 300, "args": [10], "kwargs": {"mod": 7}
    }  # fmt: skip
    assert config.jobs.synchronous == "full"
    assert config.services[-1].replicas == 4  # the JobWorker, added by the [jobs] table


# --- jobs --------------------------------------------------------------------------


def test_jobs_table_defaults_and_the_demo_workload() -> None:
    assert load("[jobs]\n").jobs == JobsSettings()
    assert JobsSettings() == JobsSettings(
        backend="sqlite", workers=2, delay=0.0, failure_rate=0.0, max_attempts=3,
        timeout=60.0, max_n=10**18, mod=1_000_000_007, synchronous="normal", functions={},
    )  # fmt: skip
    # no [jobs] table: the built-in stack's visible, slightly flaky workload
    assert load("").jobs == JobsSettings(delay=0.5, failure_rate=0.05)


def test_job_worker_joins_the_services_of_a_file_with_a_jobs_table() -> None:
    only = "[services.api]\nmodule = 'pkg.mod:Api'\n"
    assert names(load(only)) == ["api"]
    assert names(load(only + "[jobs]\nworkers = 3\n")) == ["api", "JobWorker"]
    assert load(only + "[jobs]\nworkers = 3\n").services[-1] == dataclasses.replace(
        JOB_WORKER, replicas=3
    )
    assert load("[jobs]\nworkers = 5\n").services == (
        *BUILT_IN,
        dataclasses.replace(JOB_WORKER, replicas=5),
    )
    # a file that runs the worker itself (its own name, replicas, env) is left alone
    own = "[services.jw]\nmodule = 'procorch.jobs.worker:JobWorker'\nreplicas = 7\n[jobs]\n"
    assert [(s.name, s.replicas) for s in load(own).services] == [("jw", 7)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[jobs]\nbackend = 'mysql'\n",
            'jobs.backend: expected "sqlite" or a URL like redis://HOST:PORT/DB',
        ),
        ("[jobs]\nbackend = 'redis://:6379/0'\n", "jobs.backend: expected"),
        ("[jobs]\nbackend = 'redis://h:99999/0'\n", "jobs.backend: expected"),
        ("[jobs]\nbackend = 'redis://h:6379/x'\n", "jobs.backend: expected"),
        ("[jobs]\nworkers = 0\n", "jobs.workers: expected an integer ≥ 1, got 0"),
        ("[jobs]\ndelay = -1\n", "jobs.delay: expected a number ≥ 0, got -1"),
        ("[jobs]\nfailure_rate = 1.5\n", "jobs.failure_rate: expected a number from 0.0 to 1.0"),
        ("[jobs]\nfailure_rate = 'high'\n", "jobs.failure_rate: expected a number ≥ 0, got 'high'"),
        ("[jobs]\nmax_attempts = 0\n", "jobs.max_attempts: expected an integer ≥ 1, got 0"),
        ("[jobs]\ntimeout = 0\n", "jobs.timeout: expected a number > 0, got 0"),
        ("[jobs]\nmax_n = -1\n", "jobs.max_n: expected an integer ≥ 0, got -1"),
        ("[jobs]\nmod = 1\n", "jobs.mod: expected an integer ≥ 2, got 1"),
        ("[jobs]\nmod = 9223372036854775808\n", "jobs.mod: expected an integer ≤ 92233720"),
        ("[jobs]\nsynchronous = 'off'\n", "jobs.synchronous: expected one of 'normal', 'full'"),
        ("[jobs]\nworker = 2\n", "jobs: unknown key 'worker' (did you mean 'workers'?)"),
        ("[jobs.functions]\nfib = 'a.b:c'\n", "jobs.functions.fib: 'fib' is the built-in job"),
        (
            "[jobs.functions]\nsq = 'not a spec'\n",
            "jobs.functions.sq: expected 'package.module:function'",
        ),
        ("[jobs.functions]\n'my-fn' = 'a.b:c'\n", "jobs.functions: invalid function name 'my-fn'"),
        ("[services.JobWorker]\ncommand = 'x'\n[jobs]\n", "jobs: a service is already called"),
    ],
)
def test_jobs_errors(text: str, expected: str) -> None:
    assert error(text).startswith(f"procorch.toml: {expected}")


def test_the_examples_load() -> None:
    examples = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))
    assert examples
    for path in examples:
        assert load_config(path, environ={}).services, path
    # Examples share a folder: each has its own run directory, so stopping one stops no other.
    run_dirs = {load_config(path, environ={}).settings.run_dir for path in examples}
    assert len(run_dirs) == len(examples)


# -- [gateway] -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[gateway]\ntoken = 'short'\n", "gateway.token: too short (5 characters)"),
        ("[gateway]\ntoken = 'has a space in it!!'\n", "gateway.token: expected printable ASCII"),
        ("[gateway]\ntoken = 'naïve-naïve-naïve-naïve'\n", "gateway.token: expected printable"),
        ("[gateway]\nmax_body = 10\n", "gateway.max_body: expected an integer ≥ 1024, got 10"),
        ("[gateway]\nthreads = 0\n", "gateway.threads: expected an integer ≥ 1, got 0"),
        ("[gateway]\nthreads = 1000\n", "gateway.threads: expected an integer ≤ 256, got 1000"),
        ("[gateway]\ntimeout = -1\n", "gateway.timeout: expected a number > 0, got -1"),
        ("[gateway]\nport = 80.5\n", "gateway.port: expected an integer ≥ 1, got 80.5"),
        (
            "[services.Gateway]\ncommand = 'x'\n[gateway]\nenabled = true\n",
            "gateway: a service is already called 'Gateway'",
        ),
    ],
)
def test_gateway_errors(text: str, expected: str) -> None:
    assert error(text).startswith(f"procorch.toml: {expected}")


def test_gateway_service_only_when_enabled() -> None:
    names = [svc.name for svc in load_config().services]
    assert "Gateway" not in names
    config = load_config(enable_gateway=True)  # `procorch up --gateway`
    assert config.gateway.enabled
    assert config.services[-1] == ServiceConfig(
        name="Gateway", module="procorch.gateway.service:Gateway", replicas=auto_workers()
    )
    assert [svc.name for svc in config.services[:-1]] == names


def test_token_from_the_environment_wins(tmp_path: Path) -> None:
    path = write("[gateway]\ntoken = 'from-the-file-0123'\nmax_body = 4096\n")
    config = load_config(path, environ={"PROCORCH_TOKEN": "from-the-environment"})
    assert config.gateway.token == "from-the-environment"
    assert config.gateway.max_body == 4096
    with pytest.raises(ConfigError, match=r"^environment: PROCORCH_TOKEN: too short"):
        load_config(path, environ={"PROCORCH_TOKEN": "abc"})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("::", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert GatewaySettings(host=host).is_loopback is loopback


def test_gateway_workers_are_its_replicas() -> None:
    path = write("[gateway]\nenabled = true\nworkers = 3\n")
    assert load_config(path, environ={}).service("Gateway").replicas == 3
    assert error("[gateway]\nworkers = 0\n").endswith(
        "gateway.workers: expected an integer ≥ 1, got 0"
    )


def test_gateway_workers_auto_is_one_per_cpu_at_most_four(monkeypatch: pytest.MonkeyPatch) -> None:
    import procorch.config as config

    for cpus, expected in ((1, 1), (2, 2), (3, 3), (4, 4), (16, 4)):
        monkeypatch.setattr(config.os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert config.auto_workers() == expected
        assert GatewaySettings().workers == expected  # the default is "auto"
        for text in ("", "workers = 'auto'\n", "workers = 'AUTO'\n"):
            path = write(f"[gateway]\nenabled = true\n{text}")
            assert load_config(path, environ={}).service("Gateway").replicas == expected
    assert error("[gateway]\nworkers = 'many'\n").endswith(
        "gateway.workers: expected an integer ≥ 1, got 'many'"
    )
