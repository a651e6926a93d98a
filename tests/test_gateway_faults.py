"""The gateway under faults and abuse: a hung service, slow clients, no token, huge integers.

Real stacks, real signals (SIGSTOP), real sockets: a hung UserService may hold only its
share of the gateway's threads while the rest keep their latency; clients that trickle
their request are dropped at the deadline while new clients are served; the token made
with one key or flag, never shown; and integers past Python's 4,300-digit conversion
limit refused with 400 in every integer slot the OpenAPI document has.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PY, GatewayStack

BIG = "1" * 5000  # past int()'s 4,300-digit limit

# --- integers past int()'s 4,300-digit limit --------------------------------------------


def integer_slots(doc: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(method, where, URL, JSON body) with BIG in one integer slot (where: path, query
    or body) of each operation of the OpenAPI document, the other slots valid."""

    def is_int(schema: dict[str, Any]) -> bool:
        kind = schema.get("type")
        return kind == "integer" or (isinstance(kind, list) and "integer" in kind)

    cases = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            params = op.get("parameters", [])
            for param in filter(lambda p: is_int(p["schema"]), params):
                url = path
                for other in params:
                    if other["in"] == "path":
                        value = BIG if other is param else "1"
                        url = url.replace("{" + other["name"] + "}", value)
                if param["in"] == "query":
                    url += f"?{param['name']}={BIG}"
                cases.append((method.upper(), param["in"], url, None))
            if "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
                for name, prop in schema["properties"].items():
                    if is_int(prop):
                        cases.append((method.upper(), "body", path, {name: BIG}))
    return cases


def test_integers_past_the_conversion_limit_are_400_in_every_slot(
    gateway: GatewayStack,
) -> None:
    """Before, 8 operations answered 500 (GET /users, /orders, /notifications, /jobs,
    /info; POST, GET and DELETE /job/ID), and GET /users/BIG a 404 "no such endpoint"
    echoing the 5,000 digits."""
    doc = gateway.get("/openapi.json").json()
    cases = integer_slots(doc)
    assert len(cases) >= 20
    failures = []
    for method, _, url, body in cases:
        for sign in ("", "-"):
            data = None if body is None else json.dumps(body).replace(f'"{BIG}"', sign + BIG)
            target = url.replace(BIG, sign + BIG)
            response = gateway.request(
                method, target, data=data, headers={"Content-Type": "application/json"}
            )
            # a negative job id names no job (404), as /job/-1 does; elsewhere it is a 400
            expected = {400: "invalid", 404: "not_found"} if sign else {400: "invalid"}
            json_answer = response.headers["Content-Type"] == "application/json"
            answer = response.json() if json_answer else {}
            if (
                response.status_code not in expected
                or answer.get("code") != expected[response.status_code]
                or set(answer) != {"status", "message", "code"}
                or len(answer["message"]) > 200  # one line, not the number echoed back
            ):
                failures.append((method, target[:40], body and list(body), response.text[:120]))
    assert not failures, failures
    # leading zeros do not count towards the limit (int() counts them)
    zeros = "0" * 5000
    assert gateway.post("/users", json={"username": "ann", "email": "ann@x.org"}).ok
    assert gateway.get(f"/users?limit={zeros}1").json()["count"] == 1
    assert gateway.get(f"/users/{zeros}1").json()["user"]["username"] == "ann"


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        (
            BIG,
            "the data has an integer too large for a double: 11111111111111111111… (5000 digits)",
        ),
        (
            "-" + BIG,
            "the data has an integer too large for a double: -1111111111111111111… (5000 digits)",
        ),
        (
            "1" * 400,
            "the data has an integer too large for a double: 11111111111111111111… (400 digits)",
        ),
        (
            "1" * 400 + ".0",
            "the data has a number too large for a double: 11111111111111111111… (402 characters)",
        ),
    ],
)
def test_cli_call_refuses_an_integer_json_cannot_carry_in_one_line(
    tmp_path: Path, number: str, problem: str
) -> None:
    """Refused before any service is asked (none runs here): the services read JSON with
    orjson, which cannot take an integer a double cannot hold."""
    result = subprocess.run(
        [PY, "-m", "procorch", "call", "OrderService", "create_order", f'{{"quantity": {number}}}'],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("PROCORCH_")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"procorch: {problem}\n")
