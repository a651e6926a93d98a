"""Guardrails per service: max_rss, user/group, umask, rlimits, env_file, and
`procorch signal`. The pure parts alone, then each with real processes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from procorch.config import Config, ServiceConfig, load_config
from procorch.sizes import format_size, parse_size
from procorch.supervisor import guardrails
from tests.conftest import (
    FIXTURES,
    PY,
    SLEEP_FOREVER,
    command_service,
    config_error,
    load_toml,
    python_service,
    wait_for,
)

ROOT = os.geteuid() == 0
MAY_RAISE = guardrails._may_raise_hard_limits()
needs_root = pytest.mark.skipif(not ROOT, reason="switching user needs root (CI runs as root)")

# == the pure parts ===================================================================


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (4096, 4096),
        ("4096", 4096),
        ("300M", 300 * 1024**2),
        ("300m", 300 * 1024**2),
        ("1.5G", 3 * 1024**3 // 2),
        ("64K", 65536),
        ("512KiB", 512 * 1024),
        ("2 GB", 2 * 1024**3),
        ("1T", 1024**4),
    ],
)
def test_parse_size(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "300X", "-1", -1, "1e9", "3 00M", True, 1.5, None])
def test_parse_size_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]


def test_format_size() -> None:
    assert [format_size(n) for n in (512, 3500, 300 * 1024**2, 3 * 1024**3)] == [
        "512 B",
        "3.4 KiB",
        "300.0 MiB",
        "3.0 GiB",
    ]


def test_rss_must_stay_over_for_two_checks_in_a_row() -> None:
    limit = 100
    seen = 0
    verdicts = []
    for rss in (150, 90, 150, 150, None, 150):  # a spike, then two in a row, then gone
        seen = guardrails.rss_over(rss, limit, seen)
        verdicts.append(seen)
    assert verdicts == [1, 0, 1, 2, 0, 1]
    assert guardrails.rss_over(10**12, None, 5) == 0  # no max_rss: never
    assert guardrails.rss_over(100, 100, 1) == 0  # at the limit is not over it


def test_wrappers() -> None:
    svc = ServiceConfig(name="s", command=("x",), rlimits={"nofile": (4096, None), "as": (-1, -1)})
    args = guardrails.limit_args(svc)
    assert args[0].endswith("prlimit") and args[1:] == [
        "--as=unlimited:unlimited",
        "--nofile=4096:",
        "--",
    ]
    assert guardrails.limit_args(ServiceConfig(name="s", command=("x",))) == []
    nobody = ServiceConfig(name="s", command=("x",), user="nobody")
    assert guardrails.identity_args(nobody) == [
        "--reuid",
        "65534",
        "--init-groups",
        "--regid",
        "65534",
    ]
    assert guardrails.identity_env(nobody)["USER"] == "nobody"
    root_group = ServiceConfig(name="s", command=("x",), group="0")
    assert guardrails.identity_args(root_group) == ["--clear-groups", "--regid", "0"]


# == at config load ===================================================================


def test_keys_are_parsed_and_survive_the_trip_to_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / ".env.web").write_text("A=from-file\nB=from-file\nEMPTY\n")
    cfg = load_toml(
        tmp_path / "conf",
        """
            [services.web]
            command = ["x"]
            max_rss = "300M"
            user = "nobody"
            group = "nogroup"
            umask = "022"
            rlimits = { nofile = 4096, nproc = [256, 512], core = 0, as = "2G", cpu = "unlimited" }
            env_file = ".env.web"
            env = { B = "from-env" }
            """,
    )
    web = cfg.service("web")
    assert web.max_rss == 300 * 1024**2
    assert (web.user, web.group, web.umask) == ("nobody", "nogroup", 0o022)
    assert web.rlimits == {
        "nofile": (4096, None),
        "nproc": (256, 512),
        "core": (0, None),
        "as": (2 * 1024**3, None),
        "cpu": (-1, None),
    }
    assert web.env_file == tmp_path / "conf" / ".env.web"  # relative to the config's folder
    assert web.environment(0) == {"A": "from-file", "B": "from-env"}  # env wins
    assert Config.from_json(cfg.to_json()) == cfg  # the daemon runs what was checked


def test_an_edited_env_file_makes_a_different_config(tmp_path: Path) -> None:
    """pm2 #3192: a reload comparing configs must see the file's new content."""
    env_file = tmp_path / ".env.web"
    env_file.write_text("A=1\n")
    body = '[services.web]\ncommand = ["x"]\nenv_file = ".env.web"\n'
    before = load_toml(tmp_path, body)
    assert load_toml(tmp_path, body) == before
    env_file.write_text("A=2\n")
    after = load_toml(tmp_path, body)
    assert after != before and after.service("web").environment(0) == {"A": "2"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('max_rss = "lots"', "services.s.max_rss: expected a size like '300M'"),
        ("max_rss = 0", "services.s.max_rss: expected a size like '300M'"),
        ('user = "no-such-user-here"', "services.s.user: no such user: 'no-such-user-here'"),
        ("user = 4000000000", "services.s.user: no such user: '4000000000'"),
        ('group = "no-such-group-here"', "services.s.group: no such group: 'no-such-group-here'"),
        ('umask = "099"', 'services.s.umask: expected octal digits in a string, like "022"'),
        ("umask = 22", 'services.s.umask: expected octal digits in a string, like "022"'),
        ("rlimits = { files = 10 }", "services.s.rlimits: unknown limit 'files'"),
        ("rlimits = { nofile = [20, 10] }", "services.s.rlimits.nofile: soft limit 20 is above"),
        ('rlimits = { nofile = "4K" }', "services.s.rlimits.nofile: expected an integer ≥ 0 or"),
        ("rlimits = { as = -5 }", "services.s.rlimits.as: expected an integer ≥ 0, a size"),
        ("rlimits = { core = [1, 2, 3] }", "services.s.rlimits.core: expected a value or [soft"),
        ('env_file = "missing.env"', "services.s.env_file: no such file: "),
        ('env_file = "."', "services.s.env_file: not a file: "),
    ],
)
def test_config_errors(tmp_path: Path, body: str, expected: str) -> None:
    message = config_error(tmp_path, f'[services.s]\ncommand = ["x"]\n{body}\n')
    assert message.startswith(expected), message


