"""A bench peer, not procorch code: the originals' gateway design, rebuilt minimally so that
bench/gateway/runner.py can measure it beside procorch's gateway.

    python bench/gateway/original.py GATEWAY_PORT WORKER_PORT    # started by runner.py

What it rebuilds, from the two documents the project grew from (shared/seeds):
- a gateway on Flask's development server, `app.run(threaded=True)`;
- UserService and OrderService, each a process of its own looping on a
  `multiprocessing.Queue`; the gateway puts a request on a service's queue and waits on a
  reply queue; OrderService validates the user by asking UserService the same way;
- a job worker, a second Flask development server: the gateway forwards POST /job/<n> to
  its POST /process (an in-memory job, computed in a thread of its own) and GET /job/<id>
  to its GET /info, with `requests`, as the original did.
Everything is kept in dicts in memory, as in the originals; no delay, no failures (like
the procorch stack under test).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: this file runs by path
from harness.child import die_with_parent  # noqa: E402

HOST = "127.0.0.1"
MOD = 1_000_000_007
CALL_TIMEOUT = 5.0  # s a gateway request waits for a service's reply
CTX = mp.get_context("spawn")


# -- the services: one process each, one request at a time from their queue -------------


def user_service(inbox: Any, reply_to: dict[str, Any]) -> None:
    die_with_parent()
    users: dict[int, dict[str, Any]] = {}
    ids = itertools.count(1)
    while True:
        msg = inbox.get()
        data = msg["data"]
        if msg["action"] == "create_user":
            user = {"user_id": next(ids), "username": data["username"], "email": data["email"]}
            users[user["user_id"]] = user
            reply = {"status": "success", "data": user}
        elif msg["action"] in ("get_user", "validate_user"):
            user = users.get(data["user_id"])
            reply = {"status": "success", "data": user} if user else {"status": "not_found"}
        else:
            reply = {"status": "error", "error": f"unknown action {msg['action']}"}
        reply_to[msg["reply_to"]].put({"request_id": msg["request_id"], **reply})


def order_service(inbox: Any, reply_to: dict[str, Any], users: Any, users_reply: Any) -> None:
    die_with_parent()
    orders: dict[int, dict[str, Any]] = {}
    ids = itertools.count(1)
    while True:
        msg = inbox.get()
        data = msg["data"]
        reply: dict[str, Any] = {"status": "error", "error": f"unknown action {msg['action']}"}
        if msg["action"] == "create_order":
            # The inter-service call: ask UserService, wait for its answer (one at a time,
            # so the next reply on this queue is this request's).
            users.put(
                {
                    "request_id": uuid.uuid4().hex,
                    "action": "validate_user",
                    "data": {"user_id": data["user_id"]},
                    "reply_to": "OrderService",
                }
            )
            if users_reply.get(timeout=CALL_TIMEOUT)["status"] != "success":
                reply = {"status": "not_found", "error": "unknown user"}
            else:
                order = {"order_id": next(ids), **data, "status": "created"}
                orders[order["order_id"]] = order
                reply = {"status": "success", "data": order}
        reply_to[msg["reply_to"]].put({"request_id": msg["request_id"], **reply})


# -- the job worker: a Flask app of its own, jobs in threads ------------------------------


def fib(n: int, mod: int = MOD) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, (a + b) % mod
    return a


def worker(port: int) -> None:
    die_with_parent()
    app = Flask("worker")
    jobs: dict[int, dict[str, Any]] = {}
    ids = itertools.count(1)

    def run_job(job: dict[str, Any]) -> None:
        job["status"] = "running"
        job["output"] = fib(job["input"], job["mod"])
        job["status"], job["finished_time"] = "done", time.time()

    @app.post("/process")
    def process() -> ResponseReturnValue:
        job_id = next(ids)
        job = {"job_id": job_id, "status": "pending", "input": request.get_json()["n"]}
        job |= {"output": None, "init_time": time.time(), "finished_time": None, "mod": MOD}
        jobs[job_id] = job
        threading.Thread(target=run_job, args=(job,), daemon=True).start()
        return {"status": "taken", "job_id": job_id}

    @app.get("/info")
    def info() -> ResponseReturnValue:
        job = jobs.get(request.get_json()["id"])
        return dict(job) if job else ({"error": "job not found"}, 404)

    app.run(host=HOST, port=port, threaded=True)


# -- the gateway ----------------------------------------------------------------------


class Replies:
    """Hands each reply on the gateway's queue to the request thread waiting for it (the
    dev server runs requests in threads, so several wait on the one queue at a time)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        threading.Thread(target=self._dispatch, daemon=True).start()

    def _dispatch(self) -> None:
        while True:
            reply = self.queue.get()
            slot = self.waiting.pop(reply["request_id"], None)
            if slot is not None:
                slot[1].append(reply)
                slot[0].set()

    def call(self, service: Any, action: str, data: dict[str, Any]) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        slot: tuple[threading.Event, list[dict[str, Any]]] = (threading.Event(), [])
        self.waiting[request_id] = slot
        service.put({"request_id": request_id, "action": action, "data": data, "reply_to": "gw"})
        if not slot[0].wait(CALL_TIMEOUT):
            self.waiting.pop(request_id, None)
            return {"status": "timeout"}
        return slot[1][0]


