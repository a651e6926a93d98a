"""The built-in services through real calls: users, orders, notifications, and failures."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from procorch.services.client import Client
from procorch.services.protocol import ServiceError
from tests.conftest import Stack, wait_for

REQUEST_ID = re.compile(r"\d+-\d+")  # the caller's pid, then a counter
BUILT_IN = """
[services.UserService]
module = "procorch.services.users:UserService"

[services.NotificationService]
module = "procorch.services.notifications:NotificationService"

[services.OrderService]
module = "procorch.services.orders:OrderService"
depends_on = ["UserService"]
"""


@pytest.fixture
def shop(stack: Stack) -> Stack:
    stack.write(BUILT_IN)
    stack.up()
    return stack


@pytest.fixture
def client(shop: Stack) -> Client:
    with Client(shop.run_dir) as c:
        yield c


def error_of(fn: Any, *args: Any, **kwargs: Any) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        fn(*args, **kwargs)
    return info.value


def all_orders(client: Client) -> list[dict]:
    """Every stored order, read page by page (a page holds at most 1000)."""
    orders: list[dict] = []
    while page := client.call(
        "OrderService", "list_orders", {"offset": len(orders), "limit": 1000}
    )["orders"]:
        orders += page
    return orders


# --- users ------------------------------------------------------------------------


def test_create_get_list_users(client: Client) -> None:
    alice = client.call("UserService", "create_user", {"username": "alice", "email": "a@x.org"})
    bob = client.call("UserService", "create_user", {"username": "bob", "email": "b@x.org"})
    assert alice["user"]["id"] == 1 and bob["user"]["id"] == 2
    assert alice["user"]["username"] == "alice" and alice["user"]["email"] == "a@x.org"
    assert client.call("UserService", "get_user", {"user_id": 2}) == bob
    listed = client.call("UserService", "list_users", {})
    assert [u["username"] for u in listed["users"]] == ["alice", "bob"]
    assert listed["count"] == listed["total"] == 2
    page = client.call("UserService", "list_users", {"limit": 1, "offset": 1})
    assert [u["id"] for u in page["users"]] == [2] and page["total"] == 2
    assert client.call("UserService", "validate_user", {"user_id": 1})["valid"] is True
    assert client.call("UserService", "validate_user", {"user_id": 9})["valid"] is False


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"email": "a@x.org"}, "username and email are required"),  # the original's words
        ({"username": None, "email": "a@x.org"}, "username and email are required"),
        ({"username": "  ", "email": "a@x.org"}, "`username` must not be empty"),
        ({"username": 5, "email": "a@x.org"}, "`username` must be a string"),
        ({"username": "c"}, "username and email are required"),
        ({"username": "c", "email": "not-an-email"}, "`email` is not a valid email"),
        ({"username": "c", "email": "a@b"}, "`email` is not a valid email"),
    ],
)
def test_create_user_validates(client: Client, data: dict, problem: str) -> None:
    err = error_of(client.call, "UserService", "create_user", data)
    assert err.code == "invalid" and problem in err.message
    assert client.call("UserService", "list_users", {})["total"] == 0  # nothing created


def test_duplicate_username_is_a_conflict(client: Client) -> None:
    client.call("UserService", "create_user", {"username": "alice", "email": "a@x.org"})
    err = error_of(
        client.call, "UserService", "create_user", {"username": "ALICE", "email": "b@x.org"}
    )
    assert (err.code, err.message) == ("conflict", "User ALICE already exists")
    # the refused insert did not use up an id
    carol = client.call("UserService", "create_user", {"username": "carol", "email": "c@x.org"})
    assert carol["user"]["id"] == 2


def test_unknown_user_is_not_found(client: Client) -> None:
    for action, data in (("get_user", {"user_id": 42}), ("get_user", {"user_id": 0})):
        err = error_of(client.call, "UserService", action, data)
        assert err.code in ("not_found", "invalid")
    assert error_of(client.call, "UserService", "get_user", {"user_id": 42}).code == "not_found"
    assert error_of(client.call, "UserService", "get_user", {"user_id": "1"}).code == "invalid"
    assert error_of(client.call, "UserService", "get_user", {"user_id": True}).code == "invalid"


# --- orders and notifications -----------------------------------------------------------


def test_orders_validate_the_user_through_user_service(client: Client) -> None:
    client.call("UserService", "create_user", {"username": "alice", "email": "a@x.org"})
    order = client.call(
        "OrderService", "create_order", {"user_id": 1, "product": "Laptop", "quantity": 2}
    )["order"]
    assert (order["id"], order["user_id"], order["product"]) == (1, 1, "Laptop")
    assert (order["quantity"], order["status"]) == (2, "created")
    default = client.call("OrderService", "create_order", {"user_id": 1, "product": "Pen"})
    assert default["order"]["quantity"] == 1
    assert client.call("OrderService", "get_order", {"order_id": 1})["order"] == order
    listed = client.call("OrderService", "list_orders", {})
    assert [o["id"] for o in listed["orders"]] == [1, 2] and listed["total"] == 2

    err = error_of(client.call, "OrderService", "create_order", {"user_id": 7, "product": "X"})
    assert (err.code, err.message) == ("not_found", "User 7 not found")
    for bad in (
        {"user_id": 1, "product": "X", "quantity": 0},
        {"user_id": 1, "product": "X", "quantity": 1.5},
        {"user_id": 1, "product": ""},
        {"product": "X"},
    ):
        assert error_of(client.call, "OrderService", "create_order", bad).code == "invalid"
    assert client.call("OrderService", "list_orders", {})["total"] == 2  # none created
    err = error_of(client.call, "OrderService", "get_order", {"order_id": 3})
    assert (err.code, err.message) == ("not_found", "Order 3 not found")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"user_id": 1}, "user_id and product are required"),
        ({"user_id": None, "product": "X"}, "user_id and product are required"),
        # null is no quantity: NaN and infinity reach a service as null, never as 1
        (
            {"user_id": 1, "product": "X", "quantity": None},
            "`quantity` must be an integer, not null",
        ),
        ({"user_id": 1, "product": "X", "quantity": float("nan")}, "not null"),
        ({"user_id": 1, "product": "X", "quantity": float("inf")}, "not null"),
        ({"user_id": 1, "product": "X", "quantity": 10**6 + 1}, "`quantity` is out of range"),
        # beyond 64 bits: out of range, not "not an integer" (it crosses the wire as 1e+23)
        ({"user_id": 99999999999999999999999, "product": "X"}, "`user_id` is out of range"),
        ({"user_id": 2**63, "product": "X"}, "`user_id` is out of range"),
        ({"user_id": 0, "product": "X"}, "`user_id` is out of range: it must be at least 1"),
    ],
)
def test_create_order_validates(client: Client, data: dict, problem: str) -> None:
    client.call("UserService", "create_user", {"username": "alice", "email": "a@x.org"})
    err = error_of(client.call, "OrderService", "create_order", data)
    assert err.code == "invalid" and problem in err.message, err.message
    assert client.call("OrderService", "list_orders", {})["total"] == 0


def test_a_whole_number_is_an_integer_whatever_its_spelling(client: Client) -> None:
    """JSON does not tell 2.0 from 2 (the gateway's document neither): both are 2."""
    client.call("UserService", "create_user", {"username": "alice", "email": "a@x.org"})
    order = client.call(
        "OrderService", "create_order", {"user_id": 1.0, "product": "X", "quantity": 2.0}
    )["order"]
    assert (order["user_id"], order["quantity"]) == (1, 2)
    assert type(order["quantity"]) is int


def test_one_notification_per_created_order(client: Client) -> None:
    client.call("UserService", "create_user", {"username": "alice", "email": "a@x.org"})
    with ThreadPoolExecutor(8) as pool:
        orders = list(
            pool.map(
                lambda i: client.call(
                    "OrderService", "create_order", {"user_id": 1, "product": f"p{i}"}
                )["order"]["id"],
                range(40),
            )
        )
    assert sorted(orders) == list(range(1, 41))

    def all_sent() -> bool:
        return client.call("NotificationService", "get_stats", {})["notifications_sent"] == 40

    wait_for(all_sent, timeout=10)
    notes = client.call("NotificationService", "list_notifications", {"limit": 1000})
    assert sorted(n["order_id"] for n in notes["notifications"]) == sorted(orders)  # once each
    assert {n["message"] for n in notes["notifications"]} == {"Your order has been created"}
    assert {(n["status"], n["type"]) for n in notes["notifications"]} == {("sent", "email")}


def test_send_notification_is_queued_then_sent(client: Client) -> None:
    for name in ("u1", "u2", "u3"):
        client.call("UserService", "create_user", {"username": name, "email": f"{name}@x.org"})
    note = client.call(
        "NotificationService", "send_notification", {"user_id": 3, "message": "hi", "type": "SMS"}
    )["notification"]
    assert (note["status"], note["type"], note["sent_at"]) == ("queued", "sms", None)

    def sent() -> dict | None:
        notes = client.call("NotificationService", "list_notifications", {"user_id": 3})
        return notes["notifications"][0] if notes["notifications"][0]["sent_at"] else None

    delivered = wait_for(sent, timeout=5)
    assert delivered["status"] == "sent" and delivered["id"] == note["id"]
    for bad in ({"user_id": 3}, {"message": "x"}, {"user_id": 3, "message": "x", "type": "fax"}):
        err = error_of(client.call, "NotificationService", "send_notification", bad)
        assert err.code == "invalid"
    for bad in ({"user_id": 3}, {"user_id": 3, "message": None}, {"message": "x"}):
        err = error_of(client.call, "NotificationService", "send_notification", bad)
        assert err.message == "user_id and message are required"
    typeless = {"user_id": 3, "message": "x", "type": None}
    err = error_of(client.call, "NotificationService", "send_notification", typeless)
    assert err.message == "`type` must be one of email, sms, not null"


def test_a_notification_is_an_email_unless_told_and_needs_a_user(client: Client) -> None:
    client.call("UserService", "create_user", {"username": "alice", "email": "a@x.org"})
    note = client.call("NotificationService", "send_notification", {"user_id": 1, "message": "hi"})
    assert note["notification"]["type"] == "email"
    err = error_of(
        client.call, "NotificationService", "send_notification", {"user_id": 99, "message": "hi"}
    )
    assert (err.code, err.message) == ("not_found", "User 99 not found")
    assert client.call("NotificationService", "list_notifications", {})["total"] == 1
    err = error_of(client.call, "UserService", "get_user", {"user_id": 99})
    assert (err.code, err.message) == ("not_found", "User 99 not found")


# --- failures -------------------------------------------------------------------------


def test_user_service_killed_under_load(shop: Stack, client: Client) -> None:
    """Orders fail fast while UserService is down, succeed after its restart, lose nothing."""
    client.call("UserService", "create_user", {"username": "alice", "email": "a@x.org"})
    acknowledged: list[int] = []
    failures: list[tuple[str, float]] = []

    def load(stop: threading.Event) -> None:
        with Client(shop.run_dir) as own:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    reply = own.call(
                        "OrderService", "create_order", {"user_id": 1, "product": "p"}, timeout=5
                    )
                    acknowledged.append(reply["order"]["id"])
                except ServiceError as exc:
                    failures.append((exc.code, time.monotonic() - started))

    shop.kill_under_load("UserService", load, acknowledged)
    assert failures, "the kill went unnoticed: no call failed"
    assert {code for code, _ in failures} == {"unavailable"}
    assert max(seconds for _, seconds in failures) < 1.0  # fast, not the 5 s timeout
    assert sorted(acknowledged) == sorted(o["id"] for o in all_orders(client))
    assert client.call("UserService", "get_user", {"user_id": 1})["user"]["username"] == "alice"


def test_acknowledged_data_survives_kill_and_ids_are_not_reused(
    shop: Stack, client: Client
) -> None:
    for name in ("u1", "u2", "u3"):
        client.call("UserService", "create_user", {"username": name, "email": f"{name}@x.org"})
    client.call("OrderService", "create_order", {"user_id": 3, "product": "p"})
    time.sleep(1.2)
    for name in ("UserService", "OrderService"):
        os.kill(shop.pid_of(name), signal.SIGKILL)
    shop.cli("down")
    shop.up()
    with Client(shop.run_dir) as fresh:
        users = fresh.call("UserService", "list_users", {})["users"]
        assert [u["username"] for u in users] == ["u1", "u2", "u3"]
        assert fresh.call("OrderService", "get_order", {"order_id": 1})["order"]["user_id"] == 3
        new = fresh.call("UserService", "create_user", {"username": "u4", "email": "u4@x.org"})
        assert new["user"]["id"] == 4


def test_stopped_service_is_unavailable_at_once(shop: Stack, client: Client) -> None:
    assert shop.cli("stop", "UserService").returncode == 0
    started = time.monotonic()
    err = error_of(client.call, "UserService", "list_users", {}, timeout=5)
    assert err.code == "unavailable" and time.monotonic() - started < 0.5
    err = error_of(
        client.call, "OrderService", "create_order", {"user_id": 1, "product": "p"}, timeout=5
    )
    assert err.code == "unavailable" and "cannot check the user" in err.message
    assert time.monotonic() - started < 1.0
    assert shop.cli("start", "UserService").returncode == 0
    assert client.call("UserService", "list_users", {})["total"] == 0  # same client, found again


def test_data_lives_in_sqlite_files_in_the_run_dir(shop: Stack, client: Client) -> None:
    client.call("UserService", "create_user", {"username": "alice", "email": "a@x.org"})
    data = shop.run_dir / "data"
    assert {p.name for p in data.glob("*.db")} == {"users.db", "orders.db", "notifications.db"}
    assert oct((shop.run_dir / "sock").stat().st_mode & 0o777) == "0o700"
    for sock in (shop.run_dir / "sock").iterdir():
        assert sock.stat().st_mode & 0o077 == 0, sock


# --- the CLI ----------------------------------------------------------------------------


def test_cli_call_and_services(shop: Stack) -> None:
    data = json.dumps({"username": "alice", "email": "a@x.org"})
    created = shop.cli("call", "UserService", "create_user", data, "--json")
    assert created.returncode == 0, created.stderr
    reply = json.loads(created.stdout)
    assert reply == {
        "status": "success",
        "request_id": reply["request_id"],
        "data": {"user": {**reply["data"]["user"], "id": 1}},
    }
    assert REQUEST_ID.fullmatch(reply["request_id"])  # the CLI's pid, then its first call
    pretty = shop.cli("call", "userservice", "get_user", '{"user_id": 1}')
    assert pretty.returncode == 0 and '"username": "alice"' in pretty.stdout

    conflict = shop.cli("call", "UserService", "create_user", data)
    assert conflict.returncode == 1
    assert conflict.stderr.strip() == (
        "procorch: UserService.create_user: conflict: User alice already exists"
    )
    as_json = shop.cli("call", "UserService", "create_user", data, "--json")
    refused = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and refused == {
        "status": "error",
        "request_id": refused["request_id"],
        "code": "conflict",
        "message": "User alice already exists",
    }
    assert REQUEST_ID.fullmatch(refused["request_id"])
    for bad, problem in (("{bad", "not JSON"), ("[1]", "must be a JSON object")):
        result = shop.cli("call", "UserService", "create_user", bad)
        assert result.returncode == 2 and problem in result.stderr
        assert "Traceback" not in result.stderr
    unknown = shop.cli("call", "Nope", "x")
    assert unknown.returncode == 1
    assert unknown.stderr == "procorch: Nope.x: not_found: Service Nope not found\n"

    listed = shop.cli("services", "--json")
    assert listed.returncode == 0
    registry = json.loads(listed.stdout)
    assert registry["count"] == 3
    users = registry["services"]["UserService"]
    assert users["kind"] == "python" and users["requests"] == 4 and users["errors"] == 2
    assert users["replicas"][0]["socket"] == str(shop.run_dir / "sock" / "UserService.0")
    table = shop.cli("services")
    assert table.returncode == 0 and "OrderService" in table.stdout
    no_action = shop.cli("call", "UserService", "foo")
    assert no_action.returncode == 1
    assert no_action.stderr == "procorch: UserService.foo: unknown_action: Unknown action: foo\n"


def test_cli_call_when_not_running(stack: Stack) -> None:
    stack.write(BUILT_IN)
    never = stack.cli("call", "UserService", "list_users")
    assert never.returncode == 1 and "never run" in never.stderr
    stack.up()
    stack.cli("down")
    after = stack.cli("call", "UserService", "list_users")
    assert after.returncode == 1
    assert after.stderr.strip() == "procorch: UserService.list_users: unavailable: " + (
        "UserService: no replica is running"
    )
    as_json = stack.cli("call", "UserService", "list_users", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {  # no request was sent: it has no id
        "status": "error",
        "request_id": None,
        "code": "unavailable",
        "message": "UserService: no replica is running",
    }


def cli_order(shop: Stack, field: str) -> Any:
    """`procorch call OrderService create_order` for user 1 (created here) and a Laptop,
    with `field` written into the JSON as it is."""
    user = json.dumps({"username": "alice", "email": "a@x.org"})
    assert shop.cli("call", "UserService", "create_user", user).returncode == 0
    data = '{"user_id": 1, "product": "Laptop", ' + field + "}"
    return shop.cli("call", "OrderService", "create_order", data)


def no_order_made(shop: Stack) -> bool:
    listed = shop.cli("call", "OrderService", "list_orders", "--json")
    return json.loads(listed.stdout)["data"]["total"] == 0


@pytest.mark.parametrize(
    ("quantity", "problem"),
    [
        ("1e400", "the data has a number too large for a double: 1e400"),
        ("-1E+999", "the data has a number too large for a double: -1E+999"),
        ("NaN", "the data is not JSON: NaN is not a JSON number"),
        ("Infinity", "the data is not JSON: Infinity is not a JSON number"),
        ("-Infinity", "the data is not JSON: -Infinity is not a JSON number"),
    ],
)
def test_cli_call_refuses_numbers_json_cannot_carry(
    shop: Stack, quantity: str, problem: str
) -> None:
    """Python's JSON parser takes these; sent on, they would arrive as null (quantity 1)."""
    result = cli_order(shop, f'"quantity": {quantity}')
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"procorch: {problem}\n")
    assert no_order_made(shop)


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ('"quantity": null', "`quantity` must be an integer, not null"),
        (
            '"quantity": 99999999999999999999999',
            "`quantity` is out of range: it must be at most 1000000",
        ),
        (
            '"user_id": 99999999999999999999999',
            "`user_id` is out of range: it must be at most 9223372036854775807",
        ),
    ],
)
def test_cli_call_null_and_huge_numbers_are_invalid(shop: Stack, field: str, problem: str) -> None:
    result = cli_order(shop, field)  # a second user_id wins: JSON's last one
    assert result.returncode == 1
    assert result.stderr == f"procorch: OrderService.create_order: invalid: {problem}\n"
    assert no_order_made(shop)


