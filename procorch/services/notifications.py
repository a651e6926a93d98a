"""NotificationService: notifications to users, queued at once and delivered behind.

`send_notification` checks with UserService that the user exists (as an order does),
stores the notification as `queued` and returns; a delivery thread
sends it (here: writes it to the service's log, after `NOTIFY_DELAY` seconds, 0 by
default) and marks it `sent`. A notification queued when a replica died is delivered
by the next one to look: each delivery thread also checks for leftovers every second,
and puts back in the queue what a dead replica had claimed but not sent.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import psutil

from procorch.services.base import Service, action
from procorch.services.bodies import BY_USER, SEND_NOTIFICATION, user_filter
from procorch.services.database import Row
from procorch.services.users import existing_user
from procorch.supervisor.rundir import now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    message TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    order_id INTEGER,
    claimed_by INTEGER,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX IF NOT EXISTS notifications_status ON notifications (status, id)
"""
# What callers see of a notification (`claimed_by` is the delivery's own bookkeeping).
COLUMNS = "id, user_id, message, type, status, order_id, created_at, sent_at"
LEFTOVER_CHECK = 1.0  # seconds between looks for notifications another replica left queued


class NotificationService(Service):
    def setup(self) -> None:
        self.db = self.open_database("notifications", SCHEMA)
        self.delay = float(os.environ.get("NOTIFY_DELAY", "0"))
        self._queued = threading.Event()
        self._queued.set()  # deliver what an earlier process left queued
        self._delivery = threading.Thread(target=self._deliver_loop, name="delivery")
        self._delivery.start()

    def teardown(self) -> None:
        self._queued.set()
        self._delivery.join()
        self.db.close()

    @action("send_notification", idempotent=True)
    def send_notification(self, data: dict[str, Any]) -> dict[str, Any]:
        new = SEND_NOTIFICATION.check(data)
        if new["order_id"] is None:  # an order's own note: the order checked its user already
            existing_user(self.client, new["user_id"])  # as for an order: no notes to nobody
        reply = self.commit(
            lambda db: {
                "notification": db.execute(
                    "INSERT INTO notifications"
                    " (user_id, message, type, status, order_id, created_at)"
                    " VALUES (:user_id, :message, :type, 'queued', :order_id, :created_at)"
                    f" RETURNING {COLUMNS}",
                    {**new, "created_at": now_iso()},
                ).fetchone()
            }
        )
        self._queued.set()
        return reply

    @action("list_notifications")
    def list_notifications(self, data: dict[str, Any]) -> dict[str, Any]:
        query = BY_USER.check(data)
        where, params = user_filter(query["user_id"])
        notes = self.db.all(
            f"SELECT {COLUMNS} FROM notifications {where} ORDER BY id LIMIT ? OFFSET ?",
            (*params, query["limit"], query["offset"]),
        )
        total = self.db.one(f"SELECT count(*) AS n FROM notifications {where}", params)
        return {"notifications": notes, "count": len(notes), "total": total["n"] if total else 0}

    @action("get_stats")
    def get_stats(self, data: dict[str, Any]) -> dict[str, Any]:
        counts = {
            row["status"]: row["n"]
            for row in self.db.all(
                "SELECT status, count(*) AS n FROM notifications GROUP BY status"
            )
        }
        return {"notifications_sent": counts.get("sent", 0), "queued": counts.get("queued", 0)}

    # -- delivery ------------------------------------------------------------------------

    def _deliver_loop(self) -> None:
        while not self.stopping:
            self._queued.wait(LEFTOVER_CHECK)
            self._queued.clear()
            self._requeue_orphans()
            while not self.stopping and (note := self._claim()) is not None:
                self._deliver(note)

    def _claim(self) -> Row | None:
        """Take the oldest queued notification; a replica's claim excludes the others'."""
        with self.db.transaction() as db:
            return db.execute(
                "UPDATE notifications SET status = 'sending', claimed_by = ? WHERE id = "
                "(SELECT id FROM notifications WHERE status = 'queued' ORDER BY id LIMIT 1) "
                "RETURNING *",
                (os.getpid(),),
            ).fetchone()

    def _requeue_orphans(self) -> None:
        """Queue again what replicas that are gone had claimed (they died mid-delivery)."""
        claimants = self.db.all(
            "SELECT DISTINCT claimed_by FROM notifications WHERE status = 'sending'"
        )
        for row in claimants:
            if row["claimed_by"] != os.getpid() and not psutil.pid_exists(row["claimed_by"]):
                with self.db.transaction() as db:
                    db.execute(
                        "UPDATE notifications SET status = 'queued', claimed_by = NULL "
                        "WHERE status = 'sending' AND claimed_by = ?",
                        (row["claimed_by"],),
                    )

    def _deliver(self, note: Row) -> None:
        if self.delay:
            self._stopping.wait(self.delay)
        print(f"{note['type']} to user {note['user_id']}: {note['message']}", flush=True)
        with self.db.transaction() as db:
            db.execute(
                "UPDATE notifications SET status = 'sent', sent_at = ? WHERE id = ?",
                (now_iso(), note["id"]),
            )
