"""Idempotency keys over the real stack: HTTP, the CLI, the Python client, kill -9.

One stack (module scope) runs the built-in services as their `Dying*` twins from
tests/fixtures/idempotent.py (the same services, which kill -9 themselves right after a
commit when the test leaves a flag file), the gateway, and the `Notes` fixture service.
Each test makes its own user and keys, and counts what it created.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from procorch.services.client import Client
from procorch.services.protocol import Invalid, KeyReused
from tests.conftest import FIXTURES, GatewayStack, wait_for

JSON = "application/json"
NOTES_RETENTION = 0.5  # seconds the Notes service keeps a key
SERVICES = f"""
[services.UserService]
module = "idempotent:DyingUserService"
cwd = "{FIXTURES}"

[services.NotificationService]
module = "idempotent:DyingNotificationService"
cwd = "{FIXTURES}"

[services.OrderService]
module = "idempotent:DyingOrderService"
cwd = "{FIXTURES}"
depends_on = ["UserService"]

[services.Notes]
module = "idempotent:Notes"
cwd = "{FIXTURES}"
env = {{ NOTES_RETENTION = "{NOTES_RETENTION}" }}
"""
# The POSTs that create something: endpoint -> the service that stores it.
CREATES = {
    "/users": "UserService",
    "/orders": "OrderService",
    "/notifications": "NotificationService",
}
RECORD = {"/users": "user", "/orders": "order", "/notifications": "notification"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    s = GatewayStack(tmp_path_factory.mktemp("idempotency"))
    s.write_gateway(extra=SERVICES)
    try:
        s.up()
        yield s
    finally:
        s.cleanup()


# -- helpers -----------------------------------------------------------------------------


def key() -> str:
    return f"key-{uuid.uuid4().hex}"


def new_user(gw: GatewayStack) -> int:
    name = f"user-{uuid.uuid4().hex[:12]}"
    reply = gw.post("/users", json={"username": name, "email": f"{name}@example.com"})
    assert reply.status_code == 201, reply.text
    return reply.json()["user"]["id"]


def body_for(gw: GatewayStack, path: str, variant: str = "") -> dict[str, Any]:
    """A valid body for POST `path`; another `variant` makes another request."""
    if path == "/users":
        name = f"user-{uuid.uuid4().hex[:12]}{variant}"
        return {"username": name, "email": f"{name}@example.com"}
    user_id = new_user(gw)
    if path == "/orders":
        return {"user_id": user_id, "product": f"pen{variant}", "quantity": 2}
    return {"user_id": user_id, "message": f"hello{variant}", "type": "sms"}


def other_body(body: dict[str, Any]) -> dict[str, Any]:
    """The same request but for one field: what a client reusing a key by mistake sends."""
    field = {"username": "email", "user_id": "quantity" if "product" in body else "message"}
    name = field["username" if "username" in body else "user_id"]
    changed = 3 if name == "quantity" else f"other-{body[name]}"
    return body | {name: changed}


def totals(gw: GatewayStack) -> dict[str, int]:
    return {path: gw.get(path).json()["total"] for path in CREATES}


def created_one(gw: GatewayStack, before: dict[str, int], path: str, notified: bool = True) -> None:
    """Exactly one record more at `path` than `before` (and an order's one note, unless
    its service died before telling: the note comes behind the order, so wait for it),
    and nothing else."""
    expected = before | {path: before[path] + 1}
    if path == "/orders" and notified:
        expected["/notifications"] += 1
    wait_for(lambda: totals(gw) == expected, timeout=5)


def post(gw: GatewayStack, path: str, body: Any, idem: str | bytes | None) -> requests.Response:
    headers = {} if idem is None else {"Idempotency-Key": idem}
    return gw.post(path, json=body, headers=headers)


def error(response: requests.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == JSON
    body = response.json()
    assert set(body) == {"status", "message", "code"} and body["status"] == "error", body
    assert body["code"] == code, body
    return body["message"]


def notes_of_order(gw: GatewayStack, user_id: int, order_id: int) -> list[dict[str, Any]]:
    notes = gw.get(f"/notifications?user_id={user_id}").json()["notifications"]
    return [n for n in notes if n["order_id"] == order_id]


def query(gw: GatewayStack, name: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a service's database (data/NAME.db), read with SQLite itself."""
    db = sqlite3.connect(gw.run_dir / "data" / f"{name}.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def count_rows(gw: GatewayStack, table: str) -> int:
    return query(gw, table, f"SELECT count(*) FROM {table}")[0][0]


def calls_notes(gw: GatewayStack, *args: str) -> Any:
    return gw.cli("call", "Notes", *args)


# -- the same key twice: one record, the same answer ------------------------------------


@pytest.mark.parametrize("path", CREATES)
def test_a_post_sent_again_with_its_key_creates_once_and_answers_the_same(
    gw: GatewayStack, path: str
) -> None:
    body = body_for(gw, path)
    before = totals(gw)
    idem = key()
    first = post(gw, path, body, idem)
    assert first.status_code in (200, 201), first.text
    for _ in range(3):
        again = post(gw, path, body, idem)
        assert (again.status_code, again.content) == (first.status_code, first.content)
    created_one(gw, before, path)
    # without the key, the same body is a new request (for users: a taken name)
    plain = post(gw, path, body, None)
    assert plain.status_code == (409 if path == "/users" else first.status_code), plain.text


@pytest.mark.parametrize("path", CREATES)
def test_the_same_key_with_another_body_is_409_key_reused_and_creates_nothing(
    gw: GatewayStack, path: str
) -> None:
    body = body_for(gw, path)
    idem = key()
    before = totals(gw)
    first = post(gw, path, body, idem)
    assert first.status_code in (200, 201), first.text
    created_one(gw, before, path)
    before = totals(gw)
    message = error(post(gw, path, other_body(body), idem), 409, "key_reused")
    assert idem in message and "already used" in message, message
    assert totals(gw) == before
    again = post(gw, path, body, idem)  # the first request is still answered
    assert (again.status_code, again.content) == (first.status_code, first.content)


@pytest.mark.parametrize(
    "bad",
    ["", "a b", "k" * 256, b"caf\xc3\xa9", "tab\there"],
    ids=["empty", "space", "256-chars", "non-ascii", "tab"],
)
@pytest.mark.parametrize("path", CREATES)
def test_a_malformed_key_is_400_and_creates_nothing(
    gw: GatewayStack, path: str, bad: str | bytes
) -> None:
    body = body_for(gw, path)
    before = totals(gw)
    message = error(post(gw, path, body, bad), 400, "invalid")
    assert "Idempotency-Key" in message, message
    assert totals(gw) == before


def test_a_key_of_255_visible_characters_is_taken(gw: GatewayStack) -> None:
    body = body_for(gw, "/orders")
    idem = "".join(chr(33 + i % 94) for i in range(255))  # every visible ASCII character
    first = post(gw, "/orders", body, idem)
    assert first.status_code == 201, first.text
    assert post(gw, "/orders", body, idem).content == first.content


def test_20_concurrent_requests_with_one_key_create_one_order_and_one_note(
    gw: GatewayStack,
) -> None:
    body = body_for(gw, "/orders")
    idem = key()
    start = threading.Barrier(20)

    def attempt(_: int) -> tuple[int, bytes]:
        with requests.Session() as session:
            start.wait()
            reply = session.post(
                f"{gw.url}/orders", json=body, headers={"Idempotency-Key": idem}, timeout=30
            )
            return reply.status_code, reply.content

    # all that the gateway's threads let in at once pass the check before the action,
    # then race in commit; the others come when the first are answered
    slow = gw.run_dir / "slow-before-commit"
    slow.touch()
    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(attempt, range(20)))
    finally:
        slow.unlink()
    assert {status for status, _ in answers} == {201}, answers
    assert len({content for _, content in answers}) == 1, answers
    order = json.loads(answers[0][1])["order"]
    orders = gw.get(f"/orders?user_id={body['user_id']}").json()["orders"]
    assert orders == [order]
    # the 19 others ran nothing after the commit: one note
    wait_for(lambda: notes_of_order(gw, body["user_id"], order["id"]))
    assert len(notes_of_order(gw, body["user_id"], order["id"])) == 1


