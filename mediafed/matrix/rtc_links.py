"""Relay links for MatrixRTC calls: pull in the tracks of members who publish elsewhere.

In a federated MatrixRTC call (MSC4195, Element Call's multi-SFU mode) every
member publishes on its own homeserver's SFU, named first in its membership's
``foci_preferred``, and the other members' clients subscribe there. Bridged
participants of this relay (Rocket.Chat users, classic ``m.call`` callers,
LiveKit SDK users) cannot: they only know this relay. So while a call's room
here holds at least one of them, this relay joins each remote SFU in use as a
LiveKit client, subscribe only (:class:`~mediafed.signal.livekit.link.RelayLink`),
and shows its publishers in the local room, once however many watch.

The link authenticates as Element Call does: an OpenID token of the bridge bot,
from this relay's homeserver, handed to the remote focus (``/sfu/get``, or
``/get_token`` when the focus has no legacy endpoint), which checks it with this
homeserver and answers a LiveKit URL and a subscribe-only token. A fresh token
is asked for before every connection attempt. Links close when the last bridged
participant leaves, or when no member publishes on that SFU any more.

Who counts as a MatrixRTC client here: a participant that joined with a token of
this relay's focus (:meth:`~mediafed.matrix.focus.FocusService.is_matrixrtc`).
Mirrors of remote participants and link connections never count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from mediafed.matrix.focus import room_call_alias
from mediafed.matrix.membership import MEMBERSHIP_EVENT_TYPES, ROOM_SLOT, CallMember, CallMembership
from mediafed.matrix.registration import Registration
from mediafed.media import Room, RoomManager, Session, events
from mediafed.signal.livekit.link import LINK_ATTRIBUTE, LinkError, LinkTarget, RelayLink

log = logging.getLogger(__name__)

LINK_DEVICE = "MEDIAFEDLINK"
"""The device id the bridge bot's links claim at remote foci."""
REVIEW_EVERY_S = 30.0
"""How often every call is looked at again (memberships expire without an event)."""
FOCUS_TIMEOUT_S = 15.0


def mirror_identity(identity: str, focus_url: str) -> str:
    """The local participant that shows a remote member's tracks (``identity`` on
    the SFU of ``focus_url``). Not the member's own identity: their client uses
    that one when it subscribes here (Element Call keeps a connection to every SFU
    in use, with one identity everywhere), and Element Call clients here must not
    match the copy to the member, whom they watch on the member's own SFU."""
    return f"{identity}~{urlsplit(focus_url).netloc}"


class OpenIDSource(Protocol):
    async def openid_token(self, user_id: str) -> Mapping[str, Any]:
        """``POST /_matrix/client/v3/user/{userId}/openid/request_token`` for ``user_id``."""
        ...


class AppServiceOpenID:
    """OpenID tokens of the bridge bot, through the appservice's API."""

    def __init__(self, service: Any) -> None:
        self._service = service

    async def openid_token(self, user_id: str) -> Mapping[str, Any]:
        from mautrix.api import Method, Path
        from mautrix.errors import MatrixRequestError

        try:
            token: Mapping[str, Any] = await self._service.intent.api.request(
                Method.POST, Path.v3.user[user_id].openid.request_token, {}
            )
        except MatrixRequestError as exc:
            raise LinkError(
                f"this homeserver gave the bridge bot no OpenID token: {exc.errcode} {exc.message}"
            ) from None
        return token


def member_focus_url(member: CallMember) -> str:
    """The SFU a member publishes on: its first preferred LiveKit focus."""
    for focus in member.foci_preferred:
        if focus.type == "livekit" and focus.livekit_service_url:
            return focus.livekit_service_url.rstrip("/")
    return ""


async def request_grant(
    http: aiohttp.ClientSession,
    focus_url: str,
    matrix_room: str,
    openid: Mapping[str, Any],
    user_id: str,
) -> tuple[str, str]:
    """The remote focus's answer for the bridge bot: ``(LiveKit URL, token)``."""
    legacy = {"room": matrix_room, "openid_token": dict(openid), "device_id": LINK_DEVICE}
    status, body = await _post(http, f"{focus_url}/sfu/get", legacy)
    if status == 404:
        newer = {
            "room_id": matrix_room,
            "slot_id": ROOM_SLOT,
            "openid_token": dict(openid),
            "member": {
                "id": LINK_DEVICE,
                "claimed_user_id": user_id,
                "claimed_device_id": LINK_DEVICE,
            },
        }
        status, body = await _post(http, f"{focus_url}/get_token", newer)
    if status != 200:
        raise LinkError(
            f"the focus at {focus_url} refused the link: HTTP {status} "
            f"{body.get('errcode', '')} {body.get('error', '')}".rstrip()
        )
    url, jwt = body.get("url"), body.get("jwt")
    if not isinstance(url, str) or not isinstance(jwt, str) or not url or not jwt:
        raise LinkError(f"the focus at {focus_url} answered without a url and a jwt")
    return url, jwt


