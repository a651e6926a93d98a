"""The life cycle of one supervised process: its states and the legal transitions.

The model is supervisord's. Every state change in the daemon goes through
`ProcessState.check`, so this table is the one place that says what can follow what.

    STOPPED  --start-->           STARTING
    STARTING --ready-->           RUNNING      (first heartbeat, probe passed, or start_seconds up)
    STARTING --died early-->      BACKOFF      (a failed start; retried after a delay)
    RUNNING  --died-->            BACKOFF      (restart policy says restart)
    RUNNING  --died-->            EXITED       (restart policy says leave it)
    BACKOFF  --delay over-->      STARTING
    any live --too many restarts / cannot spawn / cannot execute--> FATAL
    STARTING, RUNNING --stop-->   STOPPING --gone--> STOPPED
"""

from __future__ import annotations

from enum import StrEnum


class ProcessState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    EXITED = "exited"
    FATAL = "fatal"

    @property
    def has_process(self) -> bool:
        """Whether an OS process exists for the replica in this state."""
        return self in _WITH_PROCESS

    @property
    def is_settled(self) -> bool:
        """Whether the state waits for nothing: `up` and `restart` wait for these."""
        return self in _SETTLED

    def check(self, new: ProcessState) -> ProcessState:
        """Return `new` if the table allows it from here, else raise."""
        if new not in TRANSITIONS[self]:
            raise InvalidTransition(f"{self.value} -> {new.value}")
        return new


class InvalidTransition(RuntimeError):
    """A bug: the daemon tried a state change that the table forbids."""


S = ProcessState
TRANSITIONS: dict[ProcessState, frozenset[ProcessState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.EXITED, S.STOPPING, S.FATAL}),
    S.RUNNING: frozenset({S.BACKOFF, S.EXITED, S.STOPPING, S.FATAL}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPED, S.FATAL}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.EXITED: frozenset({S.STARTING, S.STOPPED}),
    S.FATAL: frozenset({S.STARTING, S.STOPPED}),
}
_WITH_PROCESS = frozenset({S.STARTING, S.RUNNING, S.STOPPING})
_SETTLED = frozenset({S.RUNNING, S.STOPPED, S.EXITED, S.FATAL})
del S
