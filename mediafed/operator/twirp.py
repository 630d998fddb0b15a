"""LiveKit's RoomService over Twirp: ``POST /twirp/livekit.RoomService/<Method>``.

Twirp wire protocol v7 (twitchtv/twirp ``PROTOCOL.md``): the request body is
the protobuf message (``application/protobuf``) or its protobuf JSON mapping
(``application/json``); the answer uses the same encoding; errors are JSON
``{"code", "msg"}`` with the HTTP status Twirp assigns to the code.

Methods, grants and error codes are those of livekit-server's
``pkg/service/roomservice.go`` (messages: livekit/protocol ``livekit_room.proto``):
an admin token (``Authorization: Bearer``) with ``roomCreate`` (CreateRoom,
DeleteRoom), ``roomList`` (ListRooms) or ``roomAdmin`` for the named room
(everything else); a token without the grant is ``unauthenticated`` (401), as
LiveKit answers. ForwardParticipant and MoveParticipant, which only LiveKit Cloud
serves, are ``unimplemented``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from livekit.protocol import models, room as room_pb

from mediafed.errors import AuthError, MediafedError
from mediafed.media import ParticipantInfo, Permission, Room, RoomManager, limits
from mediafed.media.rpc import DEFAULT_RESPONSE_TIMEOUT_S, RpcCode, RpcError
from mediafed.operator.twirp_protocol import PREFIX, TwirpError, parse_request
from mediafed.signal.livekit import translate
from mediafed.signal.livekit.auth import CORS_HEADERS, token_from_request
from mediafed.signal.livekit.tokens import Claims, verify_token

log = logging.getLogger(__name__)

_RPC_CODES: dict[int, str] = {
    # livekit/protocol utils.DataChannelRpcError.PsrpcError, then psrpc's Twirp codes
    RpcCode.CONNECTION_TIMEOUT: "canceled",
    RpcCode.RESPONSE_TIMEOUT: "canceled",
    RpcCode.RECIPIENT_DISCONNECTED: "unavailable",
    RpcCode.RESPONSE_PAYLOAD_TOO_LARGE: "malformed",
    RpcCode.UNSUPPORTED_METHOD: "invalid_argument",
    RpcCode.RECIPIENT_NOT_FOUND: "not_found",
    RpcCode.REQUEST_PAYLOAD_TOO_LARGE: "malformed",
    RpcCode.UNSUPPORTED_SERVER: "unimplemented",
    RpcCode.UNSUPPORTED_VERSION: "unimplemented",
}
"""Twirp codes of failed PerformRpc calls; any other RPC error code is ``internal``."""
NONCES_REMEMBERED = 1024
"""SendData nonces kept to drop retried requests (LiveKit drops repeats too)."""
NO_ROOM = "name the room in the request's 'room' field"


Handler = Callable[[Any, Claims], Awaitable[Message]]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise TwirpError("unauthenticated", message)


def _require_admin(claims: Claims, room: str) -> None:
    _require(
        claims.video.room_admin,
        "permissions denied: this token has no roomAdmin grant; "
        "mint one with `mediafed token --admin --room ROOM`",
    )
    _require(
        claims.video.room == room,
        f"permissions denied: this token administers room {claims.video.room!r}, not {room!r}",
    )


def _check_size(what: str, size: int, limit: int) -> None:
    if size > limit:
        raise TwirpError("invalid_argument", f"{what} of {size} bytes exceeds the limit of {limit}")


def _check_participant_fields(name: str, metadata: str, attributes: Mapping[str, str]) -> None:
    """LiveKit's limits on what an admin may set on a participant."""
    _check_size("the name", len(name.encode()), limits.MAX_NAME_BYTES)
    _check_size("the metadata", len(metadata.encode()), limits.MAX_METADATA_BYTES)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
    _check_size("the attributes", size, limits.MAX_ATTRIBUTES_BYTES)


