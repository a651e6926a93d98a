"""The load of the rolling-restart benchmark: threads that GET / in a loop, one new
connection per request, recording each request's start, end and outcome.

    python httpload.py PORT [--threads 4] [--timeout 5]

It runs until its stdin closes, then prints the records on stdout as JSON: a list of
[start, end, outcome], the times on CLOCK_MONOTONIC (the harness's `time.monotonic()`
reads the same clock), the outcome an HTTP status or the kind of failure: "refused",
"reset" (reset or closed without a reply), "timeout" or "error". A new connection per
request is what makes a moment without a listener visible. After a failure a thread
pauses 10 ms, as a client's retry would, so that a refusing port does not turn the load
into a busy loop that starves the servers of CPU.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: this file runs by path
from harness.child import die_with_parent  # noqa: E402

FAILURE_PAUSE = 0.010  # s
KINDS = ("refused", "reset", "timeout", "error")

Record = tuple[float, float, int | str]


def one_request(port: int, timeout: float) -> int | str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        reply.read()
        return reply.status
    except ConnectionRefusedError:
        return "refused"
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        return "reset"
    except TimeoutError:
        return "timeout"
    except (OSError, http.client.HTTPException):
        return "error"
    finally:
        conn.close()


def worker(port: int, timeout: float, stop: threading.Event, records: list[Record]) -> None:
    while not stop.is_set():
        start = time.monotonic()
        outcome = one_request(port, timeout)
        records.append((start, time.monotonic(), outcome))
        if not isinstance(outcome, int):
            time.sleep(FAILURE_PAUSE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    die_with_parent()
    stop = threading.Event()
    per_thread: list[list[Record]] = [[] for _ in range(args.threads)]
    threads = [
        threading.Thread(target=worker, args=(args.port, args.timeout, stop, records))
        for records in per_thread
    ]
    for thread in threads:
        thread.start()
    sys.stdin.buffer.read()  # until the harness closes it
    stop.set()
    for thread in threads:
        thread.join()
    json.dump([r for records in per_thread for r in records], sys.stdout)


if __name__ == "__main__":
    main()
