"""Relay links: this relay joins a room of another LiveKit-compatible SFU as a
client, subscribes to what is published there, and shows it in a local room.

A link is one LiveKit client (protocol v0, ``/rtc``) of the remote SFU, with
one peer connection: the remote's subscriber connection, which the remote
offers and this relay answers. Locally that connection belongs to a hidden
single-connection session of the local room (``Room.join``), so every packet
takes the ordinary path: the native read loop, the layer, its cache, the
fan-out to every local subscriber. Each remote track crosses the link once,
however many local participants watch it.

Every remote participant appears locally as a *mirror*: a session of its own
identity (or one derived from it: ``mirror_identity``), name, metadata and
attributes (plus ``mediafed.relay_link``, the remote's URL), which shows the
remote tracks (``Session.announce_track`` with ``owner``) while the link's
connection carries them. Joins, leaves, publications and mutes on the remote
side are mirrored as they come in
``ParticipantUpdate`` messages, and what a remote participant broadcasts on the
data channels (chat, data streams, user packets) is relayed here as sent by its
mirror. Mirrors of other links, and this link's own
participant, are never pulled: a track published outward by a link is never
pulled back (no loops).

Toward the remote SFU the link behaves as a subscribing client: it answers
offers, keeps its signal connection alive with pings, asks for the tracks it
mirrors (``UpdateSubscription``), for each video at the layer the most
demanding local subscriber needs and not at all while nobody here watches it
(``UpdateTrackSettings``, checked every second), forwards the local
subscribers' keyframe requests and NACKs and sends transport-wide feedback,
so the remote's congestion control sees the link as any subscriber. If the
remote side is ICE-lite (another mediafed), the link's transport sends the
checks itself (``transport/ice.py``). When the signal connection closes or the
media connection fails, the mirrors leave and the link connects again after a
growing pause (1 s, doubling, at most 30 s), until it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from mediafed.errors import MediafedError
from mediafed.media import Permission, Room, RoomManager, Session, TrackKind, TrackSource, events
from mediafed.signal.livekit import translate

log = logging.getLogger(__name__)

LINK_ATTRIBUTE = "mediafed.relay_link"
"""Attribute of a mirrored participant: the URL of the SFU it is mirrored from."""
CLIENT_PROTOCOL = 15
"""The LiveKit signal protocol version the link speaks (v0 ``/rtc``, two connections
offered by the server, of which the link uses the subscriber's)."""
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
CONNECT_TIMEOUT_S = 15.0
MAX_SIGNAL_MESSAGE = 1 << 20
SETTINGS_EVERY_S = 1.0
"""How often the link matches what it asks of remote videos to the local subscribers."""


class LinkError(MediafedError):
    """The remote SFU refused the link or spoke out of protocol; the message says how."""


@dataclass(frozen=True, slots=True)
class LinkTarget:
    """Where a link goes: the remote SFU's URL (``ws(s)://`` or ``http(s)://``), an
    access token for its room, and the local room that shows what it carries."""

    url: str
    token: str
    room: str

    def rtc_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        if scheme not in ("ws", "wss") or not parts.netloc:
            raise LinkError(f"relay link URL {self.url!r} is not ws(s):// or http(s)://")
        query = urlencode(
            {
                "access_token": self.token,
                "auto_subscribe": "0",
                "protocol": str(CLIENT_PROTOCOL),
                "sdk": "unknown",
                "version": "mediafed-link",
            }
        )
        path = parts.path.rstrip("/") + "/rtc"
        return urlunsplit((scheme, parts.netloc, path, query, ""))


@dataclass
class LinkStatus:
    """What an operator sees of one link."""

    room: str
    url: str
    state: str = "connecting"
    """``connecting``, ``connected``, ``retrying`` or ``closed``."""
    connects: int = 0
    last_error: str = ""
    remote_participants: list[str] = field(default_factory=list)
    tracks: int = 0


class _Quiet:
    """The listener of mirror sessions: what the local room tells them is not
    anyone's business (the remote participant has its own connection there)."""

    def on_room_event(self, event: events.RoomEvent) -> None:
        return None

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        return None

    def on_local_candidate(
        self, target: str, candidate: str, sdp_mid: str, sdp_mline_index: int
    ) -> None:
        return None


Renew = Callable[[], Awaitable[LinkTarget]]
"""Asks for a fresh target (a new token) before each connection attempt."""


class RelayLink:
    """One link: a remote room pulled into a local one, reconnecting until closed.

    With ``renew``, the target is asked for again before every attempt (a
    MatrixRTC focus hands out tokens that expire; see :mod:`mediafed.matrix.rtc_links`)."""

    def __init__(
        self,
        rooms: RoomManager,
        target: LinkTarget,
        *,
        renew: Renew | None = None,
        mirror_identity: Callable[[str], str] = str,
    ) -> None:
        self.rooms = rooms
        self.target = target
        self.renew = renew
        self.mirror_identity = mirror_identity
        """The local identity of a remote participant's mirror (its own by default)."""
        self.status = LinkStatus(room=target.room, url=target.url)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._connection: _Connection | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.status.state = "closed"

    async def _run(self) -> None:
        pause = RETRY_FIRST_S
        while not self._closing:
            self.status.state = "connecting"
            if self.renew is not None:
                try:
                    self.target = await self.renew()
                    self.status.url = self.target.url
                except (TimeoutError, MediafedError, aiohttp.ClientError, OSError) as exc:
                    self.status.last_error = f"no token for the link: {exc}"
                    pause = await self._pause(pause)
                    continue
            connection = _Connection(self)
            self._connection = connection
            try:
                await connection.run()
                self.status.last_error = connection.ended_because
            except asyncio.CancelledError:
                await connection.close("link closed")
                raise
            except (TimeoutError, LinkError, aiohttp.ClientError, OSError) as exc:
                self.status.last_error = str(exc) or type(exc).__name__
            except Exception as exc:  # a bug: logged, and the link tries again
                log.exception("x relay link to %s failed", self.target.url)
                self.status.last_error = f"internal error: {exc}"
            await connection.close(self.status.last_error or "connection ended")
            self._connection = None
            if connection.was_connected:
                pause = RETRY_FIRST_S
            pause = await self._pause(pause)

    async def _pause(self, pause: float) -> float:
        """Wait before the next attempt; the pause after that one (doubled, capped)."""
        log.info(
            "x relay link room=%s to %s down (%s); again in %.0f s",
            self.target.room,
            self.target.url,
            self.status.last_error,
            pause,
        )
        self.status.state = "retrying"
        await asyncio.sleep(pause)
        return min(RETRY_MAX_S, pause * 2)


class _Connection:
    """One signal connection of a link and what hangs on it: the hidden local
    session that carries the media, and the mirrors."""

    def __init__(self, link: RelayLink) -> None:
        self.link = link
        self.target = link.target
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.http: aiohttp.ClientSession | None = None
        self.room: Room | None = None
        self.carrier: Session | None = None
        self.own_identity = ""
        self.mirrors: dict[str, Session] = {}
        """By remote participant sid."""
        self.remote_tracks: dict[str, set[str]] = {}
        """Remote track sids announced locally, by remote participant sid."""
        self.was_connected = False
        self.ended_because = ""
        self._ping_task: asyncio.Task[None] | None = None
        self._settings_task: asyncio.Task[None] | None = None
        self._settings: dict[str, tuple[bool, int]] = {}
        """What the link last asked of each remote video: (disabled, quality)."""
        self._lost = asyncio.Event()

    # -- the signal connection -------------------------------------------------------
    async def run(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        try:
            self.ws = await self.http.ws_connect(
                self.target.rtc_url(),
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                max_msg_size=MAX_SIGNAL_MESSAGE,
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise LinkError(
                f"the remote SFU refused the link: HTTP {exc.status} {exc.message}"
            ) from None
        first = await asyncio.wait_for(self._receive(), CONNECT_TIMEOUT_S)
        if first is None or first.WhichOneof("message") != "join":
            what = "nothing" if first is None else first.WhichOneof("message")
            raise LinkError(f"the remote SFU answered the join with {what}, not a JoinResponse")
        await self._joined(first.join)
        self.was_connected = True
        self.link.status.state = "connected"
        self.link.status.connects += 1
        reading = asyncio.ensure_future(self._read_loop())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait({reading, lost}, return_when=asyncio.FIRST_COMPLETED)
            if reading in done:
                reading.result()
        finally:
            for task in (reading, lost):
                task.cancel()

    async def _receive(self) -> rtc.SignalResponse | None:
        assert self.ws is not None
        while True:
            message = await self.ws.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                response = rtc.SignalResponse()
                try:
                    response.ParseFromString(message.data)
                except DecodeError as exc:
                    raise LinkError(
                        f"undecodable SignalResponse from the remote SFU: {exc}"
                    ) from None
                return response
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                self.ended_because = f"signal connection closed ({self.ws.close_code})"
                return None
            # text frames: LiveKit's JSON mode, which the link never asks for

    async def _read_loop(self) -> None:
        while True:
            response = await self._receive()
            if response is None:
                return
            await self._handle(response)

    async def _send(self, request: rtc.SignalRequest) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_bytes(request.SerializeToString())

    async def _ping_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            now_ms = int(time.time() * 1000)
            await self._send(rtc.SignalRequest(ping=now_ms))
            await self._send(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=now_ms)))

    async def _settings_loop(self) -> None:
        while True:
            await asyncio.sleep(SETTINGS_EVERY_S)
            await self._follow_subscribers()

    async def _follow_subscribers(self) -> None:
        """Ask the remote SFU for the layer the most demanding local subscriber of
        each remote video needs, and for nothing while nobody here watches it."""
        for mirror in list(self.mirrors.values()):
            for track in list(mirror.published.values()):
                if track.kind is not TrackKind.VIDEO or track.closed:
                    continue
                watching = [d for d in track.downtracks.values() if d.negotiated and not d.disabled]
                wanted = (
                    (False, min(max(d.max_quality for d in watching), models.VideoQuality.HIGH))
                    if watching
                    else (True, models.VideoQuality.HIGH)
                )
                remote_sid = track.info.cid
                if self._settings.get(remote_sid, (False, models.VideoQuality.HIGH)) == wanted:
                    continue
                self._settings[remote_sid] = wanted
                disabled, quality = wanted
                await self._send(
                    rtc.SignalRequest(
                        track_setting=rtc.UpdateTrackSettings(
                            track_sids=[remote_sid],
                            disabled=disabled,
                            quality=cast(models.VideoQuality, quality),
                        )
                    )
                )

    async def close(self, reason: str) -> None:
        for task in (self._ping_task, self._settings_task):
            if task is not None:
                task.cancel()
        self._ping_task = self._settings_task = None
        for mirror in list(self.mirrors.values()):
            await mirror.leave("relay link down")
        self.mirrors.clear()
        if self.carrier is not None:
            await self.carrier.leave(reason)
            self.carrier = None
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(Exception):
                leave = rtc.LeaveRequest(reason=models.DisconnectReason.CLIENT_INITIATED)
                await self._send(rtc.SignalRequest(leave=leave))
                await self.ws.close()
        if self.http is not None:
            await self.http.close()
            self.http = None
        self.link.status.remote_participants = []
        self.link.status.tracks = 0

    # -- the local side ------------------------------------------------------------
    async def _joined(self, join: rtc.JoinResponse) -> None:
        self.own_identity = join.participant.identity
        self.room = self.link.rooms.get_or_create(self.target.room)
        host = urlsplit(self.target.url).netloc
        self.carrier = await _join(
            self.room,
            f"relay-link:{host}:{join.participant.sid}",
            _Carrier(self),
        )
        self.carrier.publishing.announced_only = True
        interval = join.ping_interval or 10
        loop = asyncio.get_running_loop()
        self._ping_task = loop.create_task(self._ping_loop(interval))
        self._settings_task = loop.create_task(self._settings_loop())
        log.info(
            "- relay link room=%s joined %s at %s as %s",
            self.target.room,
            join.room.name,
            self.target.url,
            self.own_identity,
        )
        for participant in join.other_participants:
            await self._mirror(participant)

    def on_transport_failed(self) -> None:
        self.ended_because = "the media connection to the remote SFU failed"
        self._lost.set()

    async def _handle(self, response: rtc.SignalResponse) -> None:
        kind = response.WhichOneof("message")
        carrier = self.carrier
        if carrier is None:
            return
        if kind == "offer":
            answer = await carrier.answer_offer(response.offer.sdp)
            await self._send(
                rtc.SignalRequest(
                    answer=rtc.SessionDescription(type="answer", sdp=answer, id=response.offer.id)
                )
            )
        elif kind == "trickle":
            candidate = translate.candidate_from_init(response.trickle.candidateInit)
            if candidate:
                carrier.add_remote_candidate("subscriber", candidate)
        elif kind == "update":
            for participant in response.update.participants:
                await self._mirror(participant)
        elif kind == "track_unpublished":
            self._drop_track(response.track_unpublished.track_sid, "unpublished remotely")
        elif kind == "leave":
            self.ended_because = (
                "the remote SFU asked the link to leave "
                f"({models.DisconnectReason.Name(response.leave.reason)})"
            )
            self._lost.set()
        elif kind == "refresh_token":
            self.link.target = LinkTarget(self.target.url, response.refresh_token, self.target.room)
        # the rest (speakers, quality, pongs, room updates) the local room works out itself

    # -- mirrors -------------------------------------------------------------------
    def _pulled(self, participant: models.ParticipantInfo) -> bool:
        """Whether ``participant`` is mirrored: not the link itself, not another
        link's mirror or carrier, and not someone who only watches there (a remote
        MatrixRTC member publishes on its own SFU, not on this one)."""
        if (
            participant.identity == self.own_identity
            or LINK_ATTRIBUTE in participant.attributes
            or participant.identity.startswith("relay-link:")
        ):
            return False
        watches_only = participant.HasField("permission") and not participant.permission.can_publish
        return not watches_only or bool(participant.tracks)

    async def _mirror(self, participant: models.ParticipantInfo) -> None:
        if not self._pulled(participant):
            return
        sid = participant.sid
        mirror = self.mirrors.get(sid)
        if participant.state == models.ParticipantInfo.State.DISCONNECTED:
            await self._unmirror(sid)
            return
        room = self.room
        carrier = self.carrier
        assert room is not None and carrier is not None
        attributes = dict(participant.attributes)
        attributes[LINK_ATTRIBUTE] = self.target.url
        if mirror is None or mirror.closed:
            identity = self.link.mirror_identity(participant.identity)
            existing = room.sessions.get(identity)
            if existing is not None:
                log.info(
                    "x relay link room=%s: %s is here already; not mirrored",
                    self.target.room,
                    identity,
                )
                return
            mirror = await _join(
                room,
                identity,
                _Quiet(),
                name=participant.name,
                metadata=participant.metadata,
                attributes=attributes,
            )
            if identity != participant.identity:
                mirror.echo_of = participant.identity  # their client here gets none of it
            self.mirrors[sid] = mirror
            self.remote_tracks[sid] = set()
        else:
            info = mirror.info()
            if (info.name, info.metadata, dict(info.attributes)) != (
                participant.name,
                participant.metadata,
                attributes,
            ):
                removed = {key: "" for key in info.attributes if key not in attributes}
                mirror.update_metadata(
                    name=participant.name,
                    metadata=participant.metadata,
                    attributes={**removed, **attributes},
                )
        known = self.remote_tracks[sid]
        listed = {track.sid: track for track in participant.tracks}
        for track_sid in known - set(listed):
            self._drop_track(track_sid, "no longer published remotely")
        wanted = []
        for track_sid, track in listed.items():
            if track_sid in known:
                self._mute(mirror, track_sid, track.muted)
                continue
            if track.type not in (models.TrackType.AUDIO, models.TrackType.VIDEO):
                continue
            kind = TrackKind.AUDIO if track.type == models.TrackType.AUDIO else TrackKind.VIDEO
            try:
                source = TrackSource(translate.source_from_pb(track.source))
            except ValueError:
                source = TrackSource.UNKNOWN
            carrier.announce_track(
                track_sid,
                kind,
                source=source,
                name=track.name,
                width=track.width,
                height=track.height,
                muted=track.muted,
                stream=track.stream,
                owner=mirror,
            )
            known.add(track_sid)
            wanted.append(track_sid)
        self._update_status()
        if wanted:
            await self._subscribe(wanted)

    async def _subscribe(self, track_sids: list[str]) -> None:
        await self._send(
            rtc.SignalRequest(
                subscription=rtc.UpdateSubscription(track_sids=track_sids, subscribe=True)
            )
        )
        # the highest layer: the local subscribers each get what their own link allows
        await self._send(
            rtc.SignalRequest(
                track_setting=rtc.UpdateTrackSettings(
                    track_sids=track_sids, disabled=False, quality=models.VideoQuality.HIGH
                )
            )
        )

    def _mute(self, mirror: Session, remote_sid: str, muted: bool) -> None:
        carrier = self.carrier
        assert carrier is not None
        for track in mirror.published.values():
            if track.info.cid == remote_sid:
                if track.muted != muted:
                    mirror.mute(track.sid, muted)
                return
        carrier.publishing.mute_pending_cid(remote_sid, muted)

    def _drop_track(self, remote_sid: str, reason: str) -> None:
        carrier = self.carrier
        if carrier is None:
            return
        for sid, known in self.remote_tracks.items():
            if remote_sid not in known:
                continue
            known.discard(remote_sid)
            mirror = self.mirrors.get(sid)
            if mirror is not None:
                for track in list(mirror.published.values()):
                    if track.info.cid == remote_sid:
                        carrier.publishing.remove(track, reason)
            carrier.publishing.forget(remote_sid)
        self._update_status()

    async def _unmirror(self, sid: str) -> None:
        mirror = self.mirrors.pop(sid, None)
        for remote_sid in self.remote_tracks.pop(sid, set()):
            if self.carrier is not None:
                self.carrier.publishing.forget(remote_sid)
        self._update_status()
        if mirror is not None and not mirror.closed:
            await mirror.leave("left the remote room")

    def relay_data(self, label: str, data: bytes) -> None:
        packet = models.DataPacket()
        try:
            packet.ParseFromString(data)
        except DecodeError:
            log.info("x relay link room=%s: malformed DataPacket dropped", self.target.room)
            return
        sender = packet.participant_identity or packet.user.participant_identity
        identity = self.link.mirror_identity(sender)
        mirror = next(
            (m for m in self.mirrors.values() if m.identity == identity and not m.closed), None
        )
        if mirror is None:
            return  # from nobody mirrored here (the remote server, a hidden sender)
        relayed = translate.relayed_data_packet(
            packet, sender_sid=mirror.sid, sender_identity=mirror.identity, lossy=label == "_lossy"
        )
        if relayed is None or relayed.destination_identities or relayed.destination_sids:
            return  # only what the remote room broadcast: nobody here was addressed
        try:
            mirror.relay_packet(relayed.packet, protocol=translate.DATA_PROTOCOL, kind=relayed.kind)
        except MediafedError as exc:
            log.info("x relay link room=%s: data refused: %s", self.target.room, exc)

    def _update_status(self) -> None:
        status = self.link.status
        # the remote identities (a mirror's own may be derived from it)
        status.remote_participants = sorted(m.echo_of or m.identity for m in self.mirrors.values())
        status.tracks = sum(len(known) for known in self.remote_tracks.values())


class _Carrier:
    """The listener of the hidden session that carries the link's media."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    def on_room_event(self, event: events.RoomEvent) -> None:
        if isinstance(event, events.SessionClosed) and not self.connection._lost.is_set():
            self.connection.ended_because = f"the local link session closed ({event.reason})"
            self.connection._lost.set()

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        return None  # the link sends nothing back over this connection

    def on_data_message(self, role: str, label: str, data: bytes) -> None:
        """Data the remote SFU delivers to the link (a remote participant's broadcast:
        chat, data streams, user packets): relayed here as sent by its mirror."""
        self.connection.relay_data(label, data)

    def on_local_candidate(
        self, target: str, candidate: str, sdp_mid: str, sdp_mline_index: int
    ) -> None:
        return None  # ours are in the answer


async def _join(
    room: Room,
    identity: str,
    listener: _Quiet | _Carrier,
    *,
    name: str = "",
    metadata: str = "",
    attributes: Mapping[str, str] | None = None,
) -> Session:
    """A session of the link: the hidden carrier, or a mirror (receiving nothing)."""
    return await room.join(
        identity,
        name=name,
        metadata=metadata,
        attributes=attributes,
        permission=Permission(
            can_subscribe=False,
            can_publish_data=not identity.startswith("relay-link:"),  # mirrors relay data
            hidden=identity.startswith("relay-link:"),
        ),
        listener=listener,
        auto_subscribe=False,
        single_connection=True,
        own_port=identity.startswith("relay-link:"),
    )