class RoomService:
    """The RoomService methods on top of the node's rooms."""

    def __init__(
        self,
        keys: Mapping[str, str],
        rooms: RoomManager,
        *,
        enable_remote_unmute: bool = False,
    ) -> None:
        self.keys = keys
        self.rooms = rooms
        self.enable_remote_unmute = enable_remote_unmute
        self._nonces: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self.methods: dict[str, Handler] = {
            "CreateRoom": self.create_room,
            "ListRooms": self.list_rooms,
            "DeleteRoom": self.delete_room,
            "ListParticipants": self.list_participants,
            "GetParticipant": self.get_participant,
            "RemoveParticipant": self.remove_participant,
            "MutePublishedTrack": self.mute_published_track,
            "UpdateParticipant": self.update_participant,
            "UpdateSubscriptions": self.update_subscriptions,
            "SendData": self.send_data,
            "UpdateRoomMetadata": self.update_room_metadata,
            "ForwardParticipant": self.forward_participant,
            "MoveParticipant": self.move_participant,
            "PerformRpc": self.perform_rpc,
        }

    def _room(self, name: str) -> Room:
        if not name:
            raise TwirpError("invalid_argument", NO_ROOM)
        room = self.rooms.get(name)
        if room is None:
            raise TwirpError("not_found", f"room {name!r} does not exist")
        return room

    def _participant(self, room: Room, identity: str) -> ParticipantInfo:
        if not identity:
            raise TwirpError("invalid_argument", "name the participant in the 'identity' field")
        participant = room.participant(identity)
        if participant is None:
            raise TwirpError("not_found", f"no participant {identity!r} in room {room.name!r}")
        return participant

    # ---- rooms ---------------------------------------------------------------

    async def create_room(self, request: room_pb.CreateRoomRequest, claims: Claims) -> Message:
        _require(claims.video.room_create, "permissions denied: this token has no roomCreate grant")
        if not request.name:
            raise TwirpError("invalid_argument", "CreateRoom needs a room 'name'")
        _check_size("the room name", len(request.name.encode()), limits.MAX_NAME_BYTES)
        _check_size("the metadata", len(request.metadata.encode()), limits.MAX_METADATA_BYTES)
        existing = self.rooms.get(request.name)
        room = self.rooms.get_or_create(
            request.name,
            empty_timeout_s=int(request.empty_timeout) or 300,
            max_participants=int(request.max_participants),
            metadata=request.metadata,
        )
        if existing is not None:
            # LiveKit: creating a room that exists updates the settings given
            if request.empty_timeout:
                room.empty_timeout_s = int(request.empty_timeout)
            if request.max_participants:
                room.max_participants = int(request.max_participants)
            if request.metadata and request.metadata != room.metadata:
                room.update_metadata(request.metadata)
        log.info("< twirp CreateRoom room=%s", room.name)
        return translate.room_to_pb(room)

    async def list_rooms(self, request: room_pb.ListRoomsRequest, claims: Claims) -> Message:
        _require(claims.video.room_list, "permissions denied: this token has no roomList grant")
        wanted = set(request.names)
        return room_pb.ListRoomsResponse(
            rooms=[
                translate.room_to_pb(room)
                for room in self.rooms.rooms()
                if not wanted or room.name in wanted
            ]
        )

    async def delete_room(self, request: room_pb.DeleteRoomRequest, claims: Claims) -> Message:
        _require(
            claims.video.room_create,
            "permissions denied: deleting a room needs a roomCreate grant",
        )
        self._room(request.room)
        await self.rooms.delete(request.room)
        log.info("< twirp DeleteRoom room=%s", request.room)
        return room_pb.DeleteRoomResponse()

    async def update_room_metadata(
        self, request: room_pb.UpdateRoomMetadataRequest, claims: Claims
    ) -> Message:
        _require_admin(claims, request.room)
        _check_size("the metadata", len(request.metadata.encode()), limits.MAX_METADATA_BYTES)
        room = self._room(request.room)
        room.update_metadata(request.metadata)
        log.info("< twirp UpdateRoomMetadata room=%s", room.name)
        return translate.room_to_pb(room)

    # ---- participants ------------------------------------------------------------

    async def list_participants(
        self, request: room_pb.ListParticipantsRequest, claims: Claims
    ) -> Message:
        _require_admin(claims, request.room)
        if not request.room:
            raise TwirpError("invalid_argument", NO_ROOM)
        # LiveKit lists no one, rather than not_found, for a room that does not exist
        room = self.rooms.get(request.room)
        participants = room.participants() if room is not None else []
        return room_pb.ListParticipantsResponse(
            participants=[translate.participant_to_pb(p) for p in participants]
        )

    async def get_participant(
        self, request: room_pb.RoomParticipantIdentity, claims: Claims
    ) -> Message:
        _require_admin(claims, request.room)
        room = self._room(request.room)
        return translate.participant_to_pb(self._participant(room, request.identity))

    async def remove_participant(
        self, request: room_pb.RoomParticipantIdentity, claims: Claims
    ) -> Message:
        _require_admin(claims, request.room)
        room = self._room(request.room)
        self._participant(room, request.identity)
        await room.remove_participant(request.identity, "removed")
        log.info("< twirp RemoveParticipant room=%s participant=%s", room.name, request.identity)
        return room_pb.RemoveParticipantResponse()

    async def mute_published_track(
        self, request: room_pb.MuteRoomTrackRequest, claims: Claims
    ) -> Message:
        _require_admin(claims, request.room)
        room = self._room(request.room)
        self._participant(room, request.identity)
        if not request.muted and not self.enable_remote_unmute:
            raise TwirpError(
                "failed_precondition",
                "remote unmute not enabled: only the participant may unmute its track; "
                "set [room] enable_remote_unmute = true to allow it",
            )
        track = room.mute_published_track(request.identity, request.track_sid, request.muted)
        if track is None:
            raise TwirpError(
                "not_found", f"{request.identity!r} publishes no track {request.track_sid!r}"
            )
        log.info(
            "< twirp MutePublishedTrack room=%s participant=%s track=%s muted=%s",
            room.name,
            request.identity,
            request.track_sid,
            request.muted,
        )
        return room_pb.MuteRoomTrackResponse(track=translate.track_to_pb(track))

    async def update_participant(
        self, request: room_pb.UpdateParticipantRequest, claims: Claims
    ) -> Message:
        _require_admin(claims, request.room)
        _check_participant_fields(request.name, request.metadata, request.attributes)
        room = self._room(request.room)
        current = self._participant(room, request.identity)
        permission = None
        if request.HasField("permission"):
            # LiveKit replaces the permission as a whole
            permission = Permission(**translate.permission_kwargs_from_pb(request.permission))
        elif not (request.name or request.metadata or request.attributes):
            return translate.participant_to_pb(current)  # nothing to change, no one to tell
        # empty name or metadata: unchanged; an attribute set to "" is deleted
        info = room.update_participant(
            request.identity,
            metadata=request.metadata or None,
            name=request.name or None,
            attributes=dict(request.attributes) or None,
            permission=permission,
        )
        if info is None:
            raise TwirpError("not_found", f"participant {request.identity!r} left meanwhile")
        log.info("< twirp UpdateParticipant room=%s participant=%s", room.name, request.identity)
        return translate.participant_to_pb(info)

    async def update_subscriptions(
        self, request: room_pb.UpdateSubscriptionsRequest, claims: Claims
    ) -> Message:
        _require_admin(claims, request.room)
        room = self._room(request.room)
        self._participant(room, request.identity)
        sids = list(request.track_sids)
        for entry in request.participant_tracks:
            sids.extend(entry.track_sids)
        room.update_subscriptions(request.identity, sids, subscribe=request.subscribe)
        log.info(
            "< twirp UpdateSubscriptions room=%s participant=%s %s %s",
            room.name,
            request.identity,
            "subscribe" if request.subscribe else "unsubscribe",
            sids,
        )
        return room_pb.UpdateSubscriptionsResponse()

    async def forward_participant(
        self, request: room_pb.ForwardParticipantRequest, claims: Claims
    ) -> Message:
        _require_admin(claims, request.room)
        raise TwirpError(
            "unimplemented",
            "ForwardParticipant is a LiveKit Cloud feature; mediafed, like LiveKit's "
            "open-source server, does not forward participants between rooms",
        )

    async def move_participant(
        self, request: room_pb.MoveParticipantRequest, claims: Claims
    ) -> Message:
        _require_admin(claims, request.room)
        raise TwirpError(
            "unimplemented",
            "MoveParticipant is a LiveKit Cloud feature; mediafed, like LiveKit's "
            "open-source server, does not move participants between rooms: remove the "
            "participant and give it a token for the other room",
        )

    # ---- data and calls -------------------------------------------------------------

    async def send_data(self, request: room_pb.SendDataRequest, claims: Claims) -> Message:
        _require_admin(claims, request.room)
        if request.nonce and len(request.nonce) != 16:
            raise TwirpError(
                "invalid_argument",
                f"nonce should be 16 bytes or not present, got {len(request.nonce)} bytes",
            )
        _check_size("the data", len(request.data), limits.MAX_DATA_BYTES)
        room = self._room(request.room)
        if request.nonce and self._seen(room.name, request.nonce):
            log.info("- twirp SendData room=%s: repeated nonce; dropped", room.name)
            return room_pb.SendDataResponse()
        destinations = list(request.destination_identities)
        if request.destination_sids:
            wanted = set(request.destination_sids)
            destinations.extend(p.identity for p in room.participants() if p.sid in wanted)
        named = bool(request.destination_identities or request.destination_sids)
        if named and not destinations:
            return room_pb.SendDataResponse()  # none of those named is here
        kind = "lossy" if request.kind == models.DataPacket.Kind.LOSSY else "reliable"
        room.send_data(
            bytes(request.data),
            topic=request.topic,
            kind=kind,
            destination_identities=tuple(destinations),
        )
        return room_pb.SendDataResponse()

    def _seen(self, room: str, nonce: bytes) -> bool:
        key = (room, bytes(nonce))
        if key in self._nonces:
            return True
        self._nonces[key] = None
        if len(self._nonces) > NONCES_REMEMBERED:
            self._nonces.popitem(last=False)
        return False

    async def perform_rpc(self, request: room_pb.PerformRpcRequest, claims: Claims) -> Message:
        _require_admin(claims, request.room)
        if not request.destination_identity:
            raise TwirpError("invalid_argument", "destination identity is required")
        room = self._room(request.room)
        self._participant(room, request.destination_identity)
        log.info(
            "< twirp PerformRpc room=%s participant=%s method=%s",
            room.name,
            request.destination_identity,
            request.method,
        )
        answer = await room.perform_rpc(
            request.destination_identity,
            request.method,
            request.payload,
            response_timeout_s=request.response_timeout_ms / 1000 or DEFAULT_RESPONSE_TIMEOUT_S,
        )
        if isinstance(answer, RpcError):
            raise TwirpError(_RPC_CODES.get(answer.code, "internal"), str(answer))
        return room_pb.PerformRpcResponse(payload=answer)

    # ---- HTTP ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        content_type = request.content_type
        as_json = content_type == "application/json"
        try:
            method = self.methods.get(name)
            if method is None:
                raise TwirpError("bad_route", f"RoomService has no method {name!r}")
            if content_type not in ("application/json", "application/protobuf"):
                raise TwirpError(
                    "bad_route",
                    f"unsupported Content-Type {content_type!r}; "
                    "send application/protobuf or application/json",
                )
            try:
                claims = verify_token(token_from_request(request), self.keys)
            except AuthError as exc:
                raise TwirpError("unauthenticated", str(exc)) from None
            message = parse_request(name, await request.read(), as_json=as_json)
            answer = await method(message, claims)
        except TwirpError as exc:
            log.info("x twirp %s: %s %s", name, exc.code, exc.msg)
            return exc.response()
        except MediafedError as exc:
            log.warning("x twirp %s failed: %s", name, exc)
            return TwirpError("invalid_argument", str(exc)).response()
        if as_json:
            return web.Response(
                text=json_format.MessageToJson(answer, preserving_proto_field_name=True),
                content_type="application/json",
                headers=CORS_HEADERS,
            )
        return web.Response(
            body=answer.SerializeToString(),
            content_type="application/protobuf",
            headers=CORS_HEADERS,
        )


def add_twirp_routes(
    app: web.Application,
    keys: Mapping[str, str],
    rooms: RoomManager,
    *,
    enable_remote_unmute: bool = False,
) -> RoomService:
    """Serve RoomService on ``app`` for ``rooms``; tokens are checked against ``keys``;
    ``enable_remote_unmute`` lets MutePublishedTrack unmute (``[room]`` section)."""
    service = RoomService(keys, rooms, enable_remote_unmute=enable_remote_unmute)
    app.router.add_post(PREFIX + "{method}", service.handle)
    return service