def test_a_python_service_cannot_switch_user(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[services.s]\nmodule = "a.b:C"\nuser = "nobody"\n')
    assert message == "services.s.user: only command services can run as another user or group"


def test_a_missing_env_file_is_exit_2_in_one_line(stack) -> None:
    stack.write(command_service("s", SLEEP_FOREVER, extra='env_file = ".env.s"\n'))
    result = stack.cli("up")
    assert result.returncode == 2
    assert result.stderr == (
        f"procorch: procorch.toml: services.s.env_file: no such file: '{stack.root / '.env.s'}'\n"
    )
    assert not stack.run_dir.exists()


# == with real processes ==============================================================


def _status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].split()[0] if name != "Groups" else line.split(":")[1]
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def _limits(pid: int) -> dict[str, tuple[str, str]]:
    """/proc/PID/limits as {"Max open files": (soft, hard)}."""
    limits = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft, hard = line[:26].strip(), line[26:47].strip(), line[47:68].strip()
        limits[name] = (soft, hard)
    return limits


def test_max_rss_restarts_a_replica_that_stays_over_it(stack) -> None:
    grown = stack.root / "grown"
    # the first process grows to ~80 MiB and stays; its replacement stays small
    code = (
        f"import os, time; p = {str(grown)!r}\n"
        "if not os.path.exists(p):\n"
        "    open(p, 'w').close(); ballast = b'x' * (80 << 20)\n"
        "time.sleep(1e6)"
    )
    stack.write(command_service("hog", code, start_seconds=0.1, extra='max_rss = "40M"\n'))
    # its pid as `up` saw it: by the time another command asked, it may be replaced
    (first,) = [s["pid"] for s in json.loads(stack.up("--json").stdout)["services"]]

    def unhealthy() -> list[dict]:
        return [e for e in stack.events() if e["event"] == "unhealthy"]

    (event,) = wait_for(unhealthy, timeout=15)
    assert event["pid"] == first and event["service"] == "hog"
    assert event["detail"].startswith("rss ")
    assert "over max_rss 40.0 MiB at 2 checks; killing" in event["detail"]
    wait_for(lambda: stack.restarted("hog", first), timeout=10)
    (replica,) = stack.replicas("hog")
    assert replica["restarts"] == 1 and replica["last_exit"].startswith("rss ")


