"""The LiveKit signaling WebSockets ``/rtc`` and ``/rtc/v1``: which socket reaches
which peer.

The handler checks the access token and the connect options
(:mod:`.connect`) before the upgrade (HTTP 401 or 400 with the reason), then
either joins the room through the session API (:mod:`mediafed.media`) and
answers with a ``JoinResponse`` carrying every field clients insist on
(REFERENCES.md, "LiveKit client protocol"), or resumes a parked peer
(``reconnect=1&sid=PA_…``, or the same in a v1 join request) within its grace
period: the client keeps its participant and tracks; later it is told to
rejoin (``leave`` action RECONNECT). On ``/rtc/v1`` the participant has one
peer connection, which only the client offers; its first offer may come
inside the join request and is answered right after the join. Then the
handler pumps the socket's frames, one binary protobuf ``SignalRequest``
each, into the participant's :class:`~.peer.SignalPeer`, within a message
budget. What the frames mean is the peer's business.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence

from aiohttp import WSMessage, WSMsgType, web
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from mediafed.errors import AuthError, MediafedError, RemoteProtocolError
from mediafed.media import Permission, RoomManager, Session, events
from mediafed.media.limits import TokenBucket
from mediafed.signal.livekit import translate
from mediafed.signal.livekit.auth import CORS_HEADERS, verify_join
from mediafed.signal.livekit.connect import (
    ConnectRequest,
    from_join_request,
    from_query,
    with_join_fields,
)
from mediafed.signal.livekit.peer import (
    CLOSE_INVALID,
    CLOSE_POLICY,
    CLOSE_UNSUPPORTED,
    SignalOptions,
    SignalPeer,
)
from mediafed.signal.livekit.tokens import Claims
from mediafed.transport.turn import TurnServer, ice_servers_for

log = logging.getLogger(__name__)

SERVER_PROTOCOL = 15
"""The signal protocol version mediafed reports in ``ServerInfo.protocol``."""
LIVEKIT_VERSION = "1.9.0"
"""The livekit-server version mediafed reports (``ServerInfo.version``): clients turn
features on by it. livekit-client refuses RPC from a server below 1.8.0, and above
1.13.6 publishes VP9/AV1 as rid simulcast, which mediafed does not relay."""


class _Peers:
    """Signal peers of this node by (room, identity), for resume and shutdown."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], SignalPeer] = {}

    def add(self, peer: SignalPeer) -> None:
        self.by_key[(peer.room_name, peer.identity)] = peer

    def discard(self, peer: SignalPeer) -> None:
        if self.by_key.get((peer.room_name, peer.identity)) is peer:
            del self.by_key[(peer.room_name, peer.identity)]

    def find(self, room: str, identity: str, sid: str) -> SignalPeer | None:
        peer = self.by_key.get((room, identity))
        if peer is None or peer.finished or peer.session is None or peer.session.sid != sid:
            return None
        return peer


def _ice_servers(servers: Sequence[TurnServer], identity: str) -> list[rtc.ICEServer]:
    """The client's TURN servers, with credentials of its own (transport/turn.py)."""
    return [
        rtc.ICEServer(
            urls=list(server.urls), username=server.username, credential=server.credential
        )
        for server in ice_servers_for(servers, identity, time.time())
    ]


def _join_response(
    peer: SignalPeer, session: Session, turn_servers: Sequence[TurnServer]
) -> rtc.SignalResponse:
    options = peer.options
    room = peer.room
    return rtc.SignalResponse(
        join=rtc.JoinResponse(
            room=translate.room_to_pb(room),
            participant=translate.participant_to_pb(session.info()),
            other_participants=translate.visible_participants(
                room.participants(), exclude_sid=session.sid
            ),
            server_version=LIVEKIT_VERSION,
            server_info=models.ServerInfo(
                edition=models.ServerInfo.Edition.Standard,
                version=LIVEKIT_VERSION,
                protocol=SERVER_PROTOCOL,
                node_id="mediafed",
            ),
            ice_servers=_ice_servers(turn_servers, session.identity),
            # one connection (v1): the client's own offer opens it
            subscriber_primary=not session.single,
            client_configuration=models.ClientConfiguration(),
            ping_interval=options.ping_interval_s,
            ping_timeout=options.ping_timeout_s,
            enabled_publish_codecs=[models.Codec(mime=mime) for mime in options.publish_codecs],
            fast_publish=False,
        )
    )


async def _nothing() -> AsyncIterator[WSMessage]:
    """No frames: the socket is not read (a request that came with the join failed)."""
    return
    yield


def _leave_frame(reason: int, action: int, *, can_reconnect: bool) -> bytes:
    return rtc.SignalResponse(
        leave=rtc.LeaveRequest(can_reconnect=can_reconnect, reason=reason, action=action)  # type: ignore[arg-type]
    ).SerializeToString()


