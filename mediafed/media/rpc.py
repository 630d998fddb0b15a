"""Calls the server makes to one participant's client (LiveKit's RoomService ``PerformRpc``).

The request goes to the client (:class:`~mediafed.media.events.RpcRequested`),
which acknowledges it at once and answers when its handler returns; codes,
limits and timeouts are LiveKit's (livekit/protocol ``utils/data_channel_rpc.go``,
client-sdk-js ``rpc.ts``). The front-end hands acknowledgements and answers
back through :meth:`RpcCalls.acknowledged` and :meth:`RpcCalls.answered`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mediafed.media import events

if TYPE_CHECKING:
    from mediafed.media.session import Session

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 15 * 1024
"""The largest request or response payload, in UTF-8 bytes."""
DEFAULT_RESPONSE_TIMEOUT_S = 10.0
MAX_ROUND_TRIP_S = 2.0
"""A client acknowledges a request within this, or it counts as not connected."""


class RpcCode(enum.IntEnum):
    """LiveKit's built-in RPC error codes; handlers may answer codes of their own."""

    APPLICATION_ERROR = 1500
    CONNECTION_TIMEOUT = 1501
    RESPONSE_TIMEOUT = 1502
    RECIPIENT_DISCONNECTED = 1503
    RESPONSE_PAYLOAD_TOO_LARGE = 1504
    SEND_FAILED = 1505
    UNSUPPORTED_METHOD = 1400
    RECIPIENT_NOT_FOUND = 1401
    REQUEST_PAYLOAD_TOO_LARGE = 1402
    UNSUPPORTED_SERVER = 1403
    UNSUPPORTED_VERSION = 1404


_MESSAGES = {
    RpcCode.APPLICATION_ERROR: "Application error in method handler",
    RpcCode.CONNECTION_TIMEOUT: "Connection timeout",
    RpcCode.RESPONSE_TIMEOUT: "Response timeout",
    RpcCode.RECIPIENT_DISCONNECTED: "Recipient disconnected",
    RpcCode.RESPONSE_PAYLOAD_TOO_LARGE: "Response payload too large",
    RpcCode.SEND_FAILED: "Failed to send",
    RpcCode.UNSUPPORTED_METHOD: "Method not supported at destination",
    RpcCode.RECIPIENT_NOT_FOUND: "Recipient not found",
    RpcCode.REQUEST_PAYLOAD_TOO_LARGE: "Request payload too large",
    RpcCode.UNSUPPORTED_SERVER: "RPC not supported by server",
    RpcCode.UNSUPPORTED_VERSION: "Unsupported RPC version",
}


@dataclass(frozen=True, slots=True)
class RpcError:
    """A call that failed: the handler's own error, or one of :class:`RpcCode`."""

    code: int
    message: str
    data: str = ""

    @classmethod
    def of(cls, code: RpcCode, data: str = "") -> RpcError:
        return cls(int(code), _MESSAGES[code], data)

    def __str__(self) -> str:
        text = f"RpcError {self.code}: {self.message}"
        return f"{text}: {self.data}" if self.data else text


@dataclass(slots=True)
class _Pending:
    identity: str
    acknowledged: asyncio.Event
    answer: asyncio.Future[str | RpcError]


class RpcCalls:
    """The server's calls in one room that await their answers, by request id."""

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        """Calls awaiting their answers."""
        return len(self._pending)

    async def call(
        self,
        session: Session,
        method: str,
        payload: str,
        *,
        response_timeout_s: float = DEFAULT_RESPONSE_TIMEOUT_S,
    ) -> str | RpcError:
        """Call ``method`` of the client of ``session``: its answer's payload, or why
        there is none."""
        if len(payload.encode()) > MAX_PAYLOAD_BYTES:
            return RpcError.of(RpcCode.REQUEST_PAYLOAD_TOO_LARGE)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + response_timeout_s
        request_id = str(uuid.uuid4())
        pending = _Pending(session.identity, asyncio.Event(), loop.create_future())
        self._pending[request_id] = pending
        log.info("> %s rpc %s %s", session.label, request_id, method)
        try:
            session.listener.on_room_event(
                events.RpcRequested(request_id, method, payload, int(response_timeout_s * 1000))
            )
            try:
                await asyncio.wait_for(
                    pending.acknowledged.wait(), min(MAX_ROUND_TRIP_S, response_timeout_s)
                )
            except TimeoutError:
                if response_timeout_s <= MAX_ROUND_TRIP_S:
                    return RpcError.of(RpcCode.RESPONSE_TIMEOUT)
                return RpcError.of(RpcCode.CONNECTION_TIMEOUT)
            try:
                return await asyncio.wait_for(pending.answer, max(0.0, deadline - loop.time()))
            except TimeoutError:
                return RpcError.of(RpcCode.RESPONSE_TIMEOUT)
        finally:
            del self._pending[request_id]

    def acknowledged(self, identity: str, request_id: str) -> bool:
        """``identity`` acknowledged a request; False if it is not one of ours to it."""
        pending = self._pending.get(request_id)
        if pending is None or pending.identity != identity:
            return False
        pending.acknowledged.set()
        return True

    def answered(self, identity: str, request_id: str, answer: str | RpcError) -> bool:
        """``identity`` answered a request; False if it is not one of ours to it."""
        pending = self._pending.get(request_id)
        if pending is None or pending.identity != identity:
            return False
        if isinstance(answer, str) and len(answer.encode()) > MAX_PAYLOAD_BYTES:
            answer = RpcError.of(RpcCode.RESPONSE_PAYLOAD_TOO_LARGE)
        pending.acknowledged.set()
        if not pending.answer.done():
            pending.answer.set_result(answer)
        return True

    def disconnected(self, identity: str) -> None:
        """``identity`` left: its calls fail at once."""
        for pending in self._pending.values():
            if pending.identity == identity and not pending.answer.done():
                pending.acknowledged.set()
                pending.answer.set_result(RpcError.of(RpcCode.RECIPIENT_DISCONNECTED))