@needs_root
def test_user_and_group_switch_the_process(stack) -> None:
    # sleep, not Python: nobody may not reach the interpreter the tests run under
    stack.write(
        """
        [services.as_nobody]
        command = ["sleep", "1000"]
        user = "nobody"
        env = { FROM = "env" }
        rlimits = { nofile = 100 }  # prlimit first, then setpriv
        start_seconds = 0.1

        [services.nobody_root_group]
        command = ["sleep", "1000"]
        user = "nobody"
        group = "root"
        start_seconds = 0.1

        [services.only_group]
        command = ["sleep", "1000"]
        group = "nogroup"
        start_seconds = 0.1
        """
    )
    stack.up()
    pid = stack.pid_of("as_nobody")
    assert _status_field(pid, "Uid") == "65534" and _status_field(pid, "Gid") == "65534"
    assert _status_field(pid, "Groups").split() == ["65534"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"USER=nobody" in environ and b"HOME=/nonexistent" in environ
    assert b"FROM=env" in environ
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"  # setpriv exec'd it
    assert _limits(pid)["Max open files"][0] == "100"
    pid = stack.pid_of("nobody_root_group")
    assert (_status_field(pid, "Uid"), _status_field(pid, "Gid")) == ("65534", "0")
    pid = stack.pid_of("only_group")
    assert (_status_field(pid, "Uid"), _status_field(pid, "Gid")) == ("0", "65534")
    assert _status_field(pid, "Groups").split() == []  # root's supplementary groups cleared


@pytest.mark.skipif(ROOT, reason="checks the refusal a user who is not root gets")
def test_user_needs_root(stack) -> None:
    stack.write(command_service("s", SLEEP_FOREVER, extra='user = "nobody"\n'))
    message = "services.s.user: procorch must run as root to start it as another user"
    result = stack.cli("up")
    assert (result.returncode, result.stderr) == (2, f"procorch: {message}\n")
    _daemon_refuses(stack, message)


def test_umask_per_service_and_the_defaults(stack) -> None:
    stack.write(
        command_service("cmd_default", SLEEP_FOREVER, start_seconds=0.1)
        + command_service("cmd_027", SLEEP_FOREVER, start_seconds=0.1, extra='umask = "027"\n')
        + python_service("py_default")
        + python_service("py_022", extra='umask = "0022"\n')
    )
    os.umask(old := os.umask(0))  # the test's own, which `up` hands its commands
    stack.up()
    umask = {
        name: int(_status_field(stack.pid_of(name), "Umask"), 8)
        for name in ("cmd_default", "cmd_027", "py_default", "py_022")
    }
    assert umask == {"cmd_default": old, "cmd_027": 0o027, "py_default": 0o077, "py_022": 0o022}


def test_rlimits_hold_from_the_first_instruction(stack) -> None:
    # the command reads its own limit at once: set later from outside, it would miss it
    code = (
        "import resource, sys, time; "
        "print('nofile', *resource.getrlimit(resource.RLIMIT_NOFILE), flush=True); "
        "time.sleep(1e6)"
    )
    # with CAP_SYS_RESOURCE, prlimit (outermost, not yet setpriv'd) may raise a hard limit
    nproc = '["unlimited", "unlimited"]' if MAY_RAISE else "300"
    limits = f'rlimits = {{ nofile = [1000, 2000], core = 0, as = "3G", nproc = {nproc} }}\n'
    stack.write(
        command_service("cmd", code, start_seconds=0.1, extra=limits)
        + python_service("py", extra="rlimits = { nofile = 512 }\n")
    )
    stack.up()
    cmd = _limits(stack.pid_of("cmd"))
    assert cmd["Max open files"] == ("1000", "2000")
    assert cmd["Max core file size"][0] == "0"
    assert cmd["Max address space"][0] == str(3 * 1024**3)
    assert cmd["Max processes"] == (
        ("unlimited",) * 2 if MAY_RAISE else ("300", _limits(os.getpid())["Max processes"][1])
    )
    log = stack.root / ".procorch" / "logs" / "cmd.0.log"
    wait_for(lambda: "nofile 1000 2000" in log.read_text())
    py = _limits(stack.pid_of("py"))
    assert py["Max open files"][0] == "512"
    assert stack.replicas("py")[0]["state"] == "running"  # a Python service runs behind prlimit


def test_env_file_reaches_the_process_and_env_wins(stack) -> None:
    (stack.root / ".env.s").write_text('A=from-file\nB=from-file\nQUOTED="x {y} $z"\n')
    code = (
        "import os, time; "
        "print('|'.join(os.environ[k] for k in ('A', 'B', 'QUOTED')), flush=True); "
        "time.sleep(1e6)"
    )
    extra = 'env_file = ".env.s"\nenv = { B = "from-env-{replica}" }\n'
    stack.write(command_service("s", code, start_seconds=0.1, extra=extra))
    stack.up()
    log = stack.root / ".procorch" / "logs" / "s.0.log"
    # values from the file are taken as written: braces in them are not placeholders
    wait_for(lambda: "from-file|from-env-0|x {y} $z" in log.read_text())


def _recorded(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_signal_reaches_each_named_replica(stack) -> None:
    record = stack.root / "signals"
    stack.write(
        f"""
        [services.rec]
        command = [{json.dumps(PY)}, "{FIXTURES / "sigrecorder.py"}", "{record}{{replica}}"]
        replicas = 2
        start_seconds = 0.1

        [services.other]
        command = [{json.dumps(PY)}, "{FIXTURES / "sigrecorder.py"}", "{record}-other"]
        start_seconds = 0.1
        """
    )
    stack.up()
    files = [Path(f"{record}0"), Path(f"{record}1"), Path(f"{record}-other")]
    wait_for(lambda: all(any("ready" in x for x in _recorded(f)) for f in files))
    pids = [stack.replicas("rec")[i]["pid"] for i in (0, 1)]

    result = stack.cli("signal", "rec", "HUP")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"rec.0 (pid {pids[0]}): SIGHUP",
        f"rec.1 (pid {pids[1]}): SIGHUP",
    ]
    for i in (0, 1):
        wait_for(lambda i=i: f"{pids[i]} {int(signal.SIGHUP)}" in _recorded(files[i]))

    assert stack.cli("signal", "rec.1", "other", "sigusr1").returncode == 0
    wait_for(lambda: f"{pids[1]} {int(signal.SIGUSR1)}" in _recorded(files[1]))
    wait_for(lambda: any(line.endswith(f" {int(signal.SIGUSR1)}") for line in _recorded(files[2])))
    assert stack.cli("signal", "rec", str(int(signal.SIGUSR2))).returncode == 0
    wait_for(lambda: f"{pids[0]} {int(signal.SIGUSR2)}" in _recorded(files[0]))
    # only what was named got anything, and nothing died of it
    assert not any(f" {int(signal.SIGUSR1)}" in x for x in _recorded(files[0]))
    assert [r["pid"] for r in stack.replicas("rec")] == pids
    # each signal sent is an event of its replica, saying which and to what
    sent = [
        (e["service"], e["pid"], e["detail"]) for e in stack.events() if e["event"] == "signalled"
    ]
    assert ("rec", pids[1], "SIGUSR1 to its main process") in sent
    assert sum(1 for s in sent if s[0] == "rec") == 5  # HUP x2, USR1 x1, USR2 x2


def test_signal_goes_to_the_main_process_or_with_group_to_all(stack) -> None:
    record = stack.root / "signals"
    stack.write(
        f"""
        [services.rec]
        command = [{json.dumps(PY)}, "{FIXTURES / "sigrecorder.py"}", "{record}", "fork"]
        start_seconds = 0.1
        """
    )
    stack.up()
    wait_for(lambda: {x.split()[1] for x in _recorded(record)} >= {"ready", "child"})
    leader = stack.pid_of("rec")
    (child,) = [x.split()[0] for x in _recorded(record) if x.endswith("child")]
    assert stack.cli("signal", "rec", "USR1").returncode == 0
    wait_for(lambda: f"{leader} {int(signal.SIGUSR1)}" in _recorded(record))
    assert stack.cli("signal", "--group", "rec", "USR2").returncode == 0
    wait_for(lambda: {f"{leader} 12", f"{child} 12"} <= set(_recorded(record)))
    assert f"{child} {int(signal.SIGUSR1)}" not in _recorded(record)  # USR1 was the leader's


def test_signal_refusals(stack) -> None:
    stack.write(command_service("s", SLEEP_FOREVER, start_seconds=0.1))
    for bad in ("BOGUS", "0", "SIG", "99999"):
        result = stack.cli("signal", "s", bad)
        assert result.returncode == 2, bad
        assert result.stderr == (
            f"procorch: expected a signal name like 'TERM' or a number, got {bad!r}\n"
        )
    stack.up()
    result = stack.cli("signal", "nope", "HUP")
    assert (result.returncode, result.stderr) == (
        1,
        "procorch: no service named 'nope' (known: s)\n",
    )
    assert stack.cli("stop", "s").returncode == 0
    result = stack.cli("signal", "s", "HUP")
    assert (result.returncode, result.stderr) == (3, "procorch: s.0 is stopped: not signalled\n")


@pytest.mark.skipif(MAY_RAISE, reason="checks the refusal a daemon without CAP_SYS_RESOURCE gives")
def test_raising_a_hard_limit_without_the_capability_is_refused_in_one_line(stack) -> None:
    hard = _limits(os.getpid())["Max open files"][1]
    stack.write(
        command_service(
            "s", SLEEP_FOREVER, extra=f"rlimits = {{ nofile = [64, {int(hard) + 1}] }}\n"
        )
    )
    message = (
        "services.s.rlimits.nofile: raising a hard limit needs root with "
        "CAP_SYS_RESOURCE, which procorch does not have"
    )
    for args in (["up"], ["up", "--foreground"]):
        result = stack.cli(*args)
        assert (result.returncode, result.stderr) == (2, f"procorch: {message}\n")
    _daemon_refuses(stack, message)


def _daemon_refuses(stack, message: str) -> None:
    """The daemon checks too (it is what has to run them): given the config as `up`
    hands it over, it answers one error line and exits."""
    import subprocess

    cfg = load_config(stack.config, environ={})
    daemon = subprocess.run(
        [PY, "-m", "procorch.supervisor"],
        input=cfg.to_json(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (daemon.returncode, daemon.stdout) == (3, f"error: {message}\n")


def test_a_reload_the_daemon_cannot_run_is_refused_and_changes_nothing(stack) -> None:
    # a daemon started where PATH has no prlimit cannot set rlimits: a reload adding
    # them is refused in one line, as `up` would be, by the CLI and by SIGHUP alike
    # (before, the spawn's assertion ended the daemon's event loop)
    bare = stack.root / "bin"
    bare.mkdir()
    plain = command_service("s", SLEEP_FOREVER, start_seconds=0.1)
    stack.write(plain)
    result = stack.cli("up", env={**os.environ, "PATH": str(bare)})
    assert result.returncode == 0, result.stderr
    pid, daemon = stack.pid_of("s"), stack.daemon_pid()
    stack.write(plain + "rlimits = { nofile = 512 }\n")
    message = "services.s.rlimits: needs prlimit (util-linux), not found"
    result = stack.cli("reload")
    assert (result.returncode, result.stderr) == (1, f"procorch: {message}\n")
    assert daemon is not None
    os.kill(daemon, signal.SIGHUP)
    events = stack.run_dir / "events.log"

    def failed() -> list[str]:
        logged = [json.loads(line) for line in events.read_text().splitlines()]
        return [e["detail"] for e in logged if e["event"] == "reload-failed"]

    assert wait_for(failed) == [message]
    stack.write(plain)  # status reads the config too
    assert stack.pid_of("s") == pid and stack.replicas("s")[0]["state"] == "running"