def test_a_retried_order_is_answered_from_its_key_while_userservice_is_down(
    gw: GatewayStack,
) -> None:
    """A known key is answered before the action runs: no validation, no user check, so
    a retry gets its answer even when what the first attempt needed is gone."""
    body = body_for(gw, "/orders")
    idem = key()
    first = post(gw, "/orders", body, idem)
    assert first.status_code == 201, first.text
    stop = gw.cli("stop", "UserService")
    assert stop.returncode == 0, stop.stderr
    try:
        error(post(gw, "/orders", body, key()), 503, "unavailable")  # a new order cannot
        again = post(gw, "/orders", body, idem)
        assert (again.status_code, again.content) == (201, first.content)
    finally:
        start = gw.cli("start", "UserService")
        assert start.returncode == 0, start.stderr


# -- kill -9 between the commit and the reply --------------------------------------------


@pytest.mark.parametrize("path", CREATES)
def test_a_service_killed_after_its_commit_answers_the_retry_with_the_record(
    gw: GatewayStack, path: str
) -> None:
    """The service commits, then kill -9s itself before replying (the fixture's flag): the
    client gets 503 not knowing whether anything was created. The retry with the key, to
    the restarted service, gets what was committed, and creates nothing more."""
    service = CREATES[path]
    body = body_for(gw, path)
    before = totals(gw)
    old_pid = gw.pid_of(service)
    idem = key()
    (gw.run_dir / "die-after-commit").touch()
    lost = post(gw, path, body, idem)
    error(lost, 503, "unavailable")
    assert not (gw.run_dir / "die-after-commit").exists()  # the flag was used: it died
    # and had committed (read from its database: the service is down)
    assert count_rows(gw, path.strip("/")) == before[path] + 1
    wait_for(lambda: gw.restarted(service, old_pid), timeout=15)
    retry = post(gw, path, body, idem)
    assert retry.status_code in (200, 201), retry.text
    # an order's note neither: it died before telling, and a retry runs nothing
    created_one(gw, before, path, notified=False)
    record = retry.json()[RECORD[path]]
    (listed,) = gw.get(f"{path}?limit=1&offset={before[path]}").json()[path.strip("/")]
    assert listed["id"] == record["id"]
    if path != "/notifications":  # a notification's status moves on as it is delivered
        assert listed == record


