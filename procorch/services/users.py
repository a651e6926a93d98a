"""UserService: accounts with a unique username and an email address.

`existing_user` is how the other built-in services ask it whether a user exists.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from procorch.services import fields
from procorch.services.base import Service, action
from procorch.services.bodies import NEW_USER, PAGE
from procorch.services.database import Row
from procorch.services.protocol import Conflict, NotFound, ServiceError
from procorch.supervisor.rundir import now_iso

if TYPE_CHECKING:
    from procorch.services.client import Client

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    email TEXT NOT NULL,
    created_at TEXT NOT NULL
)
"""


class UserService(Service):
    def setup(self) -> None:
        self.db = self.open_database("users", SCHEMA)

    def teardown(self) -> None:
        self.db.close()

    @action("create_user", idempotent=True)
    def create_user(self, data: dict[str, Any]) -> dict[str, Any]:
        new = NEW_USER.check(data)

        def insert(db: sqlite3.Connection) -> dict[str, Any]:
            user = db.execute(
                "INSERT INTO users (username, email, created_at)"
                " VALUES (:username, :email, :created_at) RETURNING *",
                {**new, "created_at": now_iso()},
            ).fetchone()
            return {"user": user}

        try:
            return self.commit(insert)
        except sqlite3.IntegrityError:
            raise Conflict(f"User {new['username']} already exists") from None

    @action("get_user")
    def get_user(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"user": self._user(fields.identifier(data, "user_id"))}

    @action("list_users")
    def list_users(self, data: dict[str, Any]) -> dict[str, Any]:
        page = PAGE.check(data)
        users = self.db.all(
            "SELECT * FROM users ORDER BY id LIMIT ? OFFSET ?", (page["limit"], page["offset"])
        )
        total = self.db.one("SELECT count(*) AS n FROM users")
        return {"users": users, "count": len(users), "total": total["n"] if total else 0}

    @action("validate_user")
    def validate_user(self, data: dict[str, Any]) -> dict[str, Any]:
        """Whether the user exists (for other services): never an error for a missing one."""
        user_id = fields.identifier(data, "user_id")
        user = self.db.one("SELECT * FROM users WHERE id = ?", (user_id,))
        return {"valid": user is not None, "user": user}

    def _user(self, user_id: int) -> Row:
        user = self.db.one("SELECT * FROM users WHERE id = ?", (user_id,))
        if user is None:
            raise not_found(user_id)
        return user


USERS = "UserService"
USER_CHECK_TIMEOUT = 2.0  # seconds; a user lookup is a single indexed read


def not_found(user_id: int) -> NotFound:
    return NotFound(f"User {user_id} not found")  # the original's words


def existing_user(client: Client, user_id: int) -> Row:
    """The user, asked of UserService by another service: NotFound if there is none.

    A short timeout, so that a caller fails fast (`unavailable` at once if UserService is
    down, `timeout` if it hangs), with a message saying it was the user check."""
    try:
        check = client.call(
            USERS, "validate_user", {"user_id": user_id}, timeout=USER_CHECK_TIMEOUT
        )
    except ServiceError as exc:
        raise ServiceError(exc.code, f"cannot check the user: {exc.message}") from None
    if not check.get("valid"):
        raise not_found(user_id)
    return check["user"]
