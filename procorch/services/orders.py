"""OrderService: orders of a product by a user that UserService vouches for.

Creating an order asks UserService whether the user exists (a call with a short
timeout: if UserService is down the order fails fast as `unavailable`), stores the
order, then tells NotificationService without waiting for it. The notification goes with
the order's id as its idempotency key, so a retried order (whose retry tells again, in
case the first attempt died before telling) is notified once.
"""

from __future__ import annotations

import sys
from typing import Any

from procorch.services import fields
from procorch.services.base import Service, action
from procorch.services.database import Database
from procorch.services.protocol import NotFound, ServiceError
from procorch.services.users import existing_user
from procorch.supervisor.rundir import now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    product TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL
)
"""
NOTIFICATIONS = "NotificationService"
ORDER_CREATED = "Your order has been created"


class OrderService(Service):
    def setup(self) -> None:
        self.db = Database(self.context.run_dir, "orders", SCHEMA)

    def teardown(self) -> None:
        self.db.close()

    @action("create_order", idempotent=True)
    def create_order(self, data: dict[str, Any]) -> dict[str, Any]:
        fields.required(data, "user_id", "product")
        user_id = fields.identifier(data, "user_id")
        product = fields.text(data, "product", max_length=200)
        quantity = fields.integer(data, "quantity", minimum=1, maximum=1_000_000, default=1)
        existing_user(self.client, user_id)
        reply = self.commit(
            lambda db: {
                "order": db.execute(
                    "INSERT INTO orders (user_id, product, quantity, status, created_at) "
                    "VALUES (?, ?, ?, 'created', ?) RETURNING *",
                    (user_id, product, quantity, now_iso()),
                ).fetchone()
            }
        )
        self._notify(reply["order"])
        return reply

    def replayed(self, action: str, reply: Any) -> None:
        """An order's retry tells NotificationService again: the first attempt may have died
        between its commit and its notification, and the note's key (the order's id) keeps
        NotificationService from storing it twice."""
        if action == "create_order":
            self._notify(reply["order"])

    @action("get_order")
    def get_order(self, data: dict[str, Any]) -> dict[str, Any]:
        order_id = fields.identifier(data, "order_id")
        order = self.db.one("SELECT * FROM orders WHERE id = ?", (order_id,))
        if order is None:
            raise NotFound(f"Order {order_id} not found")
        return {"order": order}

    @action("list_orders")
    def list_orders(self, data: dict[str, Any]) -> dict[str, Any]:
        limit, offset = fields.page(data)
        where, params = fields.user_filter(data)
        orders = self.db.all(
            f"SELECT * FROM orders {where} ORDER BY id LIMIT ? OFFSET ?", (*params, limit, offset)
        )
        total = self.db.one(f"SELECT count(*) AS n FROM orders {where}", params)
        return {"orders": orders, "count": len(orders), "total": total["n"] if total else 0}

    def _notify(self, order: dict[str, Any]) -> None:
        """Tell NotificationService, without waiting: the order stands whatever happens."""
        note = {
            "user_id": order["user_id"],
            "message": ORDER_CREATED,
            "type": "email",
            "order_id": order["id"],
        }
        try:
            key = f"order-{order['id']}"  # one note per order, however often it is told
            self.client.notify(NOTIFICATIONS, "send_notification", note, idempotency_key=key)
        except ServiceError as exc:
            print(f"order {order['id']}: notification not sent: {exc}", file=sys.stderr)
