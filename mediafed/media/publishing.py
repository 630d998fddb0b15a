"""What one participant publishes: announced tracks, the publisher connection's
negotiation, and the tracks it carries.

A LiveKit client announces a track (AddTrackRequest) and then offers it on
its publisher connection; a client that does not announce (a Matrix call,
an aiortc script) is published from its offer alone, its kind telling the
source. Each accepted media section becomes a :class:`PublishedTrack` the
room hands to its subscribers; a section that leaves the offer unpublishes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from mediafed.errors import AuthError, LocalProtocolError
from mediafed.media import codecs, events, negotiation
from mediafed.media.track import PublishedTrack
from mediafed.media.types import LayerInfo, TrackInfo, TrackKind, TrackSource, new_sid
from mediafed.wire import rtp
from mediafed.wire.sdp import SessionDescription, serialize_sdp

if TYPE_CHECKING:
    from mediafed.media.session import Session

log = logging.getLogger(__name__)

MAX_PENDING_TRACKS = 32
MAX_PUBLISHED_TRACKS = 64


class Publishing:
    """The publishing half of a session (its ``publisher`` connection)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.pending: dict[str, TrackInfo] = {}
        """Announced tracks by client id, until the offer that carries them."""
        self.published: dict[str, PublishedTrack] = {}
        self.sdp_version = 0
        self.owners: dict[str, Session] = {}
        """A relay link's tracks by client id: the mirrored participant that shows each
        one (its ``published``), while this session's connection carries them."""
        self.announced_only = False
        """A relay link: a section nobody announced is refused, never published as ours."""

    def announce(
        self,
        cid: str,
        kind: TrackKind,
        *,
        source: TrackSource,
        name: str,
        width: int,
        height: int,
        muted: bool,
        layers: Sequence[LayerInfo],
        encryption: int,
        stream: str,
        trailer_features: tuple[int, ...] = (),
        codec: str = "",
        owner: Session | None = None,
    ) -> TrackInfo:
        session = self.session
        if not cid:
            raise LocalProtocolError("a track needs a client id (cid); use the SDP msid track id")
        if source is TrackSource.UNKNOWN:
            source = TrackSource.MICROPHONE if kind is TrackKind.AUDIO else TrackSource.CAMERA
        if not session.permission.may_publish(source):
            raise AuthError(
                f"{session.identity} may not publish {source.value}; "
                "the access token does not allow it"
            )
        if cid in self.pending or any(t.info.cid == cid for t in self.published.values()):
            raise LocalProtocolError(f"track cid {cid!r} is already announced")
        if len(self.pending) >= MAX_PENDING_TRACKS:
            raise LocalProtocolError(
                f"more than {MAX_PENDING_TRACKS} tracks announced but not negotiated; "
                "send the offer that carries them first"
            )
        shown_by = owner or session
        info = TrackInfo(
            sid=new_sid("TR_"),
            cid=cid,
            participant_sid=shown_by.sid,
            participant_identity=shown_by.identity,
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
            trailer_features=trailer_features,
            mime=codec,  # until the offer is answered: the codec the client asked for
        )
        self.pending[cid] = info
        if owner is not None:
            self.owners[cid] = owner
        return info

    def answer(self, offer: SessionDescription) -> str:
        """Apply the client's offer for its publisher connection; our answer."""
        session = self.session
        peer = session.publisher
        local_setup = session.configure_remote(peer, offer, "publisher offer")
        self.sdp_version += 1
        answer, accepted = negotiation.answer_offer(
            offer,
            session.local_transport(peer, local_setup),
            session_id=session.sdp_session_id,
            version=self.sdp_version,
            preferred=self.preferred_codecs(),
        )
        refused = self.apply(accepted)
        application = next(
            (m for m in offer.media if m.kind == "application" and m.port != 0), None
        )
        if application is not None:
            peer.endpoint.enable_data_channels(application.sctp_port)
        for section in answer.media:
            if section.mid in refused:
                section.direction = "inactive"
                section.rids = []
                section.simulcast = None
        return serialize_sdp(answer)

    def preferred_codecs(self) -> dict[str, str]:
        """The codec each announced track is sent in, by client track id (cid)."""
        return {cid: info.mime for cid, info in self.pending.items() if info.mime}

    def apply(self, accepted: list[negotiation.AcceptedMedia]) -> set[str]:
        """Publish what the offer carries, unpublish what it no longer does; the mids
        refused (not allowed, too many, or a kind other than announced)."""
        peer = self.session.publisher
        seen: set[str] = set()
        refused: set[str] = set()
        for media in accepted:
            existing = peer.tracks_by_mid.get(media.mid)
            if existing is not None and existing.info.cid == media.track_id:
                seen.add(media.mid)
                self._register_ssrcs(existing, media)
                continue
            if existing is not None:
                self.remove(existing, "replaced")
            info = self._track_info(media)
            if info is None:
                refused.add(media.mid)
                continue
            self._publish(info, media)
            seen.add(media.mid)
        for mid, track in list(peer.tracks_by_mid.items()):
            if mid not in seen:
                self.remove(track, "removed from the offer")
        return refused

    def _track_info(self, media: negotiation.AcceptedMedia) -> TrackInfo | None:
        """The announced track this section carries, or one made from the section
        when nothing was announced; None when it may not be published."""
        session = self.session
        kind = TrackKind(media.kind)
        info = self.pending.pop(media.track_id, None)
        if info is None and self.announced_only:
            return None
        if info is None:
            source = TrackSource.MICROPHONE if kind is TrackKind.AUDIO else TrackSource.CAMERA
            if not session.permission.may_publish(source) or (
                len(self.published) >= MAX_PUBLISHED_TRACKS
            ):
                return None
            info = TrackInfo(
                sid=new_sid("TR_"),
                cid=media.track_id,
                participant_sid=session.sid,
                participant_identity=session.identity,
                kind=kind,
                source=source,
                stream=media.stream,
            )
        elif info.kind is not kind:
            log.info(
                "x %s track %s announced as %s but offered as %s",
                session.label,
                info.sid,
                info.kind.value,
                kind.value,
            )
            return None
        spec = codecs.find_spec(media.codec)
        assert spec is not None
        return replace(
            info,
            mime=spec.mime,
            mid=media.mid,
            stream=info.stream or media.stream,
            simulcast=len(media.rids) > 1 or info.simulcast,
        )

    def _publish(self, info: TrackInfo, media: negotiation.AcceptedMedia) -> None:
        session = self.session
        peer = session.publisher
        manager = session.room.manager
        ids = {e.uri: e.id for e in media.extmaps}
        track = PublishedTrack(
            info,
            publisher=peer,
            mime=info.mime,
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
            cache_s=manager.rtx_cache_s,
        )
        if ids.get(rtp.URI_TRANSPORT_CC) and peer.twcc is None:
            peer.twcc_id = ids[rtp.URI_TRANSPORT_CC]
            peer.twcc = manager.new_twcc_recorder(peer.local_ssrc)
        for rid in media.rids:
            track.layer(rid)
        self._register_ssrcs(track, media)
        peer.tracks_by_mid[media.mid] = track
        owner = self.owners.get(info.cid, session)
        owner.publishing.published[info.sid] = track
        track.not_for = owner.echo_of
        log.info(
            "- %s published %s %s (%s, mid %s, layers %s)",
            owner.label,
            info.sid,
            info.source.value,
            info.mime,
            media.mid,
            media.rids or ["-"],
        )
        owner.bump_version()
        session.room.publish(owner, track)

    def _register_ssrcs(self, track: PublishedTrack, media: negotiation.AcceptedMedia) -> None:
        if media.rids:
            return  # simulcast: SSRCs are learnt from the rid extension
        peer = self.session.publisher
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

    def track(self, track_sid: str) -> PublishedTrack:
        track = self.published.get(track_sid)
        if track is None:
            raise LocalProtocolError(f"{self.session.identity} publishes no track {track_sid}")
        return track

    def remove(self, track: PublishedTrack, reason: str) -> None:
        """Unpublish ``track``, whichever of a relay link and its mirrored participant
        asks (the connection that carries it, the participant that shows it)."""
        peer = track.publisher
        carrier = peer.session.publishing
        owner = carrier.owners.get(track.info.cid, peer.session)
        if owner.publishing.published.pop(track.sid, None) is None:
            return  # removed already
        carrier.owners.pop(track.info.cid, None)
        if peer.tracks_by_mid.get(track.info.mid) is track:
            del peer.tracks_by_mid[track.info.mid]
        for layer in track.layers.values():
            peer.layers_by_ssrc.pop(layer.ssrc, None)
            peer.rtx_by_ssrc.pop(layer.rtx_ssrc, None)
        log.info("- %s unpublished %s (%s)", owner.label, track.sid, reason)
        owner.bump_version()
        owner.room.unpublish(owner, track)

    def mute(self, track_sid: str, muted: bool) -> TrackInfo:
        session = self.session
        track = self.track(track_sid)
        if track.muted != muted:
            track.muted = muted
            track.info = replace(track.info, muted=muted)
            session.bump_version()
            session.room.broadcast(events.TrackMuted(track.info, muted))
            session.room.broadcast(events.ParticipantUpdated(session.info()))
            if not muted:
                now = session.room.manager.clock()
                for downtrack in track.downtracks.values():
                    downtrack.select_layer(now)
        return track.info

    def mute_pending(self, track_sid: str, muted: bool) -> TrackInfo | None:
        """Mute or unmute an announced track its offer has not carried yet (LiveKit's
        ``setTrackMuted`` does so too); None if no such track is announced."""
        for cid, info in self.pending.items():
            if info.sid == track_sid:
                self.pending[cid] = replace(info, muted=muted)
                return self.pending[cid]
        return None

    def mute_pending_cid(self, cid: str, muted: bool) -> None:
        """A relay link: a remote track not carried yet was muted or unmuted there."""
        info = self.pending.get(cid)
        if info is not None:
            self.pending[cid] = replace(info, muted=muted)

    def forget(self, cid: str) -> None:
        """A relay link: an announced remote track that will not come after all."""
        self.pending.pop(cid, None)
        if not any(
            track.info.cid == cid for track in self.session.publisher.tracks_by_mid.values()
        ):
            self.owners.pop(cid, None)

    def close(self, reason: str) -> None:
        # what this session shows, and what its connection carries for others (a link)
        tracks = dict(self.published)
        for track in self.session.publisher.tracks_by_mid.values():
            tracks.setdefault(track.sid, track)
        for track in tracks.values():
            self.remove(track, reason)
        self.pending.clear()
        self.owners.clear()
