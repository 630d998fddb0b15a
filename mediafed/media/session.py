"""The in-process session API: one participant's connection to a room.

Every front-end (LiveKit signaling, the Matrix bridge, federation trunks)
drives the room core through this API and nothing else::

    room = rooms.get_or_create("standup")
    session = await room.join("alice", name="Alice", listener=my_listener)
    # answer the client's join (room.participants()), then:
    session.start_subscriber()
    # publisher connection: the client offers, we answer (receive only)
    session.announce_track(cid, TrackKind.VIDEO, source=TrackSource.CAMERA)  # optional
    answer_sdp = await session.answer_publisher_offer(offer_sdp)
    # subscriber connection: we offer through listener.on_subscriber_offer(sdp, offer_id)
    await session.accept_subscriber_answer(answer_sdp, offer_id)
    session.set_subscribed(track_sid, False)
    session.mute(track_sid, True)
    await session.leave()

Events (participants and tracks coming and going, mutes, speakers, data)
reach ``listener.on_room_event``; see :mod:`mediafed.media.events`. Offers
for the subscriber connection are serialized: one outstanding at a time,
changes made meanwhile are folded into the next one.

Both connections are ICE-lite with host candidates in the SDP, so remote
trickle candidates are accepted and not needed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from mediafed.errors import AuthError, LocalProtocolError, NegotiationError
from mediafed.media import events, limits, negotiation, quality
from mediafed.media.downlink import Downlink
from mediafed.media.downtrack import DownTrack
from mediafed.media.peer import MediaPeer
from mediafed.media.permissions import SubscriptionPermission
from mediafed.media.publishing import Publishing
from mediafed.media.subscribing import LOSSY_LABEL, RELIABLE_LABEL, Subscribing
from mediafed.media.track import PublishedTrack
from mediafed.media.types import (
    LayerInfo,
    ParticipantInfo,
    PeerRole,
    Permission,
    TrackInfo,
    TrackKind,
    TrackSource,
    new_sid,
)
from mediafed.transport.endpoint import EndpointState
from mediafed.wire import rtp
from mediafed.wire.sdp import SessionDescription, serialize_sdp

if TYPE_CHECKING:
    from mediafed.media.room import Room

log = logging.getLogger(__name__)


class SessionListener(Protocol):
    def on_room_event(self, event: events.RoomEvent) -> None:
        """Called on the event loop; must not block."""

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        """A new offer for the subscriber connection; send it to the client."""

    def on_local_candidate(
        self, target: str, candidate: str, sdp_mid: str, sdp_mline_index: int
    ) -> None:
        """A local ICE candidate (ICE-lite puts them in the SDP; rarely called)."""


class SectionsListener(Protocol):
    """Listener method of answer-only sessions (LiveKit ``/rtc/v1``)."""

    def on_media_sections_requirement(self, audios: int, videos: int) -> None:
        """Ask the client for an offer with this many more receive-only audio and video
        sections (0 and 0: an offer all the same, carrying what changed)."""


class DataMessageListener(Protocol):
    """Optional listener method: raw data-channel messages from the client."""

    def on_data_message(self, target: str, label: str, data: bytes) -> None:
        """A message on data channel ``label`` of the ``target`` connection."""


class Session:
    """One participant: a publisher and a subscriber connection, tracks both ways.

    What it publishes is kept by :attr:`publishing` (media/publishing.py), what
    it receives by :attr:`subscribing` (media/subscribing.py), its downlink's
    estimate and layer choice by :attr:`downlink` (media/downlink.py); the
    session itself is the participant (identity, permission, metadata, data,
    connection quality) and the API front-ends call.
    """

    def __init__(
        self,
        room: Room,
        identity: str,
        *,
        name: str,
        metadata: str,
        attributes: Mapping[str, str],
        permission: Permission,
        listener: SessionListener,
        auto_subscribe: bool,
        single_connection: bool = False,
        answer_only: bool = False,
        own_port: bool = False,
    ) -> None:
        self.room = room
        self.identity = identity
        self.sid = new_sid("PA_")
        self.label = f"room={room.name} participant={identity}"
        self.listener = listener
        self.auto_subscribe = auto_subscribe
        self._name = name
        self._metadata = metadata
        self._attributes = dict(attributes)
        self._permission = permission
        self._version = 1
        self._state = "joined"
        self.joined_at = time.time()
        self.closed = False
        self.single = single_connection or answer_only
        self.echo_of = ""
        """A relay link's copy of a remote participant whose own client may join here
        too (multi-SFU MatrixRTC): that identity; it is never sent these tracks."""
        self.answer_only = answer_only
        """One connection on which only the client offers (LiveKit's ``/rtc/v1``): when
        tracks need sections we ask for them (``on_media_sections_requirement``)."""
        self.own_port = own_port
        """Its connections have a UDP port of their own (``Room.join``)."""
        self._quality = quality.QualityScorer()
        self._data_packets = limits.TokenBucket(limits.DATA_PACKETS_PER_S, limits.DATA_PACKET_BURST)
        self._data_bytes = limits.TokenBucket(limits.DATA_BYTES_PER_S, limits.DATA_BYTE_BURST)
        self.publisher = MediaPeer(self, PeerRole.PUBLISHER)
        # One connection both ways (classic Matrix calls) or LiveKit's two.
        self.subscriber = self.publisher if self.single else MediaPeer(self, PeerRole.SUBSCRIBER)
        self.sdp_session_id = negotiation.new_session_id()
        self.publishing = Publishing(self)
        self.subscribing = Subscribing(self)
        self.downlink = Downlink(self)
        self._removal: asyncio.Task[None] | None = None
        self._withheld: frozenset[str] = frozenset()
        """Tracks wanted while subscribing is not permitted: subscribed once it is."""

    # -- info -----------------------------------------------------------------
    def info(self) -> ParticipantInfo:
        return ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            name=self._name,
            metadata=self._metadata,
            attributes=dict(self._attributes),
            joined_at=self.joined_at,
            version=self._version,
            state="disconnected" if self.closed else self._state,
            permission=self._permission,
            hidden=self._permission.hidden,
            tracks=tuple(track.info for track in self.published.values()),
            is_publisher=bool(self.published),
        )

    @property
    def permission(self) -> Permission:
        return self._permission

    @property
    def published(self) -> dict[str, PublishedTrack]:
        return self.publishing.published

    @property
    def pending(self) -> dict[str, TrackInfo]:
        return self.publishing.pending

    @property
    def downtracks(self) -> dict[str, DownTrack]:
        return self.subscribing.downtracks

    @property
    def unsubscribed(self) -> set[str]:
        return self.subscribing.unsubscribed

    def bump_version(self) -> None:
        """The participant's info changed (a track came or went): a new version."""
        self._version += 1

    def _changed(self) -> None:
        self._version += 1
        self.room.broadcast(events.ParticipantUpdated(self.info()))

    def update_metadata(
        self,
        *,
        metadata: str | None = None,
        name: str | None = None,
        attributes: Mapping[str, str] | None = None,
        permission: Permission | None = None,
    ) -> ParticipantInfo:
        if metadata is not None:
            self._metadata = metadata
        if name is not None:
            self._name = name
        if attributes is not None:
            merged = dict(self._attributes)
            for key, value in attributes.items():
                if value == "":
                    merged.pop(key, None)
                else:
                    merged[key] = value
            self._attributes = merged
        if permission is not None:
            self._permission = permission
            self._apply_permission()
        self._changed()
        return self.info()

    def _apply_permission(self) -> None:
        """A changed permission takes effect at once, as LiveKit's does: tracks it no
        longer allows are unpublished (and the client told); without ``can_subscribe``
        nothing is received, and with it again what was received (or, auto-subscribing,
        the room's tracks) comes back."""
        permission = self._permission
        for track in list(self.published.values()):
            if not permission.may_publish(track.info.source):
                info = track.info
                self.publishing.remove(track, "publishing no longer permitted")
                # the room tells the others; the publisher learns it here
                self.listener.on_room_event(events.TrackUnpublished(info))
        if not permission.can_subscribe:
            self._withheld = self._withheld | frozenset(self.downtracks)
            for track_sid in list(self.downtracks):
                self.subscribing.unsubscribe(track_sid)
            return
        withheld, self._withheld = self._withheld, frozenset()
        for track in list(self.room.tracks.values()):
            if track.sid in withheld or (
                self.auto_subscribe and track.sid not in self.unsubscribed
            ):
                self.subscribe(track)

    # -- publishing (media/publishing.py) ---------------------------------------
    def announce_track(
        self,
        cid: str,
        kind: TrackKind,
        *,
        source: TrackSource = TrackSource.UNKNOWN,
        name: str = "",
        width: int = 0,
        height: int = 0,
        muted: bool = False,
        layers: Sequence[LayerInfo] = (),
        encryption: int = 0,
        stream: str = "",
        trailer_features: tuple[int, ...] = (),
        codec: str = "",
        owner: Session | None = None,
    ) -> TrackInfo:
        """Declare a track before the offer that carries it (LiveKit's AddTrackRequest);
        ``codec``, the MIME type the client sends it in, is preferred in the answer.
        A relay link names the mirrored participant that shows it (``owner``)."""
        self._check_open()
        return self.publishing.announce(
            cid,
            kind,
            source=source,
            name=name,
            width=width,
            height=height,
            muted=muted,
            layers=layers,
            encryption=encryption,
            stream=stream,
            trailer_features=trailer_features,
            codec=codec,
            owner=owner,
        )

    async def answer_publisher_offer(self, sdp: str) -> str:
        """Apply the client's offer for its publisher connection; our answer."""
        self._check_open()
        return self.publishing.answer(negotiation.parse(sdp, "publisher offer"))

    def unpublish(self, track_sid: str) -> None:
        self.publishing.remove(self.publishing.track(track_sid), "unpublished")

    def mute(self, track_sid: str, muted: bool) -> TrackInfo:
        return self.publishing.mute(track_sid, muted)

    # -- subscribing (media/subscribing.py) -------------------------------------
    def set_subscribed(self, track_sid: str, subscribed: bool) -> None:
        self._check_open()
        if not self._permission.can_subscribe and track_sid in self.room.tracks:
            # kept for when subscribing is permitted again
            if subscribed:
                self._withheld = self._withheld | {track_sid}
            else:
                self._withheld = self._withheld - {track_sid}
        self.subscribing.set_subscribed(track_sid, subscribed)

    def subscribe(self, track: PublishedTrack) -> None:
        self.subscribing.subscribe(track)

    def unsubscribe(self, track_sid: str) -> None:
        self.subscribing.unsubscribe(track_sid)

    def set_subscription_permission(self, permission: SubscriptionPermission) -> None:
        """Who may subscribe to this participant's tracks (media/permissions.py):
        subscribers no longer allowed lose them, those allowed again get them back."""
        self._check_open()
        self.room.set_subscription_permission(self, permission)

    def update_track_settings(
        self,
        track_sid: str,
        *,
        disabled: bool = False,
        quality: int = 2,
        width: int = 0,
        height: int = 0,
        fps: int = 0,
    ) -> None:
        """A subscriber's wishes for one track: off, a quality, or a display size
        (the lowest layer covering it), and a frame rate (0: all; VP9 SVC temporal
        layers, media/downtrack.py)."""
        self.subscribing.update_track_settings(
            track_sid, disabled=disabled, quality=quality, width=width, height=height, fps=fps
        )

    def start_subscriber(self) -> None:
        """The front-end answered the join: send the first subscriber offer (data
        channel and the room's tracks). Single-connection sessions wait for the
        client's offer instead."""
        if not self.single:
            self.subscribing.started = True
            self.subscribing.negotiate()

    async def accept_subscriber_answer(self, sdp: str, offer_id: int) -> None:
        self._check_open()
        self.subscribing.accept_answer(sdp, offer_id)

    def withdraw_subscriber_offer(self, offer_id: int) -> bool:
        """Give up on an offer the client never answered (its lifetime ran out)."""
        return self.subscribing.withdraw_offer(offer_id)

    def stream_metadata(self) -> dict[str, dict[str, object]]:
        """What we send, by msid stream id: Matrix ``sdp_stream_metadata``."""
        return self.subscribing.stream_metadata()

    def sending_tracks(self) -> dict[str, str]:
        """Single connection: the track sid we send on each mid of our last answer
        (LiveKit's ``mid_to_track_id``)."""
        return self.subscribing.sending_tracks()

    # -- one connection both ways ---------------------------------------------
    async def answer_offer(self, sdp: str) -> str:
        """Single-connection sessions: answer the client's offer (first or renegotiation).

        What the client sends is published; room tracks go out on the sections
        the client lets us send on (sendrecv/recvonly). Tracks that find no
        section come in a later offer through ``listener.on_subscriber_offer``,
        which may be called as soon as this returns: send this answer first.
        """
        self._check_open()
        if not self.single:
            raise LocalProtocolError(
                "answer_offer is for single-connection sessions; use answer_publisher_offer"
            )
        offer = negotiation.parse(sdp, "offer")
        local_setup = self.configure_remote(self.publisher, offer, "offer")
        self.publisher.endpoint.target.set_twcc(
            negotiation.extension_id(offer, rtp.URI_TRANSPORT_CC)
        )
        send_slots = self.subscribing.take_client_offer(offer)
        self.publishing.sdp_version += 1
        answer, accepted = negotiation.answer_offer(
            offer,
            self.local_transport(self.publisher, local_setup),
            session_id=self.sdp_session_id,
            version=self.publishing.sdp_version + self.subscribing.sdp_version,
            send_slots=send_slots,
            preferred=self.publishing.preferred_codecs(),
        )
        answer.ice_lite = not self.publisher.endpoint.ice.controlling
        refused = self.publishing.apply(accepted)
        application = next(
            (m for m in offer.media if m.kind == "application" and m.port != 0), None
        )
        if application is not None:
            # the client opens its data channels on this connection; ours go there too
            self.publisher.endpoint.enable_data_channels(application.sctp_port)
        for section in answer.media:
            if section.mid in refused:
                section.direction = "sendonly" if section.direction == "sendrecv" else "inactive"
                section.rids = []
                section.simulcast = None
        self.subscribing.answered(answer)
        return serialize_sdp(answer)

    def offer_connection(self, receive: Sequence[str] = ("audio", "video")) -> str:
        """Single-connection sessions: our offer opening the connection, for when we
        call the client (a classic Matrix call placed by the bridge). It receives one
        stream of each kind in ``receive`` and sends the room's tracks; the client's
        answer goes to :meth:`accept_connection_answer`, later offers go both ways as
        after :meth:`answer_offer`."""
        self._check_open()
        if not self.single or self.answer_only or self.subscribing.last_local is not None:
            raise LocalProtocolError(
                "offer_connection opens a single connection, once, before any offer"
            )
        offer = self.subscribing.opening_offer(
            tuple(receive), self.local_transport(self.publisher, "actpass")
        )
        return serialize_sdp(offer)

    async def accept_connection_answer(self, sdp: str) -> None:
        """The client's answer to :meth:`offer_connection`: what it sends is published,
        the room's tracks go out where it receives them."""
        self._check_open()
        answer = negotiation.parse(sdp, "answer")
        ufrag, pwd, fingerprints, setup = negotiation.remote_transport(answer, "answer")
        if setup == "actpass":
            raise NegotiationError(
                "answer says a=setup:actpass; an answer must choose active or passive"
            )
        offer = self.subscribing.opened(answer)
        endpoint = self.publisher.endpoint
        endpoint.configure_remote(ufrag, pwd, fingerprints, setup)
        endpoint.target.set_twcc(negotiation.extension_id(answer, rtp.URI_TRANSPORT_CC))
        self.publishing.apply(negotiation.answered_media(offer, answer))

    # -- transport --------------------------------------------------------------
    def configure_remote(self, peer: MediaPeer, offer: SessionDescription, what: str) -> str:
        """The client's transport from its offer (a new ufrag restarts ICE on our
        side too, RFC 8445 §9); our DTLS role for the answer."""
        ufrag, pwd, fingerprints, setup = negotiation.remote_transport(offer, what)
        endpoint = peer.endpoint
        if endpoint.ice.remote_ufrag and ufrag != endpoint.ice.remote_ufrag:
            endpoint.restart_ice()
        local_setup = endpoint.configure_remote(ufrag, pwd, fingerprints, setup)
        if offer.ice_lite:
            # another lite SFU offering (a relay link): we must send the checks
            endpoint.control()
            for media in offer.media:
                for candidate in media.candidates:
                    endpoint.add_remote_candidate(candidate)
        return local_setup

    def local_transport(self, peer: MediaPeer, setup: str) -> negotiation.LocalTransport:
        endpoint = peer.endpoint
        return negotiation.LocalTransport(
            ufrag=endpoint.ice.local_ufrag,
            pwd=endpoint.ice.local_pwd,
            fingerprint=endpoint.certificate.fingerprint(),
            setup=setup,
            candidates=tuple(endpoint.local_candidates()),
        )

    def local_candidates(self) -> list[tuple[str, str, int]]:
        """(candidate, sdpMid, sdpMLineIndex) of our last local description's first section."""
        description = self.subscribing.last_local
        mid = "0"
        if description is not None and description.media:
            mid = description.media[0].mid or "0"
        return [(line, mid, 0) for line in self.publisher.endpoint.local_candidates()]

    def add_remote_candidate(self, target: str, candidate: str) -> None:
        """Trickled remote candidates: ICE-lite learns addresses from checks instead,
        unless the remote is lite too (a relay link), and we check them."""
        if target not in ("publisher", "subscriber"):
            raise LocalProtocolError(f"unknown candidate target {target!r}")
        peer = self.publisher if target == "publisher" else self.subscriber
        peer.endpoint.add_remote_candidate(candidate)

    async def restart_ice(self) -> None:
        self.subscriber.endpoint.restart_ice()
        self.subscribing.negotiate()

    # -- data --------------------------------------------------------------
    def send_data(
        self,
        payload: bytes,
        *,
        topic: str = "",
        kind: str = "reliable",
        destination_identities: Sequence[str] = (),
    ) -> None:
        """Send ``payload`` to the others in the room (or those named): ``events.DataReceived``."""
        if not self._admit_data(len(payload)):
            return
        self.room.send_data(
            payload,
            topic=topic,
            kind=kind,
            destination_identities=destination_identities,
            sender=self.identity,
        )

    def relay_packet(
        self,
        packet: bytes,
        *,
        protocol: str,
        kind: str = "reliable",
        destination_identities: Sequence[str] = (),
    ) -> None:
        """Relay a data packet in the front-end's own ``protocol`` as it is to the others
        (or those named): ``events.PacketRelayed``. The front-end has asserted this
        participant as its sender; the grant and limits of :meth:`send_data` apply."""
        if not self._admit_data(len(packet)):
            return
        self.room.relay_packet(
            self,
            packet,
            protocol=protocol,
            kind=kind,
            destination_identities=destination_identities,
        )

    def _admit_data(self, size: int) -> bool:
        """Whether ``size`` bytes of data may go out now; over a limit they are dropped
        and counted. Raises AuthError if the token does not allow data at all."""
        if not self._permission.can_publish_data:
            raise AuthError(f"{self.identity} may not publish data; the token does not allow it")
        manager = self.room.manager
        if size > limits.MAX_DATA_BYTES:
            manager.drop(
                "data_size",
                self.label,
                f"data packet of {size} bytes is over {limits.MAX_DATA_BYTES}",
            )
            return False
        now = manager.clock()
        if not (self._data_packets.take(now) and self._data_bytes.take(now, size)):
            manager.drop("data_rate", self.label, "sends data faster than the limit")
            return False
        return True

    def send_data_message(self, kind: str, data: bytes) -> bool:
        """Send one message on the subscriber connection's ``_reliable`` or ``_lossy``
        channel (LiveKit clients listen there); False if the channel is not open."""
        channels = self.subscriber.endpoint.datachannels
        if channels is None:
            return False
        return channels.send(RELIABLE_LABEL if kind == "reliable" else LOSSY_LABEL, data)

    def on_channel_message(self, peer: MediaPeer, label: str, data: bytes) -> None:
        handler = getattr(self.listener, "on_data_message", None)
        if handler is not None:
            handler(peer.role.value, label, data)

    # -- quality ------------------------------------------------------------
    def connection_quality(self) -> quality.Quality:
        """How this participant's connection does (media/quality.py)."""
        return self._quality.quality

    def update_quality(self) -> None:
        """Timer work, once a second: one window of loss, jitter and round trip of the
        streams this participant sends and receives."""
        windows: list[quality.StreamWindow] = []
        rtt_ms = self.downlink.rtt_ms()
        for track in self.published.values():
            if track.muted:
                continue
            for layer in track.layers.values():
                expected, lost = layer.window()
                if expected > 0:
                    jitter_ms = layer.jitter * 1000.0 / layer.clock_rate
                    windows.append(
                        quality.StreamWindow(track.kind.value, expected, lost, jitter_ms, rtt_ms)
                    )
        for downtrack in self.downtracks.values():
            report, downtrack.report = downtrack.report, None
            if report is not None:
                fraction, jitter_ms = report
                windows.append(
                    quality.StreamWindow(
                        downtrack.track.kind.value, 256, fraction, jitter_ms, downtrack.rtt_ms
                    )
                )
        connected = all(
            peer.endpoint.state is EndpointState.CONNECTED
            for peer in {self.publisher, self.subscriber}
            if peer.endpoint.ice.remote_ufrag  # a connection the client has set up
        )
        self._quality.update(windows, connected=connected)

    # -- lifecycle ------------------------------------------------------------
    def on_transport_state(self, peer: MediaPeer, state: EndpointState) -> None:
        if state is EndpointState.CONNECTED:
            if self._state != "active":
                self._state = "active"
                self._changed()
            if peer is self.subscriber:
                now = self.room.manager.clock()
                for downtrack in self.downtracks.values():
                    if downtrack.negotiated:
                        # forwarding starts now (DownTrack.select_layer), on a keyframe
                        # asked for at once even if another subscriber's request went
                        # out a moment ago
                        downtrack.select_layer(now)
                        downtrack.track.request_keyframe(now, soon=True)
        elif state in (EndpointState.FAILED, EndpointState.CLOSED) and not self.closed:
            # The peer vanished (consent expired) or closed DTLS: the session is over.
            what = "failed" if state is EndpointState.FAILED else "closed by the peer"
            self._removal = asyncio.get_running_loop().create_task(
                self.room.remove(self, f"{peer.role.value} connection {what}")
            )

    async def leave(self, reason: str = "client request") -> None:
        await self.room.remove(self, reason)

    def close(self, reason: str) -> None:
        """Called by the room: stop everything of this session."""
        if self.closed:
            return
        self.closed = True
        self.subscribing.close()
        self.publishing.close(reason)
        for peer in {self.publisher, self.subscriber}:
            self.room.manager.retire_endpoint(peer.endpoint)
        self.publisher.close()
        self.subscriber.close()
        self.listener.on_room_event(events.SessionClosed(reason))

    def _check_open(self) -> None:
        if self.closed:
            raise LocalProtocolError(f"session of {self.identity} has left the room")
