"""UserService: accounts with a unique username and an email address."""

from __future__ import annotations

import sqlite3
from typing import Any

from procorch.services import fields
from procorch.services.base import Service, action
from procorch.services.database import Database, Row
from procorch.services.protocol import Conflict, NotFound
from procorch.supervisor.rundir import now_iso

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
        self.db = Database(self.context.run_dir, "users", SCHEMA)

    def teardown(self) -> None:
        self.db.close()

    @action("create_user")
    def create_user(self, data: dict[str, Any]) -> dict[str, Any]:
        username = fields.text(data, "username", max_length=64)
        email = fields.email(data, "email")
        try:
            with self.db.transaction() as db:
                user = db.execute(
                    "INSERT INTO users (username, email, created_at) VALUES (?, ?, ?) RETURNING *",
                    (username, email, now_iso()),
                ).fetchone()
        except sqlite3.IntegrityError:
            raise Conflict(f"username {username!r} is taken") from None
        return {"user": user}

    @action("get_user")
    def get_user(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"user": self._user(fields.identifier(data, "user_id"))}

    @action("list_users")
    def list_users(self, data: dict[str, Any]) -> dict[str, Any]:
        limit, offset = fields.page(data)
        users = self.db.all("SELECT * FROM users ORDER BY id LIMIT ? OFFSET ?", (limit, offset))
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
            raise NotFound(f"user {user_id} does not exist")
        return user
