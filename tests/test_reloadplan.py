"""The reload plan, the rollout state machine and the TOML edit of `scale --save`:
pure functions, tested alone (no daemon, no process)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace

import pytest

from procorch.supervisor.process import Replica
from procorch.supervisor.reloadplan import Plan, dependents, describe, plan
from procorch.supervisor.rollout import STOP_FIRST, SURGE_FIRST, Event, Phase, Rollout, event
from procorch.supervisor.state import ProcessState as S
from procorch.tomledit import EditError, set_replicas
from tests.conftest import load_toml

A = """
[services.a]
command = "sleep 1"
"""


def test_the_same_config_is_an_empty_plan(tmp_path):
    p = plan(load_toml(tmp_path, A), load_toml(tmp_path, A))
    assert p.empty and not p.refused and p.unchanged == ("a",)
    assert describe(p) == ["unchanged: a"]


def test_added_removed_changed_scaled_and_unchanged(tmp_path):
    old = load_toml(
        tmp_path,
        A + "[services.b]\ncommand = 'sleep 1'\n[services.c]\ncommand = 'sleep 1'\n"
        "[services.d]\ncommand = 'sleep 1'\nreplicas = 2\n",
    )
    new = load_toml(
        tmp_path,
        "[services.e]\ncommand = 'sleep 2'\n[services.a]\ncommand = 'sleep 1'\n"
        "[services.c]\ncommand = 'sleep 2'\nreplicas = 3\nenv = { X = '1' }\n"
        "[services.d]\ncommand = 'sleep 1'\nreplicas = 4\n",
    )
    p = plan(old, new)
    assert p.added == ("e",) and p.removed == ("b",)
    assert p.changed == {"c": ("command", "env")}  # `replicas` is a scale, said apart
    assert p.scaled == {"c": (1, 3), "d": (2, 4)}
    assert p.unchanged == ("a",) and p.rolling == ("c",)
    assert describe(p) == [
        "added: e",
        "removed: b",
        "changed: c (command, env; rolling)",
        "scaled: c (1 -> 3 replicas)",
        "scaled: d (2 -> 4 replicas)",
        "unchanged: a",
    ]
    assert Plan.from_json(json.loads(json.dumps(p.to_json()))) == p


def test_removed_services_stop_dependents_first_added_start_in_order(tmp_path):
    old = load_toml(
        tmp_path,
        A + "[services.top]\ncommand = 'x'\ndepends_on = ['mid']\n"
        "[services.mid]\ncommand = 'x'\ndepends_on = ['a']\n",
    )
    new = load_toml(
        tmp_path,
        "[services.n2]\ncommand = 'x'\ndepends_on = ['n1']\n[services.n1]\ncommand = 'x'\n" + A,
    )
    p = plan(old, new)
    assert p.removed == ("top", "mid")
    assert p.added == ("n1", "n2")


def test_keys_only_the_daemon_reads_apply_without_a_restart(tmp_path):
    old = load_toml(tmp_path, A)
    p = plan(
        old, load_toml(tmp_path, A + "stop_timeout = 2\nmax_rss = '300M'\nrestart = 'never'\n")
    )
    assert p.retuned == {"a": ("max_rss", "restart", "stop_timeout")} and not p.changed
    assert describe(p) == ["changed: a (max_rss, restart, stop_timeout; live)"]
    both = plan(old, load_toml(tmp_path, A + "stop_timeout = 2\nenv = { X = '1' }\n"))
    assert both.changed == {"a": ("env", "stop_timeout")} and not both.retuned


def test_one_replica_is_stopped_then_started_unless_it_has_held_sockets(tmp_path):
    old = load_toml(tmp_path, A)
    plain = plan(old, load_toml(tmp_path, A + "cwd = '.'\n"))
    assert plain.changed == {"a": ("cwd",)} and plain.rolling == ()
    held = plan(old, load_toml(tmp_path, A + "listen = ['tcp://127.0.0.1:8000']\n"))
    assert held.changed == {"a": ("listen",)} and held.rolling == ("a",)


def test_settings_that_cannot_change_live_are_refused_by_name_never_value(tmp_path):
    secret = "redis://:hunter2-secret@localhost:6379/0"
    old = load_toml(tmp_path, A + "[jobs]\n")
    new = load_toml(
        tmp_path,
        A + f"[procorch]\nrun_dir = 'elsewhere'\nmax_restarts = 9\n"
        f"[gateway]\nenabled = true\nport = 5001\n[jobs]\nbackend = '{secret}'\n",
    )
    p = plan(old, new)
    assert set(p.refused) == {
        "[procorch] run_dir",
        "[gateway] enabled",
        "[gateway] port",
        "[jobs] backend",
    }
    assert p.settings == ("max_restarts",)
    lines = describe(p)
    assert "refused: [procorch] run_dir (the daemon's lock, socket and state live there)" in lines
    assert "changed: [procorch] (max_restarts; live)" in lines
    assert "hunter2" not in json.dumps(p.to_json()) + "\n".join(lines)
    assert all(len(line) <= 78 for line in lines)


def test_gateway_and_jobs_keys_replace_the_services_that_read_them(tmp_path):
    old = load_toml(tmp_path, A + "[gateway]\nenabled = true\n[jobs]\n")
    token = "a-very-secret-token-123"
    new = load_toml(
        tmp_path, A + f"[gateway]\nenabled = true\ntoken = '{token}'\n[jobs]\nmax_attempts = 5\n"
    )
    p = plan(old, new)
    assert p.changed == {
        "JobWorker": ("jobs.max_attempts",),
        "Gateway": ("gateway.token", "jobs.max_attempts"),
    }
    assert not p.refused and token not in "\n".join(describe(p))


def test_a_changed_hook_is_refused_by_index(tmp_path):
    hook = "[[hooks]]\non = ['fatal']\ncommand = ['true']\n"
    old = load_toml(tmp_path, A + hook)
    p = plan(old, load_toml(tmp_path, A + hook.replace("fatal", "unhealthy") + hook))
    assert p.refused == {"[[hooks]] hooks[0], hooks[1]": "hook workers start with the daemon"}


def test_another_file_is_refused_and_named(tmp_path):
    old = load_toml(tmp_path, A)
    other = tmp_path / "other"
    other.mkdir()
    new = load_toml(other, A, run_dir=tmp_path / ".procorch")
    p = plan(old, new)
    assert p.refused == {
        "config file": f"running {tmp_path / 'procorch.toml'}, asked {other / 'procorch.toml'}"
    }


def test_long_lists_wrap_within_80_columns(tmp_path):
    many = "".join(f"[services.service{i:02}]\ncommand = 'x'\n" for i in range(30))
    lines = describe(plan(load_toml(tmp_path, many), load_toml(tmp_path, many)))
    assert len(lines) > 1 and all(len(line) <= 78 for line in lines)
    assert lines[1].startswith("  ")


def test_dependents_are_the_services_that_depend_on_each(tmp_path):
    cfg = load_toml(
        tmp_path, A + "[services.b]\ncommand = 'x'\ndepends_on = ['a']\n[services.c]\ncommand='x'\n"
    )
    assert dependents(cfg.services) == {"a": {"b"}, "b": set(), "c": set()}


# --- the rollout state machine --------------------------------------------------------


class FakeFleet:
    """Records what the rollout asks for; the test plays the daemon's part (states)."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.next_slot = 100

    def add_replacement(self, old: Replica, service, wanted: bool) -> Replica:
        self.next_slot += 1
        r = Replica(service, old.index, slot=self.next_slot)
        r.want_running = wanted
        self.log.append(f"start {old.index}")
        return r

    def retire(self, r: Replica) -> None:
        r.want_running = False
        self.log.append(f"retire {r.index}{'new' if r.slot > 100 else ''}")


