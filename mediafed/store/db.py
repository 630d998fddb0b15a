"""The embedded database: SQLite (stdlib ``sqlite3``) run on one worker thread.

Holds what must survive a restart (ARCHITECTURE.md, "Processes and scale"):
room mappings Rocket.Chat room <-> Matrix room <-> mediafed room, calls, and
the webhook deliveries with their ids (receivers use them against replay).
The schema is versioned: a ``version`` table and an ordered list of upgrade
steps, each applied once in a transaction, like ``mautrix.util.async_db``'s
upgrade table. SQL follows https://sqlite.org/lang.html; the partial unique
index keeps at most one active call per mediafed room.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mediafed.errors import MediafedError

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreError(MediafedError):
    """The database refused an operation (conflict, missing row, bad file)."""


_UPGRADES: Sequence[str] = (
    # v1: bridges, calls, webhook deliveries.
    """
    CREATE TABLE bridge (
        mediafed_room   TEXT PRIMARY KEY,
        rocketchat_room TEXT UNIQUE,
        matrix_room     TEXT UNIQUE,
        created_at      REAL NOT NULL
    );
    CREATE TABLE call (
        call_id          TEXT PRIMARY KEY,
        room             TEXT NOT NULL,
        external_room    TEXT NOT NULL,
        external_call_id TEXT NOT NULL DEFAULT '',
        title            TEXT NOT NULL DEFAULT '',
        webhook_url      TEXT NOT NULL DEFAULT '',
        api_key          TEXT NOT NULL,
        invite_code      TEXT NOT NULL,
        status           TEXT NOT NULL CHECK (status IN ('active', 'ended')),
        created_at       REAL NOT NULL,
        ended_at         REAL
    );
    CREATE UNIQUE INDEX call_one_active_per_room ON call (room) WHERE status = 'active';
    CREATE TABLE webhook_delivery (
        id         TEXT PRIMARY KEY,
        call_id    TEXT NOT NULL,
        event      TEXT NOT NULL,
        url        TEXT NOT NULL,
        status     TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
        attempts   INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX webhook_delivery_call ON webhook_delivery (call_id);
    """,
)


@dataclass(frozen=True, slots=True)
class Bridge:
    mediafed_room: str
    rocketchat_room: str | None
    matrix_room: str | None
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "room": self.mediafed_room,
            "rocketchat_room": self.rocketchat_room,
            "matrix_room": self.matrix_room,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_id: str
    room: str
    external_room: str
    external_call_id: str
    title: str
    webhook_url: str
    api_key: str
    invite_code: str
    status: str
    created_at: float
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    id: str
    call_id: str
    event: str
    url: str
    status: str
    attempts: int
    last_error: str
    created_at: float
    updated_at: float


_CALL_COLUMNS = (
    "call_id, room, external_room, external_call_id, title, webhook_url, api_key, "
    "invite_code, status, created_at, ended_at"
)


class Store:
    """Async facade over one SQLite connection used from a single thread.

    ``path`` may be ``":memory:"`` for tests. Call :meth:`open` before use and
    :meth:`close` at shutdown.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mediafed-store")
        self._conn: sqlite3.Connection | None = None

    # -- plumbing -------------------------------------------------------------

    async def _run(self, func: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError("the store is not open; call Store.open() first")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, func, conn)

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

        def connect() -> sqlite3.Connection:
            try:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            except sqlite3.Error as exc:
                raise StoreError(
                    f"cannot open database {self.path}: {exc}; check server.data_dir"
                ) from None
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            return conn

        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, connect)
        version = await self._run(self._upgrade)
        log.info("- store %s at schema version %d", self.path, version)

    @staticmethod
    def _upgrade(conn: sqlite3.Connection) -> int:
        conn.execute("CREATE TABLE IF NOT EXISTS version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM version").fetchone()
        current = int(row["version"]) if row else 0
        if current > len(_UPGRADES):
            raise StoreError(
                f"database schema version {current} is newer than this mediafed knows "
                f"({len(_UPGRADES)}); upgrade mediafed"
            )
        for index in range(current, len(_UPGRADES)):
            conn.execute("BEGIN")
            try:
                for statement in _UPGRADES[index].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("DELETE FROM version")
                conn.execute("INSERT INTO version (version) VALUES (?)", (index + 1,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(_UPGRADES)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=False)

    async def schema_version(self) -> int:
        def query(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT version FROM version").fetchone()
            return int(row["version"]) if row else 0

        return await self._run(query)

    # -- bridges --------------------------------------------------------------

    async def put_bridge(
        self,
        mediafed_room: str,
        *,
        rocketchat_room: str | None,
        matrix_room: str | None,
        now: float | None = None,
    ) -> Bridge:
        """Create or replace the mapping of ``mediafed_room``.

        A Rocket.Chat or Matrix room already mapped to another mediafed room is
        a conflict (StoreError): unlink it first.
        """
        created = time.time() if now is None else now

        def write(conn: sqlite3.Connection) -> Bridge:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for column, value in (
                    ("rocketchat_room", rocketchat_room),
                    ("matrix_room", matrix_room),
                ):
                    if value is None:
                        continue
                    row = conn.execute(
                        f"SELECT mediafed_room FROM bridge WHERE {column} = ?", (value,)
                    ).fetchone()
                    if row and row["mediafed_room"] != mediafed_room:
                        raise StoreError(
                            f"{value} is already linked to room {row['mediafed_room']!r}; "
                            "unlink it first"
                        )
                old = conn.execute(
                    "SELECT created_at FROM bridge WHERE mediafed_room = ?", (mediafed_room,)
                ).fetchone()
                stamp = float(old["created_at"]) if old else created
                conn.execute(
                    "INSERT OR REPLACE INTO bridge "
                    "(mediafed_room, rocketchat_room, matrix_room, created_at) VALUES (?,?,?,?)",
                    (mediafed_room, rocketchat_room, matrix_room, stamp),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return Bridge(mediafed_room, rocketchat_room, matrix_room, stamp)

        return await self._run(write)

    async def delete_bridge(self, mediafed_room: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM bridge WHERE mediafed_room = ?", (mediafed_room,))
            return cur.rowcount > 0

        return await self._run(write)

    async def list_bridges(self) -> list[Bridge]:
        def query(conn: sqlite3.Connection) -> list[Bridge]:
            rows = conn.execute(
                "SELECT mediafed_room, rocketchat_room, matrix_room, created_at FROM bridge "
                "ORDER BY mediafed_room"
            ).fetchall()
            return [Bridge(*tuple(row)) for row in rows]

        return await self._run(query)

    async def find_bridge(
        self,
        *,
        mediafed_room: str | None = None,
        rocketchat_room: str | None = None,
        matrix_room: str | None = None,
    ) -> Bridge | None:
        given = [
            (column, value)
            for column, value in (
                ("mediafed_room", mediafed_room),
                ("rocketchat_room", rocketchat_room),
                ("matrix_room", matrix_room),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError("find_bridge takes exactly one of its keyword arguments")
        column, value = given[0]

        def query(conn: sqlite3.Connection) -> Bridge | None:
            row = conn.execute(
                "SELECT mediafed_room, rocketchat_room, matrix_room, created_at FROM bridge "
                f"WHERE {column} = ?",
                (value,),
            ).fetchone()
            return Bridge(*tuple(row)) if row else None

        return await self._run(query)

    # -- calls ----------------------------------------------------------------

    async def insert_call(self, call: CallRecord) -> CallRecord:
        """Insert an active call; if the room already has one, return that one."""

        def write(conn: sqlite3.Connection) -> CallRecord:
            try:
                conn.execute(
                    f"INSERT INTO call ({_CALL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        call.call_id,
                        call.room,
                        call.external_room,
                        call.external_call_id,
                        call.title,
                        call.webhook_url,
                        call.api_key,
                        call.invite_code,
                        call.status,
                        call.created_at,
                        call.ended_at,
                    ),
                )
            except sqlite3.IntegrityError:
                row = conn.execute(
                    f"SELECT {_CALL_COLUMNS} FROM call WHERE room = ? AND status = 'active'",
                    (call.room,),
                ).fetchone()
                if row is None:
                    raise StoreError(f"call id {call.call_id} already exists") from None
                return CallRecord(*tuple(row))
            return call

        return await self._run(write)

    async def get_call(self, call_id: str) -> CallRecord | None:
        def query(conn: sqlite3.Connection) -> CallRecord | None:
            row = conn.execute(
                f"SELECT {_CALL_COLUMNS} FROM call WHERE call_id = ?", (call_id,)
            ).fetchone()
            return CallRecord(*tuple(row)) if row else None

        return await self._run(query)

    async def active_call(self, room: str) -> CallRecord | None:
        def query(conn: sqlite3.Connection) -> CallRecord | None:
            row = conn.execute(
                f"SELECT {_CALL_COLUMNS} FROM call WHERE room = ? AND status = 'active'", (room,)
            ).fetchone()
            return CallRecord(*tuple(row)) if row else None

        return await self._run(query)

    async def list_calls(self, *, status: str | None = None, limit: int = 100) -> list[CallRecord]:
        def query(conn: sqlite3.Connection) -> list[CallRecord]:
            if status is None:
                rows = conn.execute(
                    f"SELECT {_CALL_COLUMNS} FROM call ORDER BY created_at DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_CALL_COLUMNS} FROM call WHERE status = ? "
                    "ORDER BY created_at DESC LIMIT ?",
                    (status, limit),
                ).fetchall()
            return [CallRecord(*tuple(row)) for row in rows]

        return await self._run(query)

    async def update_call_target(
        self, call_id: str, *, external_call_id: str, webhook_url: str, title: str
    ) -> None:
        """Point an active call at the latest external call (a new Rocket.Chat call)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE call SET external_call_id = ?, webhook_url = ?, title = ? "
                "WHERE call_id = ?",
                (external_call_id, webhook_url, title, call_id),
            )

        await self._run(write)

    async def end_call(self, call_id: str, *, now: float | None = None) -> bool:
        """Mark a call ended; False if it was not active."""
        ended = time.time() if now is None else now

        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE call SET status = 'ended', ended_at = ? "
                "WHERE call_id = ? AND status = 'active'",
                (ended, call_id),
            )
            return cur.rowcount > 0

        return await self._run(write)

    # -- webhook deliveries ---------------------------------------------------

    async def record_delivery(
        self, delivery_id: str, *, call_id: str, event: str, url: str, now: float | None = None
    ) -> None:
        stamp = time.time() if now is None else now

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO webhook_delivery "
                "(id, call_id, event, url, status, attempts, last_error, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'pending', 0, '', ?, ?)",
                (delivery_id, call_id, event, url, stamp, stamp),
            )

        await self._run(write)

    async def update_delivery(
        self,
        delivery_id: str,
        *,
        status: str,
        attempts: int,
        last_error: str = "",
        now: float | None = None,
    ) -> None:
        stamp = time.time() if now is None else now

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE webhook_delivery SET status = ?, attempts = ?, last_error = ?, "
                "updated_at = ? WHERE id = ?",
                (status, attempts, last_error, stamp, delivery_id),
            )

        await self._run(write)

    async def deliveries(self, call_id: str | None = None) -> list[WebhookDelivery]:
        def query(conn: sqlite3.Connection) -> list[WebhookDelivery]:
            sql = (
                "SELECT id, call_id, event, url, status, attempts, last_error, created_at, "
                "updated_at FROM webhook_delivery"
            )
            if call_id is None:
                rows = conn.execute(sql + " ORDER BY created_at").fetchall()
            else:
                rows = conn.execute(
                    sql + " WHERE call_id = ? ORDER BY created_at", (call_id,)
                ).fetchall()
            return [WebhookDelivery(*tuple(row)) for row in rows]

        return await self._run(query)
