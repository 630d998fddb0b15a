"""Twirp's wire protocol for LiveKit's RoomService: routes, request messages, errors.

Twirp v7 (twitchtv/twirp ``PROTOCOL.md``): ``POST /twirp/livekit.RoomService/<Method>``
with the request message as protobuf (``application/protobuf``) or its JSON
mapping (``application/json``); errors are JSON ``{"code", "msg"}`` with the HTTP
status Twirp assigns to the code. The service itself is :mod:`.twirp`; a node's
supervisor (:mod:`mediafed.cluster.proxy`) routes requests by the room they name
with this module alone.
"""

from __future__ import annotations

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import room as room_pb

from mediafed.signal.livekit.auth import CORS_HEADERS

PREFIX = "/twirp/livekit.RoomService/"
_STATUS = {
    # Twirp's code -> HTTP status table (PROTOCOL.md, "Error Codes")
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}
REQUESTS: dict[str, type[Message]] = {
    "CreateRoom": room_pb.CreateRoomRequest,
    "ListRooms": room_pb.ListRoomsRequest,
    "DeleteRoom": room_pb.DeleteRoomRequest,
    "ListParticipants": room_pb.ListParticipantsRequest,
    "GetParticipant": room_pb.RoomParticipantIdentity,
    "RemoveParticipant": room_pb.RoomParticipantIdentity,
    "MutePublishedTrack": room_pb.MuteRoomTrackRequest,
    "UpdateParticipant": room_pb.UpdateParticipantRequest,
    "UpdateSubscriptions": room_pb.UpdateSubscriptionsRequest,
    "SendData": room_pb.SendDataRequest,
    "UpdateRoomMetadata": room_pb.UpdateRoomMetadataRequest,
    "ForwardParticipant": room_pb.ForwardParticipantRequest,
    "MoveParticipant": room_pb.MoveParticipantRequest,
    "PerformRpc": room_pb.PerformRpcRequest,
}
"""Method -> its request message; every one but ListRooms names one room
(``name`` in CreateRoom, ``room`` in the others)."""


def parse_request(name: str, body: bytes, *, as_json: bool) -> Message:
    """The request message of method ``name``, or TwirpError (``bad_route``, ``malformed``)."""
    kind = REQUESTS.get(name)
    if kind is None:
        raise TwirpError("bad_route", f"RoomService has no method {name!r}")
    message = kind()
    try:
        if as_json:
            json_format.Parse(body or b"{}", message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
        raise TwirpError("malformed", f"the {name} request body does not parse: {exc}") from None
    return message


def room_of(name: str, message: Message) -> str:
    """The room a RoomService request names ("" for ListRooms)."""
    field = "name" if name == "CreateRoom" else "room"
    return str(getattr(message, field, ""))


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