def test_orders_retried_through_a_gateway_killed_under_load_are_created_once(
    gw: GatewayStack,
) -> None:
    """4 clients each create orders with a new key per order, retrying one until it is
    answered; the gateway is kill -9ed meanwhile. OrderService waits 0.3 s between its
    commit and its reply (the fixture's flag), so the kill finds committed orders whose
    answers it loses. Every order is created exactly once, and each of its successful
    answers is the same."""
    user_id = new_user(gw)
    answers: dict[str, set[bytes]] = {}  # key -> every successful answer it got
    acknowledged: list[str] = []  # keys answered, for kill_under_load to count
    retried: list[str] = []

    problems: list[BaseException] = []  # what a client thread died of, to fail with

    def client(stop: threading.Event) -> None:
        try:
            keep_ordering(stop)
        except BaseException as exc:
            problems.append(exc)
            raise

    def keep_ordering(stop: threading.Event) -> None:
        session = requests.Session()
        while not stop.is_set():
            idem = key()
            answers[idem] = set()
            while True:  # until answered: a client that must not lose its order
                try:
                    reply = session.post(
                        f"{gw.url}/orders",
                        json={"user_id": user_id, "product": "pen"},
                        headers={"Idempotency-Key": idem},
                        timeout=10,
                    )
                except requests.RequestException:  # reset, cut short mid-answer...
                    retried.append(idem)
                    session.close()
                    session = requests.Session()
                    stop.wait(0.05)
                    continue
                if reply.status_code == 201:
                    answers[idem].add(reply.content)
                    acknowledged.append(idem)
                    break
                assert reply.status_code == 503, reply.text  # nothing else is expected
                retried.append(idem)
                stop.wait(0.05)
        session.close()

    slow = gw.run_dir / "slow-after-commit"
    slow.touch()
    try:
        gw.kill_under_load("Gateway", client, acknowledged)
    finally:
        slow.unlink()
    assert not problems, problems
    assert retried, "the gateway was killed, so some request had to be retried"
    assert all(len(replies) == 1 for replies in answers.values()), answers
    orders = gw.get(f"/orders?user_id={user_id}&limit=1000").json()
    assert orders["total"] == len(answers)
    ids = {json.loads(next(iter(replies)))["order"]["id"] for replies in answers.values()}
    assert ids == {o["id"] for o in orders["orders"]}


# -- keys are per sender, per action, and kept for a while -------------------------------


