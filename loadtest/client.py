"""Simulated participants: publishers replay pre-encoded media, subscribers count packets.

A publisher offers its tracks (RFC 8829 offer/answer, RFC 8843 BUNDLE), then
replays ``loadtest.media`` clips with fresh RTP headers at the clips' frame
rate. A subscriber answers the SFU's offer with receive-only sections and
hands every decrypted RTP packet to ``loadtest.stats.ReceiverStats``; it
never decodes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from loadtest.media import Clip
from loadtest.peer import Certificate, LightPeer, MediaSection, PeerError, parse_sdp
from loadtest.rtp import (
    ABS_SEND_TIME_EXT_ID,
    ABS_SEND_TIME_URI,
    DEFAULT_MAX_PAYLOAD,
    MID_EXT_ID,
    MID_URI,
    RtpSender,
    keyframe_requests,
    packetize_vp8,
    read_send_time_ns,
)
from loadtest.stats import ReceiverStats
from loadtest.target import SignalSession

log = logging.getLogger(__name__)

OPUS_PT = 111
VP8_PT = 96
SOURCE_KIND = {"microphone": "audio", "camera": "video", "screen_share": "video"}
PACING_FACTOR = 2.5
PACING_INTERVAL_S = 0.005


@dataclass(frozen=True, slots=True)
class Clips:
    """The media every publisher of a run replays."""

    audio: Clip
    camera: Clip
    screen: Clip

    def for_source(self, source: str) -> Clip:
        return {"microphone": self.audio, "camera": self.camera, "screen_share": self.screen}[
            source
        ]


def _session_header(session_id: int, mids: list[str]) -> list[str]:
    return [
        "v=0",
        f"o=- {session_id} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE " + " ".join(mids),
        "a=msid-semantic: WMS lt",
    ]


def build_offer(peer: LightPeer, sources: tuple[str, ...], ssrcs: list[int]) -> str:
    """A sendonly offer, one m= section per source, bundled, with SSRCs signaled."""
    host, port = peer.default_address()
    mids = [str(i) for i in range(len(sources))]
    lines = _session_header(random.getrandbits(62), mids)
    for mid, source, ssrc in zip(mids, sources, ssrcs, strict=True):
        kind = SOURCE_KIND[source]
        pt = OPUS_PT if kind == "audio" else VP8_PT
        lines += [
            f"m={kind} {port} UDP/TLS/RTP/SAVPF {pt}",
            f"c=IN IP4 {host}",
            *peer.transport_sdp_lines("actpass"),
            f"a=mid:{mid}",
            f"a=extmap:{MID_EXT_ID} {MID_URI}",
            f"a=extmap:{ABS_SEND_TIME_EXT_ID} {ABS_SEND_TIME_URI}",
            "a=sendonly",
            f"a=msid:lt-{ssrc} {source}-{mid}",
            "a=rtcp-mux",
        ]
        if kind == "audio":
            lines += [f"a=rtpmap:{pt} opus/48000/2", f"a=fmtp:{pt} minptime=10;useinbandfec=1"]
        else:
            lines += [
                f"a=rtpmap:{pt} VP8/90000",
                f"a=rtcp-fb:{pt} nack",
                f"a=rtcp-fb:{pt} nack pli",
                f"a=rtcp-fb:{pt} ccm fir",
            ]
        lines += [f"a=ssrc:{ssrc} cname:lt-{ssrc}", f"a=ssrc:{ssrc} msid:lt-{ssrc} {source}-{mid}"]
    return "\r\n".join(lines) + "\r\n"


DATACHANNEL = -1  # _accepts() result for a data-channel section


def _accepts(section: MediaSection) -> int | None:
    """The payload type we take in ``section``, DATACHANNEL, or None to reject it."""
    if section.port == 0:
        return None
    if section.kind == "application" and "webrtc-datachannel" in section.formats:
        return DATACHANNEL
    if section.kind not in ("audio", "video"):
        return None
    return section.payload_type_for("opus" if section.kind == "audio" else "VP8")


def build_answer(peer: LightPeer, offer_sdp: str) -> str:
    """A receive-only answer to an SFU's offer; sections we cannot take get port 0.

    A data-channel section is accepted so that a BUNDLE holding only it (the
    first subscriber offer of a LiveKit-style server) stays up; the client
    never starts SCTP on it and ignores what arrives there.
    """
    offer = parse_sdp(offer_sdp)
    host, port = peer.default_address()
    accepted = [s.mid for s in offer.media if _accepts(s) is not None]
    if not accepted:
        raise PeerError("the SFU offered no Opus, VP8 or data-channel section to accept")
    lines = _session_header(random.getrandbits(62), accepted)
    for section in offer.media:
        pt = _accepts(section)
        if pt is None:
            fmt = section.formats[0] if section.formats else "0"
            lines += [f"m={section.kind} 0 {section.protocol} {fmt}", "c=IN IP4 0.0.0.0"]
            if section.mid:
                lines.append(f"a=mid:{section.mid}")
            continue
        if pt == DATACHANNEL:
            lines += [
                f"m=application {port} {section.protocol} webrtc-datachannel",
                f"c=IN IP4 {host}",
                *peer.transport_sdp_lines("active"),
                f"a=mid:{section.mid}",
                "a=sctp-port:5000",
            ]
            continue
        direction = "recvonly" if section.direction in ("sendonly", "sendrecv") else "inactive"
        lines += [
            f"m={section.kind} {port} {section.protocol} {pt}",
            f"c=IN IP4 {host}",
            *peer.transport_sdp_lines("active"),
            f"a=mid:{section.mid}",
            f"a={direction}",
            "a=rtcp-mux",
            f"a=rtpmap:{pt} {section.rtpmap[pt]}",
        ]
        if pt in section.fmtp:
            lines.append(f"a=fmtp:{pt} {section.fmtp[pt]}")
        if section.kind == "video":
            lines += [f"a=rtcp-fb:{pt} nack", f"a=rtcp-fb:{pt} nack pli"]
    return "\r\n".join(lines) + "\r\n"


class Publisher:
    """Publishes ``sources`` and replays their clips until closed."""

    def __init__(
        self,
        name: str,
        session: SignalSession,
        certificate: Certificate,
        clips: Clips,
        sources: tuple[str, ...],
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.name = name
        self.session = session
        self.peer = LightPeer(f"{name}/pub", certificate)
        self.clips = clips
        self.sources = sources
        self.max_payload = max_payload
        self.feed = ""
        self.packets_sent = 0
        self.keyframes_requested = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._keyframe_wanted: set[int] = set()
        self.peer.on_rtcp = self._on_rtcp

    def _on_rtcp(self, compound: bytes) -> None:
        # A browser answers PLI/FIR with a keyframe; we restart the clip, which opens with one.
        wanted = keyframe_requests(compound)
        if wanted:
            self.keyframes_requested += 1
            self._keyframe_wanted |= wanted

    async def start(self) -> None:
        await self.peer.gather(ice_controlling=True)
        ssrcs = random.sample(range(1, 2**32), len(self.sources))
        offer = build_offer(self.peer, self.sources, ssrcs)
        result = await self.session.publish(offer, self.sources)
        self.feed = result.feed
        await self.peer.set_remote(parse_sdp(result.answer_sdp), we_offered=True)
        await self.session.on_remote_candidate("publisher", self.peer.add_remote_candidate)
        await self.peer.connect()
        log.info("- %s publishing %s as feed %s", self.name, ",".join(self.sources), self.feed)
        for index, (source, ssrc) in enumerate(zip(self.sources, ssrcs, strict=True)):
            clip = self.clips.for_source(source)
            sender = RtpSender(
                ssrc,
                OPUS_PT if clip.kind == "audio" else VP8_PT,
                clip.clock_rate,
                str(index),
                random.getrandbits(16),
            )
            self._tasks.append(
                asyncio.create_task(self._replay(clip, sender), name=f"{self.name}-{source}")
            )

    async def _replay(self, clip: Clip, sender: RtpSender) -> None:
        """Send one frame every ``frame_interval_s`` on an absolute schedule (no drift)."""
        loop = asyncio.get_running_loop()
        interval = clip.frame_interval_s
        next_at = loop.time() + random.uniform(0, interval)
        timestamp = random.getrandbits(32)
        picture_id = random.getrandbits(15)
        index = 0
        video = clip.kind == "video"
        frames = clip.frames
        # libwebrtc's pacer sends at 2.5x the target bitrate in short bursts, so a
        # big frame leaves as several bursts rather than one.
        burst_bytes = max(1, int(PACING_FACTOR * clip.bitrate_bps * PACING_INTERVAL_S / 8))
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if video and sender.ssrc in self._keyframe_wanted:
                self._keyframe_wanted.discard(sender.ssrc)
                index = 0  # the clip's first frame is its keyframe
            frame = frames[index % len(frames)]
            if video:
                payloads = packetize_vp8(frame, picture_id, self.max_payload)
                picture_id = (picture_id + 1) & 0x7FFF
            else:
                payloads = [frame]
            last = len(payloads) - 1
            budget = burst_bytes
            for i, payload in enumerate(payloads):
                if video and budget <= 0:
                    # Paced like a browser: the rest of the frame in the next burst.
                    await asyncio.sleep(PACING_INTERVAL_S)
                    budget = burst_bytes
                packet = sender.build(payload, timestamp, i == last or not video, time.time_ns())
                self.peer.send_rtp(packet)
                budget -= len(packet)
            self.packets_sent += len(payloads)
            timestamp += clip.ticks_per_frame
            index += 1
            next_at += interval
            if next_at < loop.time() - 1.0:
                next_at = loop.time()  # fell far behind (overloaded client): do not burst

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.peer.close()


class Subscriber:
    """Receives the SFU's forwarded media and counts it."""

    def __init__(self, name: str, session: SignalSession, certificate: Certificate) -> None:
        self.name = name
        self.session = session
        self.peer = LightPeer(f"{name}/sub", certificate)
        self.stats = ReceiverStats(name)
        self.first_media = asyncio.Event()

    def _on_rtp(self, packet: bytes, arrival_ns: int) -> None:
        # Latency: kernel arrival time against the publisher's send time, both
        # time.time_ns() clocks of this machine.
        self.stats.on_rtp(packet, time.monotonic_ns(), read_send_time_ns(packet), arrival_ns)
        if not self.first_media.is_set():
            self.first_media.set()

    async def start(self, feeds: tuple[str, ...]) -> None:
        if not self.stats.join_started_s:
            self.stats.join_started_s = time.monotonic()
        offer_sdp = await self.session.subscribe(feeds)
        offer = parse_sdp(offer_sdp)
        # The offerer is controlling unless it is ICE-lite (RFC 8445 section 6.1.1).
        await self.peer.gather(ice_controlling=offer.ice_lite)
        self.peer.on_rtp = self._on_rtp
        await self.peer.set_remote(offer, we_offered=False)
        await self.session.answer_subscription(build_answer(self.peer, offer_sdp))
        await self.session.on_remote_candidate("subscriber", self.peer.add_remote_candidate)
        self.session.on_reoffer(lambda sdp: build_answer(self.peer, sdp))
        await self.peer.connect()

    async def close(self) -> None:
        await self.peer.close()