async def _post(
    http: aiohttp.ClientSession, url: str, body: Mapping[str, Any]
) -> tuple[int, Mapping[str, Any]]:
    async with http.post(url, json=body) as response:
        try:
            data = await response.json(content_type=None)
        except ValueError:
            data = None
        return response.status, data if isinstance(data, dict) else {}


class RtcLinks:
    """Opens and closes the relay links of MatrixRTC calls as members and bridged
    participants come and go (fed room events by the appservice, room events by
    the room manager)."""

    def __init__(
        self,
        membership: CallMembership,
        registration: Registration,
        rooms: RoomManager,
        openid: OpenIDSource,
        *,
        focus_url: str,
        is_matrixrtc: Callable[[str], bool],
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.membership = membership
        self.registration = registration
        self.rooms = rooms
        self.openid = openid
        self.focus_url = focus_url.rstrip("/")
        self.is_matrixrtc = is_matrixrtc
        self.clock_ms = clock_ms
        self.links: dict[tuple[str, str], RelayLink] = {}
        """By (Matrix room, remote focus URL)."""
        self.matrix_room_of: dict[str, str] = {}
        """mediafed room (a call's) -> its Matrix room, for rooms with calls seen."""
        self._due: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._review: asyncio.Task[None] | None = None

    # -- inputs ----------------------------------------------------------------------
    def on_event(self, raw: Mapping[str, Any]) -> None:
        room_id = raw.get("room_id")
        if raw.get("type") not in MEMBERSHIP_EVENT_TYPES or not isinstance(room_id, str):
            return
        self.matrix_room_of[room_call_alias(room_id)] = room_id
        self._schedule(room_id)

    def observe(self, room: Room, event: events.RoomEvent) -> None:
        if not isinstance(event, (events.ParticipantJoined, events.ParticipantLeft)):
            return
        room_id = self.matrix_room_of.get(room.name)
        if room_id is not None:
            self._schedule(room_id)

    def _schedule(self, room_id: str) -> None:
        if room_id in self._due:
            return
        self._due.add(room_id)
        loop = asyncio.get_running_loop()
        loop.call_soon(self._reconcile, room_id)
        if self._review is None:
            self._review = loop.create_task(self._review_loop())

    async def _review_loop(self) -> None:
        while True:
            await asyncio.sleep(REVIEW_EVERY_S)
            for room_id in {*self.matrix_room_of.values(), *(key[0] for key in self.links)}:
                self._schedule(room_id)

    # -- decisions -------------------------------------------------------------------
    def bridged(self, session: Session) -> bool:
        """A local participant who is no MatrixRTC client (and no link's doing)."""
        if session.closed or session.permission.hidden:
            return False
        if LINK_ATTRIBUTE in session.info().attributes:
            return False
        return not self.is_matrixrtc(session.identity)

    def wanted(self, room_id: str) -> set[str]:
        """The remote SFUs the call of ``room_id`` needs links to."""
        room = self.rooms.get(room_call_alias(room_id))
        if room is None or not any(self.bridged(s) for s in list(room.sessions.values())):
            return set()
        urls = set()
        for member in self.membership.members(room_id, self.clock_ms(), ROOM_SLOT):
            if self.registration.is_ours(member.user_id):
                continue
            url = member_focus_url(member)
            if url and url != self.focus_url:
                urls.add(url)
        return urls

    def _reconcile(self, room_id: str) -> None:
        self._due.discard(room_id)
        wanted = self.wanted(room_id)
        for key in [k for k in self.links if k[0] == room_id and k[1] not in wanted]:
            link = self.links.pop(key)
            log.info("- MatrixRTC link room=%s to %s no longer needed", room_id, key[1])
            self._spawn(link.close())
        for url in wanted:
            if (room_id, url) not in self.links:
                self._open(room_id, url)

    def _open(self, room_id: str, focus_url: str) -> None:
        alias = room_call_alias(room_id)
        bot = self.registration.bot_user_id

        async def renew() -> LinkTarget:
            token = await self.openid.openid_token(bot)
            if self._http is None:
                self._http = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=FOCUS_TIMEOUT_S)
                )
            url, jwt = await request_grant(self._http, focus_url, room_id, token, bot)
            return LinkTarget(url, jwt, alias)

        log.info("- MatrixRTC link room=%s to the SFU of focus %s", room_id, focus_url)
        link = RelayLink(
            self.rooms,
            LinkTarget(focus_url, "", alias),
            renew=renew,
            mirror_identity=lambda identity: mirror_identity(identity, focus_url),
        )
        self.links[(room_id, focus_url)] = link
        link.start()

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._review is not None:
            self._review.cancel()
            self._review = None
        links, self.links = list(self.links.values()), {}
        for link in links:
            await link.close()
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        if self._http is not None:
            await self._http.close()
            self._http = None
