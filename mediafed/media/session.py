"""The in-process session API: one participant's connection to a room.

Every front-end (LiveKit signaling, the Matrix bridge, federation trunks)
drives the room core through this API and nothing else::

    room = rooms.get_or_create("standup")
    session = await room.join("alice", name="Alice", listener=my_listener)
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
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from mediafed.errors import AuthError, LocalProtocolError, NegotiationError
from mediafed.media import (
    allocation,
    bwe,
    codecs,
    events,
    limits,
    negotiation,
    probe,
    quality,
)
from mediafed.media.peer import MediaPeer
from mediafed.media.track import DownTrack, PublishedTrack
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
from mediafed.wire.rtcp import TransportCcFeedback
from mediafed.wire.sdp import Codec, SessionDescription, serialize_sdp

if TYPE_CHECKING:
    from mediafed.media.room import Room

log = logging.getLogger(__name__)

MAX_PENDING_TRACKS = 32
ALLOCATE_INTERVAL_S = 0.5
UPGRADE_HOLD_S = 2.0
ESTIMATE_STALE_S = 5.0
AUDIO_RESERVE_BPS = 64_000
SUBSCRIBER_START_BPS = 5_000_000
"""Until its feedback says otherwise, a subscriber's link is taken to carry the best
layers (a narrow one shows queueing within a second and is moved down)."""
MAX_PUBLISHED_TRACKS = 64
DATA_CHANNEL_MID = "0"
RELIABLE_LABEL = "_reliable"
LOSSY_LABEL = "_lossy"


class SessionListener(Protocol):
    def on_room_event(self, event: events.RoomEvent) -> None:
        """Called on the event loop; must not block."""

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        """A new offer for the subscriber connection; send it to the client."""

    def on_local_candidate(
        self, target: str, candidate: str, sdp_mid: str, sdp_mline_index: int
    ) -> None:
        """A local ICE candidate (ICE-lite puts them in the SDP; rarely called)."""


class DataMessageListener(Protocol):
    """Optional listener method: raw data-channel messages from the client."""

    def on_data_message(self, target: str, label: str, data: bytes) -> None:
        """A message on data channel ``label`` of the ``target`` connection."""


class Session:
    """One participant: a publisher and a subscriber connection, tracks both ways."""

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
        self.single = single_connection
        self._quality = quality.QualityScorer()
        self._data_packets = limits.TokenBucket(limits.DATA_PACKETS_PER_S, limits.DATA_PACKET_BURST)
        self._data_bytes = limits.TokenBucket(limits.DATA_BYTES_PER_S, limits.DATA_BYTE_BURST)
        self.publisher = MediaPeer(self, PeerRole.PUBLISHER)
        # One connection both ways (classic Matrix calls) or LiveKit's two.
        self.subscriber = (
            self.publisher if single_connection else MediaPeer(self, PeerRole.SUBSCRIBER)
        )
        self.pending: dict[str, TrackInfo] = {}
        self.published: dict[str, PublishedTrack] = {}
        self.downtracks: dict[str, DownTrack] = {}
        self.slots: list[negotiation.OutgoingSlot] = []
        self.slot_of: dict[str, negotiation.OutgoingSlot] = {}
        self.unsubscribed: set[str] = set()
        self._sdp_session_id = negotiation.new_session_id()
        self._sdp_version = 0
        self._offer_id = 0
        self._outstanding: int | None = None
        self._offered_slots: dict[str, negotiation.OutgoingSlot] = {}
        self._dirty = False
        self._offer_scheduled = False
        self._publisher_sdp_version = 0
        self._removal: asyncio.Task[None] | None = None
        self._last_local: SessionDescription | None = None
        self._pending_local: SessionDescription | None = None
        self.estimate_bps: int | None = None
        """The subscriber's REMB, for browsers without transport-wide feedback."""
        self._estimate_at = 0.0
        self._allocated_at = -1.0
        self.bwe = bwe.BandwidthEstimator(SUBSCRIBER_START_BPS)
        """Send-side estimate of this participant's downlink (transport-wide feedback)."""
        self._probe: probe.Probe | None = None
        self._probed_at = -probe.PROBE_INTERVAL_S
        self._cluster = 0

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

    def _changed(self) -> None:
        self._version += 1
        self.room.broadcast(events.ParticipantUpdated(self.info()))

    # -- publishing -----------------------------------------------------------
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
    ) -> TrackInfo:
        """Declare a track before the offer that carries it (LiveKit's AddTrackRequest)."""
        self._check_open()
        if not cid:
            raise LocalProtocolError("a track needs a client id (cid); use the SDP msid track id")
        if source is TrackSource.UNKNOWN:
            source = TrackSource.MICROPHONE if kind is TrackKind.AUDIO else TrackSource.CAMERA
        if not self._permission.may_publish(source):
            raise AuthError(
                f"{self.identity} may not publish {source.value}; "
                "the access token does not allow it"
            )
        if cid in self.pending or any(t.info.cid == cid for t in self.published.values()):
            raise LocalProtocolError(f"track cid {cid!r} is already announced")
        if len(self.pending) >= MAX_PENDING_TRACKS:
            raise LocalProtocolError(
                f"more than {MAX_PENDING_TRACKS} tracks announced but not negotiated; "
                "send the offer that carries them first"
            )
        info = TrackInfo(
            sid=new_sid("TR_"),
            cid=cid,
            participant_sid=self.sid,
            participant_identity=self.identity,
            kind=kind,
            source=source,
            name=name,
            muted=muted,
            width=width,
            height=height,
            simulcast=len(layers) > 1,
            layers=tuple(layers),
            encryption=encryption,
            stream=stream,
        )
        self.pending[cid] = info
        return info

    async def answer_publisher_offer(self, sdp: str) -> str:
        """Apply the client's offer for its publisher connection; our answer."""
        self._check_open()
        offer = negotiation.parse(sdp, "publisher offer")
        ufrag, pwd, fingerprints, setup = negotiation.remote_transport(offer, "publisher offer")
        endpoint = self.publisher.endpoint
        if endpoint.ice.remote_ufrag and ufrag != endpoint.ice.remote_ufrag:
            # The client restarted ICE: new credentials on our side too (RFC 8445 §9).
            endpoint.restart_ice()
        local_setup = endpoint.configure_remote(ufrag, pwd, fingerprints, setup)
        self._publisher_sdp_version += 1
        answer, accepted = negotiation.answer_offer(
            offer,
            self._local_transport(self.publisher, local_setup),
            session_id=self._sdp_session_id,
            version=self._publisher_sdp_version,
        )
        refused = self._apply_published(accepted)
        application = next(
            (m for m in offer.media if m.kind == "application" and m.port != 0), None
        )
        if application is not None:
            endpoint.enable_data_channels(application.sctp_port)
        for section in answer.media:
            if section.mid in refused:
                section.direction = "inactive"
                section.rids = []
                section.simulcast = None
        return serialize_sdp(answer)

    def _apply_published(self, accepted: list[negotiation.AcceptedMedia]) -> set[str]:
        peer = self.publisher
        seen: set[str] = set()
        refused: set[str] = set()
        for media in accepted:
            existing = peer.tracks_by_mid.get(media.mid)
            if existing is not None and existing.info.cid == media.track_id:
                seen.add(media.mid)
                self._register_ssrcs(existing, media)
                continue
            if existing is not None:
                self._unpublish(existing, "replaced")
            kind = TrackKind(media.kind)
            info = self.pending.pop(media.track_id, None)
            if info is None:
                source = TrackSource.MICROPHONE if kind is TrackKind.AUDIO else TrackSource.CAMERA
                if not self._permission.may_publish(source) or (
                    len(self.published) >= MAX_PUBLISHED_TRACKS
                ):
                    refused.add(media.mid)
                    continue
                info = TrackInfo(
                    sid=new_sid("TR_"),
                    cid=media.track_id,
                    participant_sid=self.sid,
                    participant_identity=self.identity,
                    kind=kind,
                    source=source,
                    stream=media.stream,
                )
            elif info.kind is not kind:
                refused.add(media.mid)
                log.info(
                    "x %s track %s announced as %s but offered as %s",
                    self.label,
                    info.sid,
                    info.kind.value,
                    kind.value,
                )
                continue
            spec = codecs.find_spec(media.codec)
            assert spec is not None
            info = replace(
                info,
                mime=spec.mime,
                mid=media.mid,
                stream=info.stream or media.stream,
                simulcast=len(media.rids) > 1 or info.simulcast,
            )
            ids = {e.uri: e.id for e in media.extmaps}
            track = PublishedTrack(
                info,
                publisher=peer,
                mime=spec.mime,
                clock_rate=media.codec.clock_rate,
                payload_type=media.codec.payload_type,
                rtx_payload_type=media.rtx.payload_type if media.rtx is not None else None,
                fmtp=dict(media.codec.fmtp),
                ext_table=codecs.extension_table(media.extmaps),
                twcc_id=ids.get(rtp.URI_TRANSPORT_CC, 0),
                level_id=ids.get(rtp.URI_AUDIO_LEVEL, 0),
                mid_id=ids.get(rtp.URI_MID, 0),
                rid_id=ids.get(rtp.URI_RID, 0),
                rrid_id=ids.get(rtp.URI_REPAIRED_RID, 0),
                nack_enabled=media.nack,
                cache_s=self.room.manager.rtx_cache_s,
            )
            if ids.get(rtp.URI_TRANSPORT_CC) and peer.twcc is None:
                peer.twcc_id = ids[rtp.URI_TRANSPORT_CC]
                peer.twcc = self.room.manager.new_twcc_recorder(peer.local_ssrc)
            for rid in media.rids:
                track.layer(rid)
            self._register_ssrcs(track, media)
            peer.tracks_by_mid[media.mid] = track
            self.published[info.sid] = track
            seen.add(media.mid)
            log.info(
                "- %s published %s %s (%s, mid %s, layers %s)",
                self.label,
                info.sid,
                info.source.value,
                spec.mime,
                media.mid,
                media.rids or ["-"],
            )
            self._version += 1
            self.room.publish(self, track)
        for mid, track in list(peer.tracks_by_mid.items()):
            if mid not in seen:
                self._unpublish(track, "removed from the offer")
        return refused

    def _register_ssrcs(self, track: PublishedTrack, media: negotiation.AcceptedMedia) -> None:
        if media.rids:
            return  # simulcast: SSRCs are learnt from the rid extension
        peer = self.publisher
        for ssrc in media.ssrcs[:1]:
            layer = track.layer("")
            if layer.ssrc and layer.ssrc != ssrc:
                peer.layers_by_ssrc.pop(layer.ssrc, None)
            layer.set_ssrc(ssrc)
            peer.layers_by_ssrc[ssrc] = layer
            rtx_ssrc = media.rtx_ssrcs.get(ssrc)
            if rtx_ssrc:
                layer.rtx_ssrc = rtx_ssrc
                peer.rtx_by_ssrc[rtx_ssrc] = layer

    def _unpublish(self, track: PublishedTrack, reason: str) -> None:
        peer = self.publisher
        self.published.pop(track.sid, None)
        if peer.tracks_by_mid.get(track.info.mid) is track:
            del peer.tracks_by_mid[track.info.mid]
        for layer in track.layers.values():
            peer.layers_by_ssrc.pop(layer.ssrc, None)
            peer.rtx_by_ssrc.pop(layer.rtx_ssrc, None)
        log.info("- %s unpublished %s (%s)", self.label, track.sid, reason)
        self._version += 1
        self.room.unpublish(self, track)

    def unpublish(self, track_sid: str) -> None:
        track = self.published.get(track_sid)
        if track is None:
            raise LocalProtocolError(f"{self.identity} publishes no track {track_sid}")
        self._unpublish(track, "unpublished")

    def mute(self, track_sid: str, muted: bool) -> TrackInfo:
        track = self.published.get(track_sid)
        if track is None:
            raise LocalProtocolError(f"{self.identity} publishes no track {track_sid}")
        if track.muted != muted:
            track.muted = muted
            track.info = replace(track.info, muted=muted)
            self._version += 1
            self.room.broadcast(events.TrackMuted(track.info, muted))
            self.room.broadcast(events.ParticipantUpdated(self.info()))
            if not muted:
                for downtrack in track.downtracks.values():
                    downtrack.select_layer(self.room.manager.clock())
        return track.info

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
        self._changed()
        return self.info()

    # -- subscribing ----------------------------------------------------------
    def set_subscribed(self, track_sid: str, subscribed: bool) -> None:
        self._check_open()
        track = self.room.tracks.get(track_sid)
        if subscribed:
            self.unsubscribed.discard(track_sid)
            if track is None:
                raise LocalProtocolError(f"no track {track_sid} in room {self.room.name}")
            self.subscribe(track)
        elif track is not None:
            # Only tracks of this room are remembered: sids a client makes up must not
            # grow what the worker holds.
            self.unsubscribed.add(track_sid)
            self.unsubscribe(track_sid)

    def subscribe(self, track: PublishedTrack) -> None:
        if track.sid in self.downtracks or track.info.participant_sid == self.sid:
            return
        if not self._permission.can_subscribe:
            return
        spec = codecs.BY_MIME.get(track.mime_lower)
        if spec is None:
            return
        fb = list(spec.rtcp_fb)
        codec = Codec(
            spec.payload_type,
            spec.name,
            spec.clock_rate,
            spec.channels,
            dict(track.fmtp) or dict(spec.fmtp),
            fb,
        )
        rtx = spec.rtx_codec() if track.kind is TrackKind.VIDEO else None
        downtrack = DownTrack(
            track,
            self.subscriber,
            payload_type=spec.payload_type,
            rtx_payload_type=rtx.payload_type if rtx else None,
        )
        slot = next(
            (
                s
                for s in self.slots
                if not s.active
                and s.kind == track.kind.value
                and s.mid not in self._offered_active_mids()
            ),
            None,
        )
        if slot is None:
            slot = negotiation.OutgoingSlot(
                mid=f"mf{len(self.slots) + 1}" if self.single else str(len(self.slots) + 1),
                kind=track.kind.value,
                codec=codec,
            )
            self.slots.append(slot)
        slot.codec = codec
        slot.rtx = rtx
        slot.ssrc = downtrack.ssrc
        slot.rtx_ssrc = downtrack.rtx_ssrc if rtx else 0
        if self.single:
            # One stream per person and purpose (Matrix sdp_stream_metadata).
            screen = track.info.source in (TrackSource.SCREEN_SHARE, TrackSource.SCREEN_SHARE_AUDIO)
            slot.stream = track.info.participant_sid + ("-screen" if screen else "")
        else:
            slot.stream = f"{track.info.participant_sid}|{track.sid}"
        slot.track_id = track.sid
        slot.cname = track.info.participant_sid
        slot.active = True
        slot.extmaps = codecs.subscriber_extmaps(track.kind.value)
        downtrack.mid = slot.mid
        self.slot_of[track.sid] = slot
        self.downtracks[track.sid] = downtrack
        track.downtracks[self.sid] = downtrack
        self.subscriber.downtracks_by_ssrc[downtrack.ssrc] = downtrack
        self._negotiate_subscriber()

    def _offered_active_mids(self) -> set[str]:
        return {mid for mid, slot in self._offered_slots.items() if slot.active}

    def unsubscribe(self, track_sid: str) -> None:
        downtrack = self.downtracks.pop(track_sid, None)
        if downtrack is None:
            return
        self.room.manager.retire_downtrack(downtrack)
        downtrack.detach()
        downtrack.track.downtracks.pop(self.sid, None)
        self.subscriber.downtracks_by_ssrc.pop(downtrack.ssrc, None)
        slot = self.slot_of.pop(track_sid, None)
        if slot is not None:
            slot.active = False
        if not self.closed:
            self._negotiate_subscriber()

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
        downtrack = self.downtracks.get(track_sid)
        if downtrack is None:
            return
        now = self.room.manager.clock()
        if width or height:
            quality = _quality_for(downtrack.track, width, height)
        downtrack.max_quality = max(0, min(2, quality))
        downtrack.set_disabled(disabled, now)

    # -- subscriber negotiation ----------------------------------------------
    def _negotiate_subscriber(self) -> None:
        if self.closed:
            return
        if self.single and self._last_local is None:
            return  # the client opens the connection; its offer carries our tracks
        if self._outstanding is not None:
            self._dirty = True
            return
        if not self._offer_scheduled:
            self._offer_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_subscriber_offer)

    def _send_subscriber_offer(self) -> None:
        self._offer_scheduled = False
        if self.closed or self._outstanding is not None:
            return
        self._dirty = False
        self._offer_id += 1
        self._sdp_version += 1
        if self.single:
            assert self._last_local is not None
            offer = negotiation.build_single_offer(
                self._last_local,
                self.slots,
                self._local_transport(self.publisher, "actpass"),
                version=self._sdp_version + self._publisher_sdp_version,
            )
            self._pending_local = offer
        else:
            offer = negotiation.build_offer(
                self.slots,
                self._local_transport(self.subscriber, "actpass"),
                session_id=self._sdp_session_id,
                version=self._sdp_version,
                data_channel_mid=DATA_CHANNEL_MID,
            )
        self._outstanding = self._offer_id
        self._offered_slots = {
            slot.mid: negotiation.OutgoingSlot(
                slot.mid,
                slot.kind,
                slot.codec,
                slot.rtx,
                slot.ssrc,
                slot.rtx_ssrc,
                slot.stream,
                slot.track_id,
                slot.cname,
                slot.active,
            )
            for slot in self.slots
        }
        self.listener.on_subscriber_offer(serialize_sdp(offer), self._offer_id)

    def start_subscriber(self) -> None:
        """Send the first subscriber offer (data channel and current tracks)."""
        if not self.single:
            self._negotiate_subscriber()

    async def accept_subscriber_answer(self, sdp: str, offer_id: int) -> None:
        self._check_open()
        if self._outstanding is None or offer_id != self._outstanding:
            raise NegotiationError(
                f"answer for subscriber offer {offer_id}, but the outstanding offer is "
                f"{self._outstanding}; answer the latest offer"
            )
        answer = negotiation.parse(sdp, "subscriber answer")
        ufrag, pwd, fingerprints, setup = negotiation.remote_transport(answer, "subscriber answer")
        if setup == "actpass":
            raise NegotiationError(
                "subscriber answer says a=setup:actpass; an answer must choose active or passive"
            )
        self.subscriber.endpoint.configure_remote(ufrag, pwd, fingerprints, setup)
        # the subscriber reports arrivals (transport-cc) when it took the extension
        self.subscriber.endpoint.target.set_twcc(
            negotiation.extension_id(answer, rtp.URI_TRANSPORT_CC)
        )
        accepted = negotiation.accepted_mids(answer)
        if self.single and self._pending_local is not None:
            self._last_local = self._pending_local
            self._pending_local = None
        now = self.room.manager.clock()
        if DATA_CHANNEL_MID in accepted and not self.single:
            channels = self.subscriber.endpoint.enable_data_channels(
                next((m.sctp_port for m in answer.media if m.mid == DATA_CHANNEL_MID), None)
            )
            # LiveKit's server opens these on the subscriber connection.
            channels.open(RELIABLE_LABEL, ordered=True)
            channels.open(LOSSY_LABEL, ordered=False, max_retransmits=0)
        for track_sid, downtrack in self.downtracks.items():
            slot = self.slot_of.get(track_sid)
            offered = self._offered_slots.get(downtrack.mid)
            if slot is None or offered is None or offered.ssrc != downtrack.ssrc:
                continue  # not in the offer this answers; the next one carries it
            if downtrack.mid in accepted and not downtrack.negotiated:
                self._use_negotiated_codec(downtrack, slot)
                downtrack.attach(now)
        self._outstanding = None
        if self._dirty:
            self._negotiate_subscriber()

    def _use_negotiated_codec(self, downtrack: DownTrack, slot: negotiation.OutgoingSlot) -> None:
        """Payload types and extension ids as this connection negotiated them."""
        downtrack.payload_type = slot.codec.payload_type
        downtrack.rtx_payload_type = slot.rtx.payload_type if slot.rtx is not None else None
        if self.single and self._last_local is not None:
            section = next((m for m in self._last_local.media if m.mid == slot.mid), None)
            if section is not None:
                downtrack.ext_remap = codecs.downstream_table(section.extmaps)

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
        ufrag, pwd, fingerprints, setup = negotiation.remote_transport(offer, "offer")
        endpoint = self.publisher.endpoint
        if endpoint.ice.remote_ufrag and ufrag != endpoint.ice.remote_ufrag:
            endpoint.restart_ice()
        local_setup = endpoint.configure_remote(ufrag, pwd, fingerprints, setup)
        endpoint.target.set_twcc(negotiation.extension_id(offer, rtp.URI_TRANSPORT_CC))
        if self._outstanding is not None:
            # Glare: we are the polite side; our offer is dropped and made again later.
            self._outstanding = None
            self._pending_local = None
            self._dirty = True
        self._claim_offered_sections(offer)
        self._publisher_sdp_version += 1
        answer, accepted = negotiation.answer_offer(
            offer,
            self._local_transport(self.publisher, local_setup),
            session_id=self._sdp_session_id,
            version=self._publisher_sdp_version + self._sdp_version,
            send_slots={slot.mid: slot for slot in self.slots},
        )
        refused = self._apply_published(accepted)
        for section in answer.media:
            if section.mid in refused:
                section.direction = "sendonly" if section.direction == "sendrecv" else "inactive"
        sending = {
            section.mid
            for section in answer.media
            if section.port != 0 and section.direction in ("sendonly", "sendrecv")
        }
        self._last_local = answer
        now = self.room.manager.clock()
        for track_sid, downtrack in self.downtracks.items():
            slot = self.slot_of.get(track_sid)
            if slot is None:
                continue
            if downtrack.mid in sending and not downtrack.negotiated:
                self._use_negotiated_codec(downtrack, slot)
                downtrack.attach(now)
            elif downtrack.mid not in sending and downtrack.negotiated:
                downtrack.detach()
        unsent = [
            slot
            for slot in self.slots
            if slot.active and slot.mid not in {m.mid for m in answer.media}
        ]
        if unsent or self._dirty:
            self._dirty = False
            self._negotiate_subscriber()
        return serialize_sdp(answer)

    def _claim_offered_sections(self, offer: SessionDescription) -> None:
        """Put tracks not yet negotiated on sections the client offered to receive on."""
        known = {m.mid for m in (self._last_local.media if self._last_local else [])}
        taken = {slot.mid for slot in self.slots if slot.mid in known}
        for media in offer.media:
            if media.mid is None or media.mid in taken or media.port == 0:
                continue
            if media.direction not in ("sendrecv", "recvonly"):
                continue
            for slot in self.slots:
                if slot.active and slot.kind == media.kind and slot.mid not in known | taken:
                    old_mid = slot.mid
                    slot.mid = media.mid
                    for downtrack in self.downtracks.values():
                        if downtrack.mid == old_mid:
                            downtrack.mid = media.mid
                    taken.add(media.mid)
                    break

    def stream_metadata(self) -> dict[str, dict[str, object]]:
        """What we send, by msid stream id: Matrix ``sdp_stream_metadata``."""
        streams: dict[str, dict[str, object]] = {}
        for track_sid, slot in self.slot_of.items():
            downtrack = self.downtracks.get(track_sid)
            if downtrack is None or not slot.active:
                continue
            info = downtrack.track.info
            screen = info.source in (TrackSource.SCREEN_SHARE, TrackSource.SCREEN_SHARE_AUDIO)
            entry = streams.setdefault(
                slot.stream,
                {
                    "purpose": "m.screenshare" if screen else "m.usermedia",
                    "audio_muted": True,
                    "video_muted": True,
                },
            )
            key = "audio_muted" if info.kind is TrackKind.AUDIO else "video_muted"
            entry[key] = bool(info.muted)
        return streams

    def local_candidates(self) -> list[tuple[str, str, int]]:
        """(candidate, sdpMid, sdpMLineIndex) of our last local description's first section."""
        description = self._last_local
        mid = "0"
        if description is not None and description.media:
            mid = description.media[0].mid or "0"
        return [(line, mid, 0) for line in self.publisher.endpoint.local_candidates()]

    def withdraw_subscriber_offer(self, offer_id: int) -> bool:
        """Give up on an offer the client never answered (its lifetime ran out).

        The tracks it carried stay pending and go into the next offer, which is
        made at once. False if ``offer_id`` is not the outstanding offer.
        """
        if self._outstanding is None or offer_id != self._outstanding:
            return False
        self._outstanding = None
        self._pending_local = None
        self._negotiate_subscriber()
        return True

    def add_remote_candidate(self, target: str, candidate: str) -> None:
        """Trickled remote candidates: ICE-lite learns addresses from checks instead."""
        if target not in ("publisher", "subscriber"):
            raise LocalProtocolError(f"unknown candidate target {target!r}")

    async def restart_ice(self) -> None:
        self.subscriber.endpoint.restart_ice()
        self._negotiate_subscriber()

    # -- data --------------------------------------------------------------
    def send_data(
        self,
        payload: bytes,
        *,
        topic: str = "",
        kind: str = "reliable",
        destination_identities: Sequence[str] = (),
    ) -> None:
        if not self._permission.can_publish_data:
            raise AuthError(f"{self.identity} may not publish data; the token does not allow it")
        manager = self.room.manager
        if len(payload) > limits.MAX_DATA_BYTES:
            manager.drop(
                "data_size",
                self.label,
                f"data packet of {len(payload)} bytes is over {limits.MAX_DATA_BYTES}",
            )
            return
        now = manager.clock()
        if not (self._data_packets.take(now) and self._data_bytes.take(now, len(payload))):
            manager.drop("data_rate", self.label, "sends data faster than the limit")
            return
        self.room.send_data(
            payload,
            topic=topic,
            kind=kind,
            destination_identities=destination_identities,
            sender=self.identity,
        )

    # -- bandwidth ----------------------------------------------------------
    def on_estimate(self, bitrate_bps: int, now: float) -> None:
        """The subscriber's downlink estimate (REMB) arrived."""
        self.estimate_bps = bitrate_bps
        self._estimate_at = now
        if now - self._allocated_at >= ALLOCATE_INTERVAL_S:
            self.allocate(now)

    def on_transport_feedback(self, feedback: TransportCcFeedback, now: float) -> None:
        """Transport-wide feedback on what we sent this participant (media/bwe.py)."""
        target = self.subscriber.endpoint.target
        if not target.twcc_id:
            return
        records = target.sent(feedback.base_sequence, len(feedback.packets))
        arrival_us = feedback.reference_time * 64_000
        results = []
        for (seq, delta_us), record in zip(feedback.packets, records, strict=True):
            if delta_us is not None:
                arrival_us += delta_us
            if record is None:
                continue  # not ours to judge (too old, or never sent)
            send_us, size, probe = record
            results.append(
                bwe.PacketResult(
                    seq, send_us, size, arrival_us if delta_us is not None else None, probe
                )
            )
        if not results:
            return
        before = self.bwe.estimate_bps
        rtts = [d.rtt_ms for d in self.downtracks.values() if d.rtt_ms]
        self.bwe.on_feedback(results, now, rtt_s=max(rtts) / 1000 if rtts else 0.0)
        after = self.bwe.estimate_bps
        if (
            after < 0.9 * before
            or after > 1.1 * before
            or (now - self._allocated_at >= ALLOCATE_INTERVAL_S)
        ):
            self.allocate(now)

    def _budget_bps(self, now: float) -> int | None:
        """What this subscriber's downlink carries: the send-side estimate once its
        feedback arrives, else the browser's REMB, else unknown (None)."""
        if self.bwe.has_feedback:
            return self.bwe.estimate_bps
        if self.estimate_bps is None or now - self._estimate_at > ESTIMATE_STALE_S:
            return None
        return self.estimate_bps

    def allocate(self, now: float) -> None:
        """Pick each watched video's layer within the estimate; timers call this too.

        Lower layers apply at once; higher ones only after UPGRADE_HOLD_S, so a
        noisy estimate does not flap between layers (each switch costs a keyframe).
        When a better layer is wanted but does not fit, a probe finds out whether
        the link carries it (media/probe.py).
        """
        self._allocated_at = now
        videos = [
            d
            for d in self.downtracks.values()
            if d.track.kind is TrackKind.VIDEO and d.negotiated and not d.disabled
        ]
        if not videos:
            return
        estimate = self._budget_bps(now)
        if estimate is None:
            choice: dict[Hashable, int] = {d.track.sid: 2 for d in videos}
        else:
            audio = sum(1 for d in self.downtracks.values() if d.track.kind is TrackKind.AUDIO)
            budget = int(estimate * 0.95) - audio * AUDIO_RESERVE_BPS
            demands = [
                allocation.Demand(
                    key=d.track.sid,
                    max_quality=d.max_quality,
                    layers=d.track.layer_bitrates(now),
                    priority=1 if d.track.info.source is TrackSource.SCREEN_SHARE else 0,
                )
                for d in videos
            ]
            choice = allocation.allocate(budget, demands)
            missing = allocation.shortfall(demands, choice)
            if missing is not None and self.bwe.has_feedback:
                spent = sum(
                    demand.layers[choice[demand.key]] for demand in demands if demand.key in choice
                )
                wanted = (spent + missing + audio * AUDIO_RESERVE_BPS) / 0.95
                self._maybe_probe(max(wanted * 1.25, estimate * 1.5), now)
        for downtrack in videos:
            quality = choice.get(downtrack.track.sid, downtrack.allocated_quality)
            lower = quality < downtrack.allocated_quality
            held = now - downtrack.allocated_at >= UPGRADE_HOLD_S
            if lower or (quality > downtrack.allocated_quality and held):
                downtrack.allocated_quality = quality
                downtrack.allocated_at = now
            downtrack.select_layer(now)

    def _maybe_probe(self, rate_bps: float, now: float) -> None:
        """Send a probe cluster at ``rate_bps`` unless one ran lately."""
        if self._probe is not None or now - self._probed_at < probe.PROBE_INTERVAL_S:
            return
        target = self.subscriber.endpoint.target
        if not target.ready or not 1 <= target.twcc_id <= 14:
            return
        carrier = next(
            (
                d
                for d in self.downtracks.values()
                if d.negotiated and d.rtx_payload_type is not None and d.started
            ),
            None,
        )
        if carrier is None:
            return  # padding rides an RTX stream; none is negotiated yet
        self._probed_at = now
        self._cluster += 1
        self._probe = probe.Probe(self._cluster, min(rate_bps, bwe.MAX_BPS), now)
        stream = probe.PaddingStream(
            carrier.rtx_payload_type or 0, carrier.rtx_ssrc, target.twcc_id
        )
        log.debug("- %s probes at %d bps", self.label, int(rate_bps))
        self._send_probe(stream, carrier)

    def _send_probe(self, stream: probe.PaddingStream, carrier: DownTrack) -> None:
        running = self._probe
        if running is None or self.closed:
            return
        target = self.subscriber.endpoint.target
        now = self.room.manager.clock()
        count = running.due(now)
        target.set_probe(running.cluster)
        for _ in range(count):
            carrier.rtx_seq = (carrier.rtx_seq + 1) & 0xFFFF
            target.send_packet(probe.padding_packet(stream, carrier.rtx_seq, carrier.ts_out))
        target.set_probe(-1)
        if running.done:
            self._probe = None
            return
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, running.next_at - now), self._send_probe, stream, carrier)

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

    def connection_quality(self) -> quality.Quality:
        """How this participant's connection does (media/quality.py)."""
        return self._quality.quality

    def update_quality(self) -> None:
        """Timer work, once a second: one window of loss, jitter and round trip of the
        streams this participant sends and receives."""
        windows: list[quality.StreamWindow] = []
        rtts = [d.rtt_ms for d in self.downtracks.values() if d.rtt_ms]
        rtt_ms = max(rtts) if rtts else 0.0
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
                        downtrack.select_layer(now)
                        downtrack.track.request_keyframe(now)
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
        for track_sid in list(self.downtracks):
            self.unsubscribe(track_sid)
        for track in list(self.published.values()):
            self._unpublish(track, reason)
        for peer in {self.publisher, self.subscriber}:
            self.room.manager.retire_endpoint(peer.endpoint)
        self.publisher.close()
        self.subscriber.close()
        self.listener.on_room_event(events.SessionClosed(reason))

    def _check_open(self) -> None:
        if self.closed:
            raise LocalProtocolError(f"session of {self.identity} has left the room")

    def _local_transport(self, peer: MediaPeer, setup: str) -> negotiation.LocalTransport:
        endpoint = peer.endpoint
        return negotiation.LocalTransport(
            ufrag=endpoint.ice.local_ufrag,
            pwd=endpoint.ice.local_pwd,
            fingerprint=endpoint.certificate.fingerprint(),
            setup=setup,
            candidates=tuple(endpoint.local_candidates()),
        )


def _quality_for(track: PublishedTrack, width: int, height: int) -> int:
    """The lowest layer quality that covers a requested display size."""
    layers = sorted(track.info.layers, key=lambda layer: layer.quality)
    for layer in layers:
        if layer.width >= width and layer.height >= height:
            return layer.quality
    return 2
