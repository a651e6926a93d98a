"""Jobs: a durable queue of F(n) mod m computations (and allow-listed user functions).

`Jobs` (api.py) is the interface for programs and the CLI (cli.py); `JobWorker`
(worker.py) the supervised service that runs them; `job.py` the record and its
states; the stores (store.py the interface, sqlite_store.py, redis_store.py) keep
them; wake.py wakes sleepers without polling; fib.py is the built-in job.
Nothing is imported here, so the CLI's start stays cheap.
"""
