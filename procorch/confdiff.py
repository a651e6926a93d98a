"""What differs between two resolved configs: the one a daemon runs and the one on disk.

Pure functions over `Config.to_json()` data, so the CLI can compare what it read with
what the daemon answers without loading anything heavy. Only names of keys are ever
shown, never their values: a value may be a secret (the gateway token, a password
inside a Redis URL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ConfigDiff:
    """Services added, removed and changed (with the keys that changed), and sections."""

    path: tuple[str | None, str | None] | None = None  # (running, on disk) when they differ
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: dict[str, tuple[str, ...]] = field(default_factory=dict)  # service -> keys
    sections: dict[str, tuple[str, ...]] = field(default_factory=dict)  # section -> keys

    def __bool__(self) -> bool:
        return bool(self.path or self.added or self.removed or self.changed or self.sections)


_SECTION_TABLES = {"settings": "[procorch]", "gateway": "[gateway]", "jobs": "[jobs]"}
HOOKS = "hooks"  # a list of tables, not a table: compared hook by hook


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)))


def diff(running: dict[str, Any], wanted: dict[str, Any]) -> ConfigDiff:
    """How `wanted` (the file now) differs from `running` (what the daemon was given)."""
    old = {svc["name"]: svc for svc in running["services"]}
    new = {svc["name"]: svc for svc in wanted["services"]}
    changed = {  # in start order
        name: keys for name in new if name in old and (keys := _changed_keys(old[name], new[name]))
    }
    sections = {}
    for section in _SECTION_TABLES:
        keys = _changed_keys(running.get(section, {}), wanted.get(section, {}))
        if keys:
            sections[section] = keys
    old_hooks, new_hooks = running.get(HOOKS, []), wanted.get(HOOKS, [])
    if old_hooks != new_hooks:
        count = max(len(old_hooks), len(new_hooks))
        sections[HOOKS] = tuple(
            f"{HOOKS}[{i}]" for i in range(count) if old_hooks[i : i + 1] != new_hooks[i : i + 1]
        )
    path = None
    if running.get("path") != wanted.get("path"):
        path = (running.get("path"), wanted.get("path"))
    return ConfigDiff(
        path=path,
        added=tuple(name for name in new if name not in old),
        removed=tuple(name for name in old if name not in new),
        changed=changed,
        sections=sections,
    )


def describe(d: ConfigDiff) -> list[str]:
    """One line per difference, as `up` prints them."""
    lines = []
    if d.path:
        running, wanted = (p or "(built-in defaults)" for p in d.path)
        lines.append(f"config file: running {running}, asked {wanted}")
    lines += [f"added: {name}" for name in d.added]
    lines += [f"removed: {name}" for name in d.removed]
    lines += [f"changed: {name} ({', '.join(keys)})" for name, keys in d.changed.items()]
    lines += [
        f"changed: {_SECTION_TABLES.get(section, '[[hooks]]')} ({', '.join(keys)})"
        for section, keys in d.sections.items()
    ]
    return lines
