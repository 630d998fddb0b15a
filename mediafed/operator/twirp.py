"""LiveKit's RoomService over Twirp: ``POST /twirp/livekit.RoomService/<Method>``.

Twirp wire protocol v7 (twitchtv/twirp ``PROTOCOL.md``): the request body is
the protobuf message (``application/protobuf``) or its protobuf JSON mapping
(``application/json``); the answer uses the same encoding; errors are JSON
``{"code", "msg"}`` with the HTTP status Twirp assigns to the code. Messages
and grants follow livekit/protocol ``livekit_room.proto`` and livekit-api's
``room_service.py``: an admin token (``Authorization: Bearer``) with
``roomCreate`` (CreateRoom, DeleteRoom), ``roomList`` (ListRooms) or
``roomAdmin`` for the named room (everything else).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import models, room as room_pb

from mediafed.errors import AuthError, MediafedError
from mediafed.media import ParticipantInfo, Permission, Room, RoomManager
from mediafed.signal.livekit import translate
from mediafed.signal.livekit.auth import CORS_HEADERS, token_from_request
from mediafed.signal.livekit.tokens import Claims, verify_token

log = logging.getLogger(__name__)

PREFIX = "/twirp/livekit.RoomService/"
_STATUS = {
    "invalid_argument": 400,
    "malformed": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "bad_route": 404,
    "not_found": 404,
    "already_exists": 409,
    "internal": 500,
    "unimplemented": 501,
}


class TwirpError(Exception):
    """An error answered as Twirp JSON ``{"code", "msg"}``."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg

    def response(self) -> web.Response:
        return web.json_response(
            {"code": self.code, "msg": self.msg},
            status=_STATUS.get(self.code, 500),
            headers=CORS_HEADERS,
        )


Handler = Callable[[Any, Claims], Awaitable[Message]]


@dataclass(frozen=True, slots=True)
class _Method:
    request: type[Message]
    handler: Handler


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise TwirpError("permission_denied", message)


def _require_admin(claims: Claims, room: str) -> None:
    _require(
        claims.video.room_admin,
        "this token has no roomAdmin grant; mint one with `mediafed token --admin --room ROOM`",
    )
    _require(
        claims.video.room == room,
        f"this token administers room {claims.video.room!r}, not {room!r}",
    )