def running(svc, index: int) -> Replica:
    r = Replica(svc, index, slot=index)
    r.state = S.RUNNING
    return r


def test_surge_first_starts_a_replacement_before_stopping_each_old_replica(tmp_path):
    svc = load_toml(tmp_path, A).services[0]
    olds = [running(svc, 0), running(svc, 1)]
    fleet = FakeFleet()
    rollout = Rollout(service=replace(svc, env={"X": "1"}), pending=list(olds), surge=True)
    rollout.begin(fleet)
    assert fleet.log == ["start 0"] and rollout.phase is Phase.SURGING
    rollout.advance(fleet)
    assert fleet.log == ["start 0"]  # not ready yet: the old one keeps serving
    rollout.new.state = S.RUNNING
    rollout.advance(fleet)
    assert fleet.log == ["start 0", "retire 0"] and rollout.phase is Phase.RETIRING
    olds[0].state = S.STOPPED
    rollout.advance(fleet)
    assert fleet.log == ["start 0", "retire 0", "start 1"]
    rollout.new.state = S.RUNNING
    rollout.advance(fleet)
    olds[1].state = S.STOPPED
    rollout.advance(fleet)
    assert fleet.log[-1] == "retire 1" and rollout.phase is Phase.DONE and not rollout.failure


def test_a_replacement_that_fails_aborts_and_keeps_the_old_replicas(tmp_path):
    svc = load_toml(tmp_path, A).services[0]
    olds = [running(svc, 0), running(svc, 1)]
    fleet = FakeFleet()
    rollout = Rollout(service=svc, pending=list(olds), surge=True)
    rollout.begin(fleet)
    rollout.new.state, rollout.new.last_exit = S.BACKOFF, "exit status 1"
    rollout.advance(fleet)
    assert rollout.phase is Phase.ABORTED
    assert rollout.failure == "a.0: its replacement is backoff (exit status 1)"
    assert fleet.log == ["start 0", "retire 0new"]  # the replacement goes, no old one does


