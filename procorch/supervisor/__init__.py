"""The supervisor: a daemon that runs replicas as OS processes and keeps them alive.

Modules: `state` (the process state machine), `process` (one replica's OS process),
`health` (liveness checks), `logs` (output capture), `rundir` (files on disk),
`control` (the CLI's socket protocol), `daemon` (the event loop tying them together).
"""
