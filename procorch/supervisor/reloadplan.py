"""The reload plan: what changing a running stack from one config to another means.

`plan(old, new)` is a pure function of two validated configs. It names the services
added (started in dependency order), removed (stopped, dependents first), changed
(replaced, with the keys that changed), changed only in keys the daemon alone reads
(`LIVE_KEYS`: applied to the running replicas, no restart), only scaled (replicas
added or removed, the others untouched) and unchanged (not touched at all), the
global settings that take effect live, and those that cannot change while the daemon
runs (refused: the whole reload is then refused, so what runs is always exactly one
config).

Only names of keys are ever shown, never values: a value may be a secret (the gateway
token, a password inside a Redis URL).

Which globals can change live, and why:
  [procorch] run_dir   refused: the daemon's lock, socket, logs and state live there
  [gateway] enabled    refused: the daemon binds the gateway's socket before any start
  [gateway] host/port  refused: the same socket
  [jobs] backend       refused: the queued jobs would stay behind in the old store
  [jobs] schedules     refused: the daemon's scheduler thread starts with it
  [[hooks]]            refused: each hook's worker thread starts with the daemon
  config file path     refused: the daemon and its replicas run in the file's directory
  every other [procorch] key: live (the daemon reads them at each use)
  every other [gateway] / [jobs] key: the Gateway / JobWorker services read them at
      start, so those services are replaced, with `gateway.KEY` / `jobs.KEY` named
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from procorch.config import GATEWAY, JOB_WORKER, Config, ServiceConfig

# (section, key) -> why it cannot change live
REFUSED: dict[tuple[str, str], str] = {
    ("procorch", "run_dir"): "the daemon's lock, socket and state live there",
    ("gateway", "enabled"): "the daemon holds the gateway's socket from its start",
    ("gateway", "host"): "the daemon holds the gateway's socket",
    ("gateway", "port"): "the daemon holds the gateway's socket",
    ("jobs", "backend"): "queued jobs would stay behind in the old store",
    ("jobs", "schedules"): "the scheduler starts with the daemon",
}
# which built-in services read a section's keys at their start
_READERS = {"gateway": (GATEWAY,), "jobs": (JOB_WORKER, GATEWAY)}
SCALE_KEY = "replicas"
# service keys only the daemon reads, at each use: changed, they apply to the running
# replicas without a restart (every other key is read by the process at its start)
LIVE_KEYS = frozenset(
    {"restart", "stop_signal", "stop_timeout", "start_seconds", "fatal_retry", "health"}
    | {"depends_on", "max_rss"}
)


@dataclass(frozen=True)
class Plan:
    """What a reload does; every tuple of names in the new config's start order, except
    `removed`, in stop order (dependents first)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: dict[str, tuple[str, ...]] = field(default_factory=dict)  # replaced: keys
    scaled: dict[str, tuple[int, int]] = field(default_factory=dict)  # (old, new) replicas
    unchanged: tuple[str, ...] = ()
    rolling: tuple[str, ...] = ()  # changed services replaced one replica at a time
    retuned: dict[str, tuple[str, ...]] = field(default_factory=dict)  # LIVE_KEYS only
    settings: tuple[str, ...] = ()  # [procorch] keys that take effect live
    refused: dict[str, str] = field(default_factory=dict)  # "[section] key" -> why

    @property
    def empty(self) -> bool:
        """Nothing to do: the running stack is this config already."""
        changes = (self.added, self.removed, self.changed, self.scaled, self.retuned)
        return not (any(changes) or self.settings)

    def to_json(self) -> dict[str, Any]:
        """For json.dumps (its tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            added=tuple(data["added"]),
            removed=tuple(data["removed"]),
            changed={name: tuple(keys) for name, keys in data["changed"].items()},
            scaled={name: (old, new) for name, (old, new) in data["scaled"].items()},
            unchanged=tuple(data["unchanged"]),
            rolling=tuple(data["rolling"]),
            retuned={name: tuple(keys) for name, keys in data["retuned"].items()},
            settings=tuple(data["settings"]),
            refused=dict(data["refused"]),
        )


def _differing(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def _service_keys(old: ServiceConfig, new: ServiceConfig) -> list[str]:
    return _differing(asdict(old), asdict(new))


def port_collides(svc: ServiceConfig) -> bool:
    """Whether a replacement started beside a replica of `svc` would bind the port that
    replica holds: its `{port}` is base_port + its number, which the replacement keeps
    (EADDRINUSE). Sockets the daemon holds (`listen`) are shared, never bound twice."""
    return svc.base_port is not None and not svc.listen


def rolls(svc: ServiceConfig) -> bool:
    """Whether replacing `svc` starts each new replica before stopping an old one: with
    several replicas, or sockets held for it, the service never stops answering. A
    single replica binding its own port, or replicas binding `{port}`, would collide
    with their replacements: stop first (with replicas, the others keep answering)."""
    return bool(svc.listen) or (svc.replicas > 1 and not port_collides(svc))


def plan(old: Config, new: Config) -> Plan:
    """The plan that takes a daemon running `old` to `new` (both validated)."""
    sections = {"procorch": (old.settings, new.settings)}
    sections |= {"gateway": (old.gateway, new.gateway), "jobs": (old.jobs, new.jobs)}
    refused: dict[str, str] = {}
    section_keys: dict[str, list[str]] = {}
    for section, (before, after) in sections.items():
        keys = _differing(asdict(before), asdict(after))
        for key in keys:
            why = REFUSED.get((section, key))
            if why:
                refused[f"[{section}] {key}"] = why
        section_keys[section] = [k for k in keys if (section, k) not in REFUSED]
    if old.hooks != new.hooks:
        count = max(len(old.hooks), len(new.hooks))
        changed = [
            f"hooks[{i}]" for i in range(count) if old.hooks[i : i + 1] != new.hooks[i : i + 1]
        ]
        refused[f"[[hooks]] {', '.join(changed)}"] = "hook workers start with the daemon"
    if old.path != new.path:
        running, asked = (str(path or "(built-in defaults)") for path in (old.path, new.path))
        refused["config file"] = f"running {running}, asked {asked}"

    before = {svc.name: svc for svc in old.services}
    changed: dict[str, tuple[str, ...]] = {}
    retuned: dict[str, tuple[str, ...]] = {}
    scaled: dict[str, tuple[int, int]] = {}
    unchanged = []
    for svc in new.services:
        if svc.name not in before:
            continue
        keys = _service_keys(before[svc.name], svc)
        for section, readers in _READERS.items():
            if svc.module in readers:
                keys += [f"{section}.{k}" for k in section_keys[section]]
        if SCALE_KEY in keys:
            scaled[svc.name] = (before[svc.name].replicas, svc.replicas)
            keys.remove(SCALE_KEY)
        if keys and LIVE_KEYS.issuperset(keys):
            retuned[svc.name] = tuple(keys)
        elif keys:
            changed[svc.name] = tuple(keys)
        elif svc.name not in scaled:
            unchanged.append(svc.name)
    names = {svc.name for svc in new.services}
    return Plan(
        added=tuple(svc.name for svc in new.services if svc.name not in before),
        removed=tuple(svc.name for svc in reversed(old.services) if svc.name not in names),
        changed=changed,
        scaled=scaled,
        unchanged=tuple(unchanged),
        rolling=tuple(svc.name for svc in new.services if svc.name in changed and rolls(svc)),
        retuned=retuned,
        settings=tuple(section_keys["procorch"]),
        refused=refused,
    )


def dependents(services: tuple[ServiceConfig, ...]) -> dict[str, set[str]]:
    """Each service's name -> the names of the services that depend on it."""
    return {svc.name: {o.name for o in services if svc.name in o.depends_on} for svc in services}


def describe(p: Plan, width: int = 78) -> list[str]:
    """The plan in lines of at most `width` columns, as `reload` and `up` print it."""
    import textwrap  # only for a plan that is shown

    lines = [f"refused: {what} ({why})" for what, why in p.refused.items()]
    lines += [f"added: {name}" for name in p.added]
    lines += [f"removed: {name}" for name in p.removed]
    for name, keys in p.changed.items():
        how = "rolling" if name in p.rolling else "stop, then start"
        lines.append(f"changed: {name} ({', '.join(keys)}; {how})")
    lines += [f"changed: {name} ({', '.join(keys)}; live)" for name, keys in p.retuned.items()]
    lines += [f"scaled: {name} ({old} -> {new} replicas)" for name, (old, new) in p.scaled.items()]
    if p.settings:
        lines.append(f"changed: [procorch] ({', '.join(p.settings)}; live)")
    if p.unchanged:
        lines.append(f"unchanged: {', '.join(p.unchanged)}")
    return [
        wrapped
        for line in lines
        for wrapped in textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False)
    ]