class RoomService:
    """The RoomService methods on top of the node's rooms."""

    def __init__(self, keys: Mapping[str, str], rooms: RoomManager) -> None:
        self.keys = keys
        self.rooms = rooms
        self.methods: dict[str, _Method] = {
            "CreateRoom": _Method(room_pb.CreateRoomRequest, self.create_room),
            "ListRooms": _Method(room_pb.ListRoomsRequest, self.list_rooms),
            "DeleteRoom": _Method(room_pb.DeleteRoomRequest, self.delete_room),
            "ListParticipants": _Method(room_pb.ListParticipantsRequest, self.list_participants),
            "GetParticipant": _Method(room_pb.RoomParticipantIdentity, self.get_participant),
            "RemoveParticipant": _Method(room_pb.RoomParticipantIdentity, self.remove_participant),
            "MutePublishedTrack": _Method(room_pb.MuteRoomTrackRequest, self.mute_published_track),
            "UpdateParticipant": _Method(room_pb.UpdateParticipantRequest, self.update_participant),
            "SendData": _Method(room_pb.SendDataRequest, self.send_data),
        }

    def _room(self, name: str) -> Room:
        if not name:
            raise TwirpError("invalid_argument", "name the room in the request's 'room' field")
        room = self.rooms.get(name)
        if room is None:
            raise TwirpError("not_found", f"room {name!r} does not exist")
        return room

    # ---- methods -------------------------------------------------------------

    async def create_room(self, request: room_pb.CreateRoomRequest, claims: Claims) -> Message:
        _require(claims.video.room_create, "this token has no roomCreate grant")
        if not request.name:
            raise TwirpError("invalid_argument", "CreateRoom needs a room 'name'")
        room = self.rooms.get_or_create(
            request.name,
            empty_timeout_s=int(request.empty_timeout) or 300,
            max_participants=int(request.max_participants),
            metadata=request.metadata,
        )
        log.info("< twirp CreateRoom room=%s", room.name)
        return translate.room_to_pb(room)

    async def list_rooms(self, request: room_pb.ListRoomsRequest, claims: Claims) -> Message:
        _require(claims.video.room_list, "this token has no roomList grant")
        wanted = set(request.names)
        return room_pb.ListRoomsResponse(
            rooms=[
                translate.room_to_pb(room)
                for room in self.rooms.rooms()
                if not wanted or room.name in wanted
            ]
        )

    async def delete_room(self, request: room_pb.DeleteRoomRequest, claims: Claims) -> Message:
        # livekit-api signs DeleteRoom with roomCreate; a room's admin may delete it too
        _require(
            claims.video.room_create
            or (claims.video.room_admin and claims.video.room == request.room),
            "deleting a room needs a roomCreate grant (or roomAdmin for that room)",
        )
        self._room(request.room)
        await self.rooms.delete(request.room)
        log.info("< twirp DeleteRoom room=%s", request.room)
        return room_pb.DeleteRoomResponse()

    async def list_participants(
        self, request: room_pb.ListParticipantsRequest, claims: Claims
    ) -> Message:
        _require_admin(claims, request.room)
        room = self._room(request.room)
        return room_pb.ListParticipantsResponse(
            participants=[translate.participant_to_pb(p) for p in room.participants()]
        )

    def _participant(self, room: Room, identity: str) -> ParticipantInfo:
        participant = room.participant(identity)
        if participant is None:
            raise TwirpError("not_found", f"no participant {identity!r} in room {room.name!r}")
        return participant

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
        track = room.mute_published_track(request.identity, request.track_sid, request.muted)
        if track is None:
            raise TwirpError(
                "not_found", f"{request.identity!r} publishes no track {request.track_sid!r}"
            )
        return room_pb.MuteRoomTrackResponse(track=translate.track_to_pb(track))

    async def update_participant(
        self, request: room_pb.UpdateParticipantRequest, claims: Claims
    ) -> Message:
        _require_admin(claims, request.room)
        room = self._room(request.room)
        current = self._participant(room, request.identity)
        attributes: dict[str, str] | None = None
        if request.attributes:
            # LiveKit semantics: given keys are set, an empty value deletes the key
            attributes = dict(current.attributes)
            for key, value in request.attributes.items():
                if value:
                    attributes[key] = value
                else:
                    attributes.pop(key, None)
        permission = None
        if request.HasField("permission"):
            permission = Permission(**translate.permission_kwargs_from_pb(request.permission))
        info = room.update_participant(
            request.identity,
            metadata=request.metadata or None,
            name=request.name or None,
            attributes=attributes,
            permission=permission,
        )
        if info is None:
            raise TwirpError("not_found", f"participant {request.identity!r} left meanwhile")
        return translate.participant_to_pb(info)

    async def send_data(self, request: room_pb.SendDataRequest, claims: Claims) -> Message:
        _require_admin(claims, request.room)
        room = self._room(request.room)
        destinations = list(request.destination_identities)
        if request.destination_sids:
            by_sid = {p.sid: p.identity for p in room.participants()}
            destinations.extend(by_sid[sid] for sid in request.destination_sids if sid in by_sid)
        kind = "lossy" if request.kind == models.DataPacket.Kind.LOSSY else "reliable"
        room.send_data(
            bytes(request.data),
            topic=request.topic,
            kind=kind,
            destination_identities=tuple(destinations),
        )
        return room_pb.SendDataResponse()

    # ---- HTTP ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        content_type = request.content_type
        as_json = content_type == "application/json"
        try:
            method = self.methods.get(name)
            if method is None:
                raise TwirpError("bad_route", f"RoomService has no method {name!r} here")
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
            body = await request.read()
            message = method.request()
            try:
                if as_json:
                    json_format.Parse(body or b"{}", message, ignore_unknown_fields=True)
                else:
                    message.ParseFromString(body)
            except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
                raise TwirpError(
                    "malformed", f"the {name} request body does not parse: {exc}"
                ) from None
            answer = await method.handler(message, claims)
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
    app: web.Application, keys: Mapping[str, str], rooms: RoomManager
) -> RoomService:
    """Serve RoomService on ``app`` for ``rooms``; tokens are checked against ``keys``."""
    service = RoomService(keys, rooms)
    app.router.add_post(PREFIX + "{method}", service.handle)
    return service