def answer(reply: dict[str, Any], created: bool = False) -> ResponseReturnValue:
    codes = {"success": 201 if created else 200, "not_found": 404, "timeout": 504}
    return jsonify(reply), codes.get(reply["status"], 500)


def gateway(port: int, worker_url: str) -> None:
    users, orders = CTX.Queue(), CTX.Queue()
    replies, users_to_orders = CTX.Queue(), CTX.Queue()
    services = {
        "UserService": CTX.Process(
            target=user_service, args=(users, {"gw": replies, "OrderService": users_to_orders})
        ),
        "OrderService": CTX.Process(
            target=order_service, args=(orders, {"gw": replies}, users, users_to_orders)
        ),
    }
    for proc in services.values():
        proc.start()
    pending = Replies(replies)
    app = Flask("gateway")

    @app.get("/health")
    def health() -> ResponseReturnValue:
        alive = {name: proc.is_alive() for name, proc in services.items()}
        return {"status": "healthy" if all(alive.values()) else "degraded", "services": alive}

    @app.post("/users")
    def create_user() -> ResponseReturnValue:
        return answer(pending.call(users, "create_user", request.get_json()), created=True)

    @app.get("/users/<int:user_id>")
    def get_user(user_id: int) -> ResponseReturnValue:
        return answer(pending.call(users, "get_user", {"user_id": user_id}))

    @app.post("/orders")
    def create_order() -> ResponseReturnValue:
        return answer(pending.call(orders, "create_order", request.get_json()), created=True)

    @app.post("/job/<int:n>")
    def submit_job(n: int) -> ResponseReturnValue:
        got = requests.post(f"{worker_url}/process", json={"n": n}, timeout=CALL_TIMEOUT)
        return got.json(), got.status_code

    @app.get("/job/<int:job_id>")
    def get_job(job_id: int) -> ResponseReturnValue:
        got = requests.get(f"{worker_url}/info", json={"id": job_id}, timeout=CALL_TIMEOUT)
        return got.json(), got.status_code

    app.run(host=HOST, port=port, threaded=True)


def _wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main(argv: list[str]) -> None:
    die_with_parent()
    gateway_port, worker_port = int(argv[0]), int(argv[1])
    CTX.Process(target=worker, args=(worker_port,)).start()
    _wait_for_port(worker_port)  # the gateway answers only once its worker does
    gateway(gateway_port, f"http://{HOST}:{worker_port}")


if __name__ == "__main__":
    main(sys.argv[1:])