class RtcEndpoint:
    """The ``/rtc`` route: authenticate, join or resume, then pump frames."""

    def __init__(
        self,
        keys: Mapping[str, str],
        rooms: RoomManager,
        options: SignalOptions,
        turn_servers: Sequence[TurnServer] = (),
    ) -> None:
        self.keys = keys
        """API key -> secret: join tokens are checked against these."""
        self.rooms = rooms
        self.options = options
        self.turn_servers = tuple(turn_servers)
        """Handed to each client in its join and reconnect answers."""
        self.peers = _Peers()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``/rtc``: signal protocol v0, two peer connections."""
        return await self._serve(request, single=False)

    async def handle_v1(self, request: web.Request) -> web.StreamResponse:
        """``/rtc/v1``: one peer connection, options in the ``join_request``."""
        return await self._serve(request, single=True)

    async def _serve(self, request: web.Request, *, single: bool) -> web.StreamResponse:
        try:
            claims, room_name = verify_join(request, self.keys)
            if single:
                connect = from_join_request(request.query.get("join_request", ""))
            else:
                connect = from_query(request.query)
            claims = with_join_fields(claims, connect)
        except AuthError as exc:
            log.info("x %s refused: %s", request.path, exc)
            return web.Response(status=401, text=str(exc), headers=CORS_HEADERS)
        except RemoteProtocolError as exc:
            log.info("x %s refused: %s", request.path, exc)
            return web.Response(status=400, text=str(exc), headers=CORS_HEADERS)
        # No permessage-deflate (clients offer it): signal messages are small protobufs,
        # and a deflate context both ways costs a few hundred KB per participant.
        ws = web.WebSocketResponse(
            max_msg_size=self.options.max_frame_bytes, autoping=True, compress=False
        )
        await ws.prepare(request)
        first: list[rtc.SignalRequest] = []
        if connect.reconnect:
            peer = self.peers.find(room_name, claims.identity, connect.participant_sid)
            if peer is not None and peer.session is not None and peer.session.single != single:
                peer = None  # resumed on the other path: its connections do not fit
            if peer is None:
                log.info("x resume refused room=%s participant=%s", room_name, claims.identity)
                await ws.send_bytes(
                    _leave_frame(
                        models.DisconnectReason.STATE_MISMATCH,
                        rtc.LeaveRequest.Action.RECONNECT,
                        can_reconnect=True,
                    )
                )
                await ws.close(code=1000, message=b"session not found; join again")
                return ws
            await self._resume(peer, ws, connect.reconnect_reason)
        else:
            joined = await self._join(ws, claims, room_name, connect)
            if joined is None:
                return ws
            peer = joined
            # v1: tracks and the first offer that came with the join, as if sent after it
            first = [rtc.SignalRequest(add_track=track) for track in connect.add_tracks]
            if connect.publisher_offer is not None:
                first.append(rtc.SignalRequest(offer=connect.publisher_offer))
        await self._pump(peer, ws, first)
        return ws

    async def _join(
        self,
        ws: web.WebSocketResponse,
        claims: Claims,
        room_name: str,
        connect: ConnectRequest,
    ) -> SignalPeer | None:
        room = self.rooms.get_or_create(room_name)
        peer = SignalPeer(
            keys=self.keys,
            options=self.options,
            claims=claims,
            room=room,
            on_finished=self.peers.discard,
        )
        peer.attach(ws)
        try:
            session = await room.join(
                claims.identity,
                name=claims.name,
                metadata=claims.metadata,
                attributes=translate.attributes_of(claims.attributes),
                permission=Permission(**translate.permission_kwargs(claims)),
                listener=peer,
                auto_subscribe=connect.auto_subscribe,
                answer_only=connect.single,
            )
        except MediafedError as exc:
            log.info("x join refused room=%s participant=%s: %s", room_name, claims.identity, exc)
            peer.finished = True
            await peer.detach()
            await ws.send_bytes(
                _leave_frame(
                    models.DisconnectReason.JOIN_FAILURE,
                    rtc.LeaveRequest.Action.DISCONNECT,
                    can_reconnect=False,
                )
            )
            await ws.close(code=CLOSE_POLICY, message=str(exc)[:120].encode())
            return None
        peer.session = session
        old = self.peers.by_key.get((room_name, claims.identity))
        if old is not None and old is not peer:
            old.finish()
        self.peers.add(peer)
        peer.go_live(_join_response(peer, session, self.turn_servers))
        session.start_subscriber()  # v0: the first subscriber offer follows the join
        peer.start_timers()
        log.info("- %r joined on %s", peer, "/rtc/v1" if connect.single else "/rtc")
        return peer

    async def _resume(self, peer: SignalPeer, ws: web.WebSocketResponse, reason: int) -> None:
        assert peer.session is not None
        await peer.reattach(ws)
        peer.go_live(
            rtc.SignalResponse(
                reconnect=rtc.ReconnectResponse(
                    ice_servers=_ice_servers(self.turn_servers, peer.identity),
                    client_configuration=models.ClientConfiguration(),
                    server_info=models.ServerInfo(
                        edition=models.ServerInfo.Edition.Standard,
                        version=LIVEKIT_VERSION,
                        protocol=SERVER_PROTOCOL,
                    ),
                    # the client resends the reliable data it sent after this one
                    last_message_seq=peer.last_data_sequence,
                )
            )
        )
        log.info("- %r resumed (reconnect_reason=%s)", peer, reason or "-")
        if reason != models.ReconnectReason.RR_SIGNAL_DISCONNECTED and not peer.session.single:
            # media may be broken too: new ICE credentials and a new subscriber offer
            # (the client restarts its publisher side itself, and on v1 its only one).
            # When only the signal connection dropped, media kept flowing.
            await peer.session.restart_ice()

    async def _pump(
        self, peer: SignalPeer, ws: web.WebSocketResponse, first: Sequence[rtc.SignalRequest]
    ) -> None:
        watchdog = asyncio.create_task(peer.watch(ws))
        close: tuple[int, str] | None = None
        budget = TokenBucket(self.options.messages_per_s, self.options.message_burst)
        loop = asyncio.get_running_loop()
        for request in first:
            close = await self._apply(peer, request)
            if close is not None:
                break
        try:
            async for message in ws if close is None else _nothing():
                peer.seen()
                if not budget.take(loop.time()):
                    # No client sends this many requests; dropping some would leave its
                    # state undefined, so it is disconnected, and may join again.
                    close = (
                        CLOSE_POLICY,
                        f"more than {self.options.message_burst:.0f} signaling messages at "
                        f"once or {self.options.messages_per_s:.0f} a second",
                    )
                    self.rooms.drop("signal_rate", repr(peer), close[1])
                    break
                if message.type == WSMsgType.BINARY:
                    close = await self._handle_frame(peer, message.data)
                elif message.type == WSMsgType.TEXT:
                    close = (CLOSE_UNSUPPORTED, "send binary protobuf SignalRequest frames")
                elif message.type == WSMsgType.ERROR:
                    log.info("x %r socket error: %s", peer, ws.exception())
                if close is not None or peer.finished:
                    break
        finally:
            watchdog.cancel()
        if close is not None:
            log.info("x %r protocol error: %s", peer, close[1])
            await peer.end(f"protocol error: {close[1]}")
            await peer.close_after_flush(ws, close[0], close[1])
        elif peer.finished:
            await peer.close_after_flush(ws, 1000, "left")
        elif peer.socket is ws:
            await peer.detach()
            peer.park()
        if not ws.closed:
            await ws.close()

    async def _handle_frame(self, peer: SignalPeer, data: bytes) -> tuple[int, str] | None:
        request = rtc.SignalRequest()
        try:
            request.ParseFromString(data)
        except DecodeError:
            return (CLOSE_INVALID, "malformed SignalRequest protobuf")
        return await self._apply(peer, request)

    async def _apply(self, peer: SignalPeer, request: rtc.SignalRequest) -> tuple[int, str] | None:
        """Apply one request; the close code and reason if it breaks the protocol."""
        try:
            await peer.handle(request)
        except RemoteProtocolError as exc:
            return (CLOSE_POLICY, str(exc))
        except MediafedError as exc:
            log.warning("x %r %s failed: %s", peer, request.WhichOneof("message"), exc)
            return (CLOSE_POLICY, str(exc))
        return None

    async def shutdown(self, app: web.Application) -> None:
        for peer in list(self.peers.by_key.values()):
            peer.on_room_event(events.SessionClosed("server shutdown"))


def add_rtc_route(
    app: web.Application,
    keys: Mapping[str, str],
    rooms: RoomManager,
    options: SignalOptions | None = None,
    turn_servers: Sequence[TurnServer] = (),
) -> RtcEndpoint:
    """Serve ``/rtc`` on ``app`` for ``rooms``, join tokens checked against ``keys``;
    returns the endpoint (its peers, for tests)."""
    endpoint = RtcEndpoint(keys, rooms, options or SignalOptions(), turn_servers)
    app.router.add_get("/rtc", endpoint.handle)
    app.router.add_get("/rtc/v1", endpoint.handle_v1)
    app.on_shutdown.append(endpoint.shutdown)
    return endpoint
