"""The Matrix appservice endpoint: homeserver transactions in, events routed.

Matrix spec, application service API: ``PUT
/_matrix/app/v1/transactions/{txnId}`` (retried with the same id until it
succeeds, so handled at most once), ``GET /_matrix/app/v1/users/{userId}``,
``GET /_matrix/app/v1/rooms/{roomAlias}``, ``POST /_matrix/app/v1/ping``; the
homeserver authenticates with ``Authorization: Bearer <hs_token>`` ("403
M_FORBIDDEN" for a wrong token, "401 M_UNAUTHORIZED" for none).

Built on mautrix's ``AppServiceServerMixin`` attached to mediafed's own aiohttp
application (one public HTTP port), with three changes to it: the token check
is constant-time (``hmac.compare_digest``), seen transaction ids live in a
small bounded SQLite table under the data directory instead of a set that
grows forever, and events are routed from their raw JSON: call membership
state to :class:`~mediafed.matrix.membership.CallMembership`, ``m.call.*``
events, parsed by :mod:`mediafed.matrix.voip`, to a :class:`CallEventSink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import aiohttp
from aiohttp import web
from mautrix.appservice import AppServiceAPI, IntentAPI
from mautrix.appservice.as_handler import AppServiceServerMixin
from mautrix.appservice.state_store import ASStateStore
from mautrix.client.state_store import MemoryStateStore
from mautrix.types import JSON, RoomID, UserID
from mautrix.util.logging import TraceLogger

from mediafed.matrix.membership import MEMBERSHIP_EVENT_TYPES, CallMembership
from mediafed.matrix.openid import server_part
from mediafed.matrix.registration import Registration
from mediafed.matrix.voip import CALL_EVENT_TYPES, CallEvent, CallEventError, parse_call_event

log = logging.getLogger(__name__)

TRANSACTION_KEEP = 4096
"""Seen transaction ids kept; homeservers retry only their latest few."""
PRUNE_EVERY = 256


class CallEventSink(Protocol):
    """Receives every valid ``m.call.*`` event from a room the appservice sees."""

    async def on_call_event(
        self, room_id: str, sender: str, call_event: CallEvent, raw: Mapping[str, Any]
    ) -> None: ...


class LoggingCallSink:
    """Placeholder sink until the media core answers calls: logs each event."""

    async def on_call_event(
        self, room_id: str, sender: str, call_event: CallEvent, raw: Mapping[str, Any]
    ) -> None:
        log.info(
            "< %s room=%s sender=%s call=%s party=%s",
            raw.get("type"),
            room_id,
            sender,
            call_event.call_id,
            call_event.party_id,
        )


class TransactionLog:
    """Ids of handled homeserver transactions, persisted and bounded.

    SQLite calls are synchronous: each is one indexed row on a local file,
    well under a millisecond, once per transaction.
    """

    def __init__(self, path: Path | str, *, keep: int = TRANSACTION_KEEP) -> None:
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS appservice_transaction ("
            " txn_id TEXT PRIMARY KEY, handled_at_ms INTEGER NOT NULL)"
        )
        self._keep = keep
        self._since_prune = 0

    def seen(self, txn_id: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM appservice_transaction WHERE txn_id = ?", (txn_id,)
        ).fetchone()
        return row is not None

    def record(self, txn_id: str, now_ms: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO appservice_transaction (txn_id, handled_at_ms) VALUES (?, ?)",
            (txn_id, now_ms),
        )
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self.prune()

    def prune(self) -> None:
        self._since_prune = 0
        self._db.execute(
            "DELETE FROM appservice_transaction WHERE rowid NOT IN ("
            " SELECT rowid FROM appservice_transaction ORDER BY rowid DESC LIMIT ?)",
            (self._keep,),
        )

    def recent(self, limit: int = 10) -> list[str]:
        """The ids of the last handled transactions, newest first."""
        rows = self._db.execute(
            "SELECT txn_id FROM appservice_transaction ORDER BY rowid DESC LIMIT ?", (limit,)
        ).fetchall()
        return [str(row[0]) for row in rows]

    def __len__(self) -> int:
        count: int = self._db.execute("SELECT COUNT(*) FROM appservice_transaction").fetchone()[0]
        return count

    def close(self) -> None:
        self._db.close()


class _StateStore(ASStateStore, MemoryStateStore):
    def __init__(self) -> None:
        MemoryStateStore.__init__(self)
        ASStateStore.__init__(self)


def _utf8(value: Any) -> bool:
    """Every string in ``value`` (a parsed JSON value) is valid Unicode."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _matrix_error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