def test_the_gateways_keys_are_not_the_clis(gw: GatewayStack) -> None:
    """Keys belong to their sender: a key an HTTP client used is free for the CLI (and a
    service's for an HTTP client), so nobody can use up or replay another's keys."""
    idem = key()
    body = body_for(gw, "/users")
    assert post(gw, "/users", body, idem).status_code == 201
    other = body_for(gw, "/users")
    cli = gw.cli("call", "UserService", "create_user", json.dumps(other), "-k", idem, "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["data"]["user"]["username"] == other["username"]


def test_a_key_is_kept_for_the_retention_then_forgotten_and_purged(gw: GatewayStack) -> None:
    idem = key()
    first = calls_notes(gw, "create_note", '{"text": "one"}', "-k", idem)
    assert first.returncode == 0, first.stderr
    refused = calls_notes(gw, "create_note", '{"text": "two"}', "-k", idem)
    assert refused.returncode == 1 and "key_reused" in refused.stderr, refused.stderr
    assert idem in stored_keys(gw)
    time.sleep(NOTES_RETENTION * 1.5)
    # past the retention, the next keyed write purges the key (Notes purges at every one)
    other = calls_notes(gw, "create_note", '{"text": "other"}', "-k", key())
    assert other.returncode == 0, other.stderr
    assert idem not in stored_keys(gw)
    # and the key is free for a new request
    reused = calls_notes(gw, "create_note", '{"text": "two"}', "-k", idem, "--json")
    assert reused.returncode == 0, reused.stderr
    assert json.loads(reused.stdout)["data"]["note"]["text"] == "two"


def stored_keys(gw: GatewayStack) -> set[str]:
    """The keys in the Notes service's database."""
    return {k for (k,) in query(gw, "notes", "SELECT key FROM idempotency")}


# -- the CLI and the Python client -------------------------------------------------------


def test_call_with_an_idempotency_key_creates_once(gw: GatewayStack) -> None:
    count = json.loads(calls_notes(gw, "count_notes", "--json").stdout)["data"]["count"]
    idem = key()
    data = json.dumps({"text": f"note {idem}"})
    first = calls_notes(gw, "create_note", data, "--idempotency-key", idem)
    assert first.returncode == 0, first.stderr
    again = calls_notes(gw, "create_note", data, "-k", idem)
    assert (again.returncode, again.stdout) == (0, first.stdout)
    after = json.loads(calls_notes(gw, "count_notes", "--json").stdout)["data"]["count"]
    assert after == count + 1


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("create_note", '{"text": "x"}', "-k", "a b"), 2, "--idempotency-key must be 1 to 255"),
        (("create_note", '{"text": "x"}', "-k", "k" * 256), 2, "--idempotency-key must be"),
        (("count_notes", "{}", "-k", "fine"), 1, "count_notes takes no idempotency key"),
    ],
    ids=["space", "too-long", "not-idempotent"],
)
def test_call_refuses_a_key_in_one_line(
    gw: GatewayStack, args: tuple[str, ...], code: int, words: str
) -> None:
    result = calls_notes(gw, *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_the_python_client_sends_the_key_and_keys_are_per_sender(gw: GatewayStack) -> None:
    idem = key()
    with Client(gw.run_dir, sender="app.1") as one, Client(gw.run_dir, sender="app.2") as two:
        first = one.call("Notes", "create_note", {"text": "hi"}, idempotency_key=idem)
        # another replica of the same sender (`app`): the same key, the same note
        assert two.call("Notes", "create_note", {"text": "hi"}, idempotency_key=idem) == first
        with pytest.raises(KeyReused):
            two.call("Notes", "create_note", {"text": "bye"}, idempotency_key=idem)
        with pytest.raises(Invalid, match="`idempotency_key` must be a string"):
            one.call("Notes", "create_note", {"text": "hi"}, idempotency_key=5)  # type: ignore[arg-type]
    with Client(gw.run_dir, sender="other") as other:
        mine = other.call("Notes", "create_note", {"text": "hi"}, idempotency_key=idem)
    assert mine["note"]["id"] != first["note"]["id"]


def test_an_action_returning_other_than_what_it_committed_is_an_error(gw: GatewayStack) -> None:
    """The base class catches a service author's mistake at once: a retry would get the
    stored reply, not the one returned, so returning another is refused loudly."""
    with Client(gw.run_dir) as client:
        assert client.call("Notes", "create_note_badly", {"text": "no key"})  # fine without
        with pytest.raises(Exception, match="must return what self.commit returned"):
            client.call("Notes", "create_note_badly", {"text": "x"}, idempotency_key=key())


def test_a_service_with_idempotent_actions_and_no_database_does_not_start(
    tmp_path: Path,
) -> None:
    stack = GatewayStack(tmp_path)
    stack.write(
        f"""
        [services.NoDb]
        module = "idempotent:NoDatabase"
        cwd = "{FIXTURES}"
        """,
        settings="max_restarts = 1\n",
    )
    try:
        up = stack.cli("up")
        assert up.returncode == 3, up.stdout + up.stderr
        (replica,) = stack.replicas("NoDb")
        assert replica["state"] == "fatal"
        assert "has idempotent actions: set self.db in setup" in replica["last_exit"]
    finally:
        stack.cleanup()


def test_the_openapi_document_describes_the_header_and_the_409(gw: GatewayStack) -> None:
    doc = gw.get("/openapi.json").json()
    for path in CREATES:
        op = doc["paths"][path]["post"]
        (header,) = [p for p in op["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key" and header["required"] is False
        assert header["schema"]["maxLength"] == 255
        assert "409" in op["responses"]
    for path, item in doc["paths"].items():  # reads take no key
        assert "Idempotency-Key" not in json.dumps(item.get("get", {})), path