def test_the_greeter_example(stack: Stack) -> None:
    example = Path(__file__).parent.parent / "examples" / "greeter.toml"
    args = ("-c", str(example), "--run-dir", str(stack.run_dir))
    assert stack.cli("up", *args).returncode == 0
    try:
        user = json.dumps({"username": "ada", "email": "ada@example.com"})
        assert stack.cli("call", "UserService", "create_user", user, *args).returncode == 0
        greeted = stack.cli("call", "Greeter", "greet_user", '{"user_id": 1}', "--json", *args)
        assert json.loads(greeted.stdout)["data"] == {"greeting": "Hello, ada!"}
        missing = stack.cli("call", "Greeter", "greet_user", '{"user_id": 2}', *args)
        assert missing.returncode == 1 and "user 2 does not exist" in missing.stderr
    finally:
        stack.cli("down", *args)


def test_the_python_client_sends_any_integer_or_says_why_not(client: Client) -> None:
    """An integer past a double (read by the standard library where orjson refuses it) is
    out of range like any other; one past Python's 4,300 digits cannot be sent at all."""
    for huge in (10**30, 10**400, -(10**400)):
        err = error_of(client.call, "UserService", "get_user", {"user_id": huge})
        assert err.code == "invalid" and "user_id" in err.message, err.message
    err = error_of(client.call, "UserService", "get_user", {"user_id": 10**5000})
    assert (err.code, err.message) == (
        "invalid",
        "cannot send an integer this long: Exceeds the limit (4300 digits) for integer"
        " string conversion",
    )
    assert client.call("UserService", "list_users", {})["total"] == 0  # the client goes on
