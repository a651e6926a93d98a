"""Per-replica placeholders in a service's `command` arguments and `env` values.

`{replica}` is the replica's number (0, 1, ...), `{port}` the service's `base_port`
plus that number; `{{` and `}}` are literal braces. A format spec works as in Python
(`w{replica:02d}` gives w00, w01, ...). This is supervisord's `%(process_num)s` and
circus' `$(circus.wid)`: N instances that each need their own argument stay one service.

`problem` checks a template when the config is loaded; `expand` fills one in for a
replica. Both are pure. Python's own format-string grammar does the parsing, so the
escapes and specs are exactly those users know from str.format.
"""

from __future__ import annotations

PLACEHOLDERS = ("replica", "port")
_HINT = "known: {replica}, {port}; write {{ and }} for literal braces"


def placeholders(template: str) -> set[str]:
    """The placeholder names `template` uses; ValueError if it is not a valid template."""
    from string import Formatter  # only when a config is checked, not at each CLI start

    names = set()
    for _, name, _, _ in Formatter().parse(template):
        if name is not None:
            names.add(name)
    return names


def problem(template: str, base_port: int | None) -> str | None:
    """What is wrong with `template`, in words for a config error; None if it is fine."""
    try:
        names = placeholders(template)
    except ValueError as exc:  # "Single '}' encountered in format string", ...
        return f"{exc} in {template!r} ({_HINT})"
    for name in sorted(names):
        if name not in PLACEHOLDERS:
            shown = "{" + name + "}" if name else "{}"
            return f"unknown placeholder {shown} in {template!r} ({_HINT})"
    if "port" in names and base_port is None:
        return f"{{port}} in {template!r} needs `base_port` (the port of replica 0)"
    try:
        expand(template, 0, base_port)
    except (ValueError, TypeError) as exc:  # a bad format spec or conversion, like {replica:x!}
        return f"cannot fill in {template!r} ({exc})"
    return None


def expand(template: str, replica: int, base_port: int | None) -> str:
    """`template` for replica number `replica` (checked beforehand with `problem`)."""
    if "{" not in template and "}" not in template:
        return template  # the usual case costs no parsing at each spawn
    port = None if base_port is None else base_port + replica
    return template.format(replica=replica, port=port)