class MatrixAppService(AppServiceServerMixin):
    """mautrix's appservice server half, mounted on mediafed's aiohttp app."""

    def __init__(
        self,
        registration: Registration,
        *,
        homeserver_url: str,
        membership: CallMembership,
        call_sink: CallEventSink,
        transactions: TransactionLog,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        super().__init__(ephemeral_events=registration.receive_ephemeral, log=log)
        self.registration = registration
        self.hs_token = registration.hs_token
        self.homeserver_url = homeserver_url
        self.membership = membership
        self.call_sink = call_sink
        self.txn_log = transactions
        self.synchronous_handlers = True
        self._clock_ms = clock_ms
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._intent: IntentAPI | None = None
        self._listeners: list[Callable[[Mapping[str, Any]], None]] = []

    def add_event_listener(self, listener: Callable[[Mapping[str, Any]], None]) -> None:
        """Call ``listener`` with every room event once it has been routed (for
        other front-ends, e.g. a notice in a bridged room when a call starts)."""
        self._listeners.append(listener)

    # -- authentication: constant time, spec status codes --

    def _token_of(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header[len("Bearer ") :]
        # Homeservers before spec v1.4 send it as a query parameter.
        return request.rel_url.query.get("access_token")

    def _check_token(self, request: web.Request) -> bool:
        token = self._token_of(request)
        return token is not None and hmac.compare_digest(
            token.encode("utf-8"), self.hs_token.encode("utf-8")
        )

    def _authorized(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def checked(request: web.Request) -> web.StreamResponse:
            if self._token_of(request) is None:
                return _matrix_error(
                    401, "M_UNAUTHORIZED", "no hs_token; send Authorization: Bearer <hs_token>"
                )
            if not self._check_token(request):
                log.warning("x appservice request with a wrong hs_token from %s", request.remote)
                return _matrix_error(
                    403,
                    "M_FORBIDDEN",
                    "wrong hs_token; use the one in this appservice's registration file",
                )
            return await handler(request)

        return checked

    def mount(self, app: web.Application) -> None:
        """Add the spec's ``/_matrix/app/v1`` routes (not mautrix's legacy root paths,
        which would clash with other front-ends on the shared port)."""
        prefix = "/_matrix/app/v1"
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("PUT", "/transactions/{transaction_id}", self._http_handle_transaction),
            ("GET", "/rooms/{alias}", self._http_query_alias),
            ("GET", "/users/{user_id}", self._http_query_user),
            ("POST", "/ping", self._http_ping),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, prefix + path, self._authorized(handler))

    # -- transactions: persisted, bounded dedup --

    async def _read_transaction_header(self, request: web.Request) -> tuple[str, dict[str, Any]]:
        transaction_id = request.match_info["transaction_id"]
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(
                content_type="application/json",
                text='{"errcode": "M_NOT_JSON", "error": "the transaction body is not JSON"}',
            ) from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(
                content_type="application/json",
                text='{"errcode": "M_BAD_JSON", "error": "the transaction must be an object"}',
            )
        return transaction_id, body

    def _already_handled(self, transaction_id: str) -> bool:
        return transaction_id in self._in_flight or self.txn_log.seen(transaction_id)

    async def _http_handle_transaction(self, request: web.Request) -> web.Response:
        if self._already_handled(request.match_info["transaction_id"]):
            log.info(
                "- transaction %s already handled; acknowledging again",
                request.match_info["transaction_id"],
            )
            return web.json_response({})
        transaction_id, data = await self._read_transaction_header(request)
        if self._already_handled(transaction_id):  # arrived while the body was read
            return web.json_response({})
        events = data.get("events")
        if not isinstance(events, list):
            return _matrix_error(400, "M_BAD_JSON", "the transaction has no `events` list")
        ephemeral = None
        if self.ephemeral_events:
            ephemeral = self._get_with_fallback(data, "ephemeral", "de.sorunome.msc2409")
        to_device = self._get_with_fallback(data, "to_device", "de.sorunome.msc2409")
        self._in_flight.add(transaction_id)
        try:
            await self.handle_transaction(
                transaction_id,
                events=events,
                extra_data=data,
                ephemeral=ephemeral if isinstance(ephemeral, list) else None,
                to_device=to_device if isinstance(to_device, list) else None,
            )
            # Recorded only once handled: a crash before this lets the homeserver retry.
            self.txn_log.record(transaction_id, self._clock_ms())
        finally:
            self._in_flight.discard(transaction_id)
        return web.json_response({})

    async def handle_transaction(
        self,
        txn_id: str,
        *,
        events: list[Any],
        extra_data: Any,
        ephemeral: list[Any] | None = None,
        to_device: list[Any] | None = None,
        otk_counts: Any = None,
        device_lists: Any = None,
    ) -> JSON:
        log.debug(
            "< transaction %s: %d events, %d ephemeral, %d to-device",
            txn_id,
            len(events),
            len(ephemeral or ()),
            len(to_device or ()),
        )
        for raw in events:
            if not isinstance(raw, dict):
                log.info("x transaction %s: dropped an event that is not an object", txn_id)
                continue
            if not _utf8(raw):
                # JSON may escape a lone surrogate ("\ud800"): no Matrix id or text
                # holds one, and nothing downstream could encode it
                log.info("x transaction %s: dropped an event with invalid Unicode", txn_id)
                continue
            try:
                await self.route_event(raw)
            except Exception:
                # One event must never stop the others or fail the transaction.
                log.exception("x transaction %s: event %s failed", txn_id, raw.get("event_id"))
            for listener in self._listeners:
                try:
                    listener(raw)
                except Exception:
                    log.exception("x event listener failed on %s", raw.get("event_id"))
        return JSON({})

    async def route_event(self, raw: Mapping[str, Any]) -> None:
        event_type = raw.get("type")
        room_id = raw.get("room_id")
        sender = raw.get("sender")
        if not isinstance(event_type, str) or not isinstance(room_id, str):
            return
        if event_type in MEMBERSHIP_EVENT_TYPES:
            self.membership.apply(raw)
        elif event_type in CALL_EVENT_TYPES:
            if "state_key" in raw:
                return  # m.call.* are message events; a state event of that type is noise
            try:
                call_event = parse_call_event(event_type, raw.get("content"))
            except CallEventError as exc:
                log.warning(
                    "x dropped %s room=%s sender=%s event=%s: %s",
                    event_type,
                    room_id,
                    sender,
                    raw.get("event_id"),
                    exc,
                )
                return
            await self.call_sink.on_call_event(room_id, str(sender), call_event, raw)
        elif event_type == "m.room.member":
            self._on_room_member(raw, room_id)

    def _on_room_member(self, raw: Mapping[str, Any], room_id: str) -> None:
        content = raw.get("content")
        target = raw.get("state_key")
        if not isinstance(content, dict) or content.get("membership") != "invite":
            return
        if target == self.registration.bot_user_id:
            inviter = raw.get("sender")
            log.info("< bot invited room=%s by=%s; joining", room_id, inviter)
            via = server_part(inviter) if isinstance(inviter, str) else ""
            self._spawn(self._join(room_id, via))

    async def _join(self, room_id: str, via: str) -> None:
        # A room id names no server to join through (room version 12 ids have
        # none at all), so the join goes through the inviter's homeserver, which
        # is in the room.
        await self.intent.join_room(RoomID(room_id), servers=[via] if via else None, max_retries=0)
        log.info("> bot joined room=%s via=%s", room_id, via or "-")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("x appservice background task failed", exc_info=task.exception())

        task.add_done_callback(done)

    # -- the client side (talks to the homeserver as the bot) --

    @property
    def intent(self) -> IntentAPI:
        if self._intent is None:
            raise RuntimeError("the appservice is not started; it starts with the HTTP app")
        return self._intent

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        api = AppServiceAPI(
            base_url=self.homeserver_url,
            bot_mxid=UserID(self.registration.bot_user_id),
            token=self.registration.as_token,
            log=cast(TraceLogger, logging.getLogger("mediafed.matrix.appservice.api")),
            state_store=_StateStore(),
            client_session=self._session,
        )
        self._intent = api.bot_intent()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._intent = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.txn_log.close()

    async def wait_idle(self) -> None:
        """Wait for background work (joins) to finish; for orderly shutdown and tests."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


APPSERVICE_KEY = web.AppKey("matrix_appservice", MatrixAppService)


def setup_appservice(
    app: web.Application,
    registration: Registration,
    *,
    homeserver_url: str,
    data_dir: Path,
    membership: CallMembership,
    call_sink: CallEventSink | None = None,
) -> MatrixAppService:
    """Mount the appservice on ``app``; it starts and stops with the app."""
    service = MatrixAppService(
        registration,
        homeserver_url=homeserver_url,
        membership=membership,
        call_sink=call_sink or LoggingCallSink(),
        transactions=TransactionLog(data_dir / "matrix-appservice.sqlite3"),
    )
    service.mount(app)
    app[APPSERVICE_KEY] = service

    async def start(app: web.Application) -> None:
        await service.start()

    async def stop(app: web.Application) -> None:
        await service.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return service
