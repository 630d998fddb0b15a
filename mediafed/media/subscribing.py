"""What one participant receives: its DownTracks and the subscriber connection's
negotiation.

Each subscribed track gets a DownTrack and a slot (an m-section we send on).
With LiveKit's two connections we offer the subscriber connection: offers
are serialized, one outstanding at a time, and changes made meanwhile are
folded into the next one. On a single connection (classic Matrix calls) the
client offers first; tracks go out on the sections it lets us send on, and
those that find none come in an offer of ours. On LiveKit's single
connection (``/rtc/v1``) only the client offers: we ask it for an offer with
enough receive sections instead (``media_sections_requirement``), and for an
offer all the same when what we send changed. A slot freed by an
unsubscribe is reused by the next track of its kind once a negotiation has
shown the client it is inactive.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

from mediafed.errors import LocalProtocolError, NegotiationError
from mediafed.media import codecs, negotiation
from mediafed.media.downtrack import DownTrack
from mediafed.media.types import TrackKind, TrackSource
from mediafed.wire import rtp
from mediafed.wire.sdp import Codec, SessionDescription, serialize_sdp

if TYPE_CHECKING:
    from mediafed.media.session import SectionsListener, Session
    from mediafed.media.track import PublishedTrack

DATA_CHANNEL_MID = "0"
RELIABLE_LABEL = "_reliable"
LOSSY_LABEL = "_lossy"
SCREEN_SOURCES = (TrackSource.SCREEN_SHARE, TrackSource.SCREEN_SHARE_AUDIO)


class Subscribing:
    """The subscribing half of a session (its ``subscriber`` connection, which is
    the publisher connection itself in single-connection mode)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.single = session.single
        self.answer_only = session.answer_only
        self.downtracks: dict[str, DownTrack] = {}
        self.slots: list[negotiation.OutgoingSlot] = []
        self.slot_of: dict[str, negotiation.OutgoingSlot] = {}
        self.unsubscribed: set[str] = set()
        """Tracks of the room this participant turned off (not to auto-subscribe)."""
        self.started = False
        """The front-end answered the join: offers may go out (two-connection mode)."""
        self.sdp_version = 0
        self._offer_id = 0
        self._outstanding: int | None = None
        self._offered_slots: dict[str, negotiation.OutgoingSlot] = {}
        self._dirty = False
        self._offer_scheduled = False
        self.last_local: SessionDescription | None = None
        """Single connection: our last answer or accepted offer."""
        self._pending_local: SessionDescription | None = None
        self._spare: Counter[str] = Counter()
        """Answer-only: sections of the client's last offer we may send on and no track
        took, by kind."""
        self._asked: Counter[str] = Counter()
        """Answer-only: sections asked for since our last answer, by kind."""

    # -- what is subscribed ------------------------------------------------------
    def set_subscribed(self, track_sid: str, subscribed: bool) -> None:
        room = self.session.room
        track = room.tracks.get(track_sid)
        if subscribed:
            self.unsubscribed.discard(track_sid)
            if track is None:
                raise LocalProtocolError(f"no track {track_sid} in room {room.name}")
            self.subscribe(track)
        elif track is not None:
            # Only tracks of this room are remembered: sids a client makes up must not
            # grow what the worker holds.
            self.unsubscribed.add(track_sid)
            self.unsubscribe(track_sid)

    def subscribe(self, track: PublishedTrack) -> None:
        session = self.session
        if track.sid in self.downtracks or track.info.participant_sid == session.sid:
            return
        if track.not_for == session.identity:
            return  # its own media, back from another SFU (a relay link's copy)
        if not session.permission.can_subscribe:
            return
        if not session.room.may_subscribe(session, track):
            return  # its publisher does not allow it (media/permissions.py)
        spec = codecs.BY_MIME.get(track.mime_lower)
        if spec is None:
            return
        codec = Codec(
            spec.payload_type,
            spec.name,
            spec.clock_rate,
            spec.channels,
            dict(track.fmtp) or dict(spec.fmtp),
            list(spec.rtcp_fb),
        )
        rtx = spec.rtx_codec() if track.kind is TrackKind.VIDEO else None
        downtrack = DownTrack(
            track,
            session.subscriber,
            payload_type=spec.payload_type,
            rtx_payload_type=rtx.payload_type if rtx else None,
        )
        slot = self._free_slot(track.kind) or self._new_slot(track.kind, codec)
        slot.codec = codec
        slot.rtx = rtx
        slot.ssrc = downtrack.ssrc
        slot.rtx_ssrc = downtrack.rtx_ssrc if rtx else 0
        if self.single and not self.answer_only:
            # One stream per person and purpose (Matrix sdp_stream_metadata).
            screen = track.info.source in SCREEN_SOURCES
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
        track.downtracks[session.sid] = downtrack
        session.subscriber.downtracks_by_ssrc[downtrack.ssrc] = downtrack
        self.negotiate()

    def _free_slot(self, kind: TrackKind) -> negotiation.OutgoingSlot | None:
        """An inactive slot of this kind the client has seen inactive."""
        offered_active = {mid for mid, slot in self._offered_slots.items() if slot.active}
        if self.single and self.last_local is not None:
            offered_active |= _sending_mids(self.last_local)
        return next(
            (
                slot
                for slot in self.slots
                if not slot.active and slot.kind == kind.value and slot.mid not in offered_active
            ),
            None,
        )

    def _new_slot(self, kind: TrackKind, codec: Codec) -> negotiation.OutgoingSlot:
        number = len(self.slots) + 1
        slot = negotiation.OutgoingSlot(
            # our mids must not meet the client's on its own connection
            mid=f"mf{number}" if self.single else str(number),
            kind=kind.value,
            codec=codec,
        )
        self.slots.append(slot)
        return slot

    def unsubscribe(self, track_sid: str) -> None:
        downtrack = self.downtracks.pop(track_sid, None)
        if downtrack is None:
            return
        session = self.session
        session.room.manager.retire_downtrack(downtrack)
        downtrack.detach()
        downtrack.track.downtracks.pop(session.sid, None)
        session.subscriber.downtracks_by_ssrc.pop(downtrack.ssrc, None)
        slot = self.slot_of.pop(track_sid, None)
        if slot is not None:
            slot.active = False
        if not session.closed:
            self.negotiate()

    def update_track_settings(
        self,
        track_sid: str,
        *,
        disabled: bool,
        quality: int,
        width: int,
        height: int,
        fps: int = 0,
    ) -> None:
        downtrack = self.downtracks.get(track_sid)
        if downtrack is None:
            return
        now = self.session.room.manager.clock()
        if width or height:
            quality = _quality_for(downtrack.track, width, height)
        downtrack.max_quality = max(0, min(2, quality))
        downtrack.max_fps = max(0, min(fps, 240))
        downtrack.set_disabled(disabled, now)

    # -- our offers --------------------------------------------------------------
    def negotiate(self) -> None:
        """Offer the current slots soon (folded into the next offer while one is out)."""
        if self.session.closed:
            return
        if self.single and self.last_local is None:
            return  # the client opens the connection; its offer carries our tracks
        if not self.single and not self.started:
            return  # the first offer follows the join's answer (start_subscriber)
        if self._outstanding is not None:
            self._dirty = True
            return
        if not self._offer_scheduled:
            self._offer_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_offer)

    def _send_offer(self) -> None:
        session = self.session
        self._offer_scheduled = False
        if session.closed or self._outstanding is not None:
            return
        if self.answer_only:
            self._ask_for_sections()
            return
        self._dirty = False
        self._offer_id += 1
        self.sdp_version += 1
        if self.single:
            assert self.last_local is not None
            offer = negotiation.build_single_offer(
                self.last_local,
                self.slots,
                session.local_transport(session.publisher, "actpass"),
                version=self.sdp_version + session.publishing.sdp_version,
            )
            self._pending_local = offer
        else:
            offer = negotiation.build_offer(
                self.slots,
                session.local_transport(session.subscriber, "actpass"),
                session_id=session.sdp_session_id,
                version=self.sdp_version,
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
        session.listener.on_subscriber_offer(serialize_sdp(offer), self._offer_id)

    def accept_answer(self, sdp: str, offer_id: int) -> None:
        session = self.session
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
        endpoint = session.subscriber.endpoint
        endpoint.configure_remote(ufrag, pwd, fingerprints, setup)
        # the subscriber reports arrivals (transport-cc) when it took the extension
        endpoint.target.set_twcc(negotiation.extension_id(answer, rtp.URI_TRANSPORT_CC))
        accepted = negotiation.accepted_mids(answer)
        if self.single and self._pending_local is not None:
            self.last_local = self._pending_local
            self._pending_local = None
        now = session.room.manager.clock()
        if DATA_CHANNEL_MID in accepted and not self.single:
            channels = endpoint.enable_data_channels(
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
            self.negotiate()

    def _ask_for_sections(self) -> None:
        """Answer-only: have the client offer again, with receive sections for the
        tracks that have none (LiveKit's ``media_sections_requirement``)."""
        assert self.last_local is not None
        answered = {m.mid for m in self.last_local.media}
        unplaced = Counter(s.kind for s in self.slots if s.active and s.mid not in answered)
        wanted = {
            kind: max(0, unplaced[kind] - self._spare[kind] - self._asked[kind])
            for kind in ("audio", "video")
        }
        self._asked.update(wanted)
        listener: SectionsListener = self.session.listener  # type: ignore[assignment]
        listener.on_media_sections_requirement(wanted["audio"], wanted["video"])

    def withdraw_offer(self, offer_id: int) -> bool:
        """Give up on an offer the client never answered (its lifetime ran out).

        The tracks it carried stay pending and go into the next offer, which is
        made at once. False if ``offer_id`` is not the outstanding offer.
        """
        if self._outstanding is None or offer_id != self._outstanding:
            return False
        self._outstanding = None
        self._pending_local = None
        self.negotiate()
        return True

    def _use_negotiated_codec(self, downtrack: DownTrack, slot: negotiation.OutgoingSlot) -> None:
        """Payload types and extension ids as this connection negotiated them."""
        downtrack.payload_type = slot.codec.payload_type
        downtrack.rtx_payload_type = slot.rtx.payload_type if slot.rtx is not None else None
        if self.single and self.last_local is not None:
            section = next((m for m in self.last_local.media if m.mid == slot.mid), None)
            if section is not None:
                downtrack.ext_remap = codecs.downstream_table(section.extmaps)

    # -- our offer opening a single connection -------------------------------------
    def opening_offer(
        self, receive: tuple[str, ...], local: negotiation.LocalTransport
    ) -> SessionDescription:
        """The offer that opens a single connection (we call the client): see
        :func:`negotiation.build_opening_offer`. Its answer goes to :meth:`opened`."""
        self.sdp_version += 1
        offer = negotiation.build_opening_offer(
            self.slots,
            receive,
            local,
            session_id=self.session.sdp_session_id,
            version=self.sdp_version + self.session.publishing.sdp_version,
        )
        for track_sid, downtrack in self.downtracks.items():
            slot = self.slot_of.get(track_sid)
            if slot is not None:
                downtrack.mid = slot.mid
        self._pending_local = offer
        return offer

    def opened(self, answer: SessionDescription) -> SessionDescription:
        """The client answered our opening offer: send on the sections it receives on
        in the codec we offered, and offer what found no section. Our offer, as taken."""
        offer = self._pending_local
        if offer is None:
            raise NegotiationError("no opening offer is outstanding; this answer is not for us")
        self._pending_local = None
        answered = {m.mid: m for m in answer.media}
        for section in offer.media:
            theirs = answered.get(section.mid)
            if theirs is None or theirs.port == 0:
                section.port = 0
                section.direction = "inactive"
        self.last_local = offer
        now = self.session.room.manager.clock()
        for track_sid, downtrack in self.downtracks.items():
            slot = self.slot_of.get(track_sid)
            theirs = answered.get(downtrack.mid)
            if slot is None or theirs is None or theirs.port == 0:
                continue
            if theirs.direction not in ("recvonly", "sendrecv"):
                continue
            if theirs.codec(slot.codec.payload_type) is None:
                continue  # the client dropped the codec we send this track in
            self._use_negotiated_codec(downtrack, slot)
            downtrack.attach(now)
        placed = {m.mid for m in offer.media}
        if self._dirty or any(s.active and s.mid not in placed for s in self.slots):
            self._dirty = False
            self.negotiate()
        return offer

    # -- the client's offers (single connection) -----------------------------------
    def take_client_offer(self, offer: SessionDescription) -> dict[str, negotiation.OutgoingSlot]:
        """The client offers the connection: our own offer, if out, gives way (we are
        the polite side), and tracks not yet negotiated take the sections the client
        offers to receive on. The slots to send on, by mid, for the answer."""
        if self._outstanding is not None:
            self._outstanding = None
            self._pending_local = None
            self._dirty = True
        known = {m.mid for m in (self.last_local.media if self.last_local else [])}
        taken = {slot.mid for slot in self.slots if slot.mid in known}
        self._spare = Counter()
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
            else:
                self._spare[media.kind] += 1
        return {slot.mid: slot for slot in self.slots}

    def answered(self, answer: SessionDescription) -> None:
        """Our answer to the client's offer is made: send on the sections it lets us
        send on, stop on the others, and offer what found no section."""
        sending = {
            section.mid
            for section in answer.media
            if section.port != 0 and section.direction in ("sendonly", "sendrecv")
        }
        self.last_local = answer
        now = self.session.room.manager.clock()
        for track_sid, downtrack in self.downtracks.items():
            slot = self.slot_of.get(track_sid)
            if slot is None:
                continue
            if downtrack.mid in sending and not downtrack.negotiated:
                self._use_negotiated_codec(downtrack, slot)
                downtrack.attach(now)
            elif downtrack.mid not in sending and downtrack.negotiated:
                downtrack.detach()
        answered = {m.mid for m in answer.media}
        unsent = [slot for slot in self.slots if slot.active and slot.mid not in answered]
        self._asked = Counter()
        if unsent or self._dirty:
            self._dirty = False
            self.negotiate()

    def sending_tracks(self) -> dict[str, str]:
        """The track sid we send on each mid of our last local description."""
        if self.last_local is None:
            return {}
        sending = _sending_mids(self.last_local)
        return {
            slot.mid: slot.track_id for slot in self.slots if slot.active and slot.mid in sending
        }

    def stream_metadata(self) -> dict[str, dict[str, object]]:
        """What we send, by msid stream id: Matrix ``sdp_stream_metadata``."""
        streams: dict[str, dict[str, object]] = {}
        for track_sid, slot in self.slot_of.items():
            downtrack = self.downtracks.get(track_sid)
            if downtrack is None or not slot.active:
                continue
            info = downtrack.track.info
            entry = streams.setdefault(
                slot.stream,
                {
                    "purpose": "m.screenshare" if info.source in SCREEN_SOURCES else "m.usermedia",
                    "audio_muted": True,
                    "video_muted": True,
                },
            )
            key = "audio_muted" if info.kind is TrackKind.AUDIO else "video_muted"
            entry[key] = bool(info.muted)
        return streams

    def close(self) -> None:
        for track_sid in list(self.downtracks):
            self.unsubscribe(track_sid)


def _sending_mids(description: SessionDescription) -> set[str]:
    return {
        m.mid
        for m in description.media
        if m.mid is not None and m.port != 0 and m.direction in ("sendonly", "sendrecv")
    }


def _quality_for(track: PublishedTrack, width: int, height: int) -> int:
    """The lowest layer quality that covers a requested display size."""
    layers = sorted(track.info.layers, key=lambda layer: layer.quality)
    for layer in layers:
        if layer.width >= width and layer.height >= height:
            return layer.quality
    return 2