def test_stop_first_and_idle_replicas(tmp_path):
    svc = load_toml(tmp_path, A).services[0]
    stopped = Replica(svc, 0, slot=0)
    stopped.want_running = False  # `procorch stop a.0`: replaced, and stays stopped
    old = running(svc, 1)
    fleet = FakeFleet()
    rollout = Rollout(service=svc, pending=[stopped, old], surge=False)
    rollout.begin(fleet)
    assert fleet.log == ["start 0", "retire 0", "retire 1"]
    assert rollout.replaced[0].want_running is False
    old.state = S.STOPPED
    rollout.advance(fleet)
    assert fleet.log[-1] == "start 1" and rollout.phase is Phase.STARTING
    rollout.new.state = S.FATAL  # nothing to go back to: done, as any replica would be
    rollout.advance(fleet)
    assert rollout.phase is Phase.DONE


@pytest.mark.parametrize("table", [SURGE_FIRST, STOP_FIRST])
def test_every_transition_leads_somewhere_the_table_knows(table):
    phases = {phase for phase, _ in table} | {Phase.DONE, Phase.ABORTED}
    assert all(target in phases for target, _ in table.values())


def test_event_is_a_pure_reading_of_states(tmp_path):
    svc = load_toml(tmp_path, A).services[0]
    new = Replica(svc, 0, slot=1)
    assert event(Phase.SURGING, None, new) is None  # STOPPED, wanted: about to start
    new.state = S.RUNNING
    assert event(Phase.SURGING, None, new) is Event.NEW_READY
    assert event(Phase.RETIRING, None, new) is Event.OLD_GONE


# --- scale --save -----------------------------------------------------------------------


def test_set_replicas_replaces_the_value_and_keeps_comments():
    text = '# top\n[services.web]  # the site\ncommand = "x"\nreplicas = 2   # workers\n'
    text += '\n[services.web.health]\ntcp = 80\n[services.api]\ncommand = "y"\n'
    edited = set_replicas(text, "WEB", 5)
    assert edited == text.replace("replicas = 2   # workers", "replicas = 5   # workers")
    added = set_replicas(text, "api", 3)
    assert added.endswith('[services.api]\nreplicas = 3\ncommand = "y"\n')
    assert tomllib.loads(added)["services"]["api"]["replicas"] == 3


def test_set_replicas_ignores_a_subtable_and_quoted_names():
    text = '[services."a.b"]\ncommand = "x"\n[services.c.health]\nreplicas = 1\n'
    assert tomllib.loads(set_replicas(text, "a.b", 4))["services"]["a.b"]["replicas"] == 4
    with pytest.raises(EditError):
        set_replicas(text, "c", 2)  # only a subtable of c has a header
    with pytest.raises(EditError):
        set_replicas("[services]\nd = { command = 'x' }\n", "d", 2)


# --- review fixes -----------------------------------------------------------------------


def test_replicas_binding_their_own_port_are_replaced_stop_first(tmp_path):
    # a replacement keeps its replica's number, so its {port}: started beside the old
    # one it would fail to bind (EADDRINUSE) and abort the rollout
    ported = A + "replicas = 2\nbase_port = 8000\n"
    p = plan(load_toml(tmp_path, ported), load_toml(tmp_path, ported + "env = { X = '1' }\n"))
    assert p.changed == {"a": ("env",)} and p.rolling == ()
    assert describe(p) == ["changed: a (env; stop, then start)"]
    # held sockets are shared, never bound twice: still rolled
    held = ported + "listen = ['tcp://127.0.0.1:8000']\n"
    p = plan(load_toml(tmp_path, held), load_toml(tmp_path, held + "env = { X = '1' }\n"))
    assert p.rolling == ("a",)
    plain = A + "replicas = 2\n"
    p = plan(load_toml(tmp_path, plain), load_toml(tmp_path, plain + "env = { X = '1' }\n"))
    assert p.rolling == ("a",)
