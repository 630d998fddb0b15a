"""A real WebRTC client (aiortc) driving the in-process session API.

Publishers paint frames a subscriber can check: the whole picture is one
colour (per publisher) and a frame counter is written into the top rows as
bright and dark blocks. Audio is a 440 Hz tone.
"""

from __future__ import annotations

import asyncio
import fractions
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import AudioFrame, VideoFrame

from mediafed.media import Room, Session, events

COUNTER_BITS = 12
BLOCK = 16


class PatternVideoTrack(VideoStreamTrack):
    """Solid colour frames with a frame counter in the top rows."""

    def __init__(self, rgb: tuple[int, int, int], width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.rgb = rgb
        self.width = width
        self.height = height
        self.count = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        image[:, :] = self.rgb
        for bit in range(COUNTER_BITS):
            value = 255 if (self.count >> bit) & 1 else 0
            image[0:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = value
        self.count += 1
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


class ToneAudioTrack(AudioStreamTrack):
    """A 440 Hz tone, 20 ms frames, 48 kHz mono."""

    def __init__(self) -> None:
        super().__init__()
        self.samples = 0

    async def recv(self) -> AudioFrame:
        frame = await super().recv()  # timing and a silent frame of the right shape
        count = frame.samples
        t = (np.arange(count) + self.samples) / 48000
        self.samples += count
        tone = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16)
        data = np.tile(tone.reshape(1, -1), (1, len(frame.layout.channels))).reshape(1, -1)
        out = AudioFrame.from_ndarray(data, format="s16", layout=frame.layout.name)
        out.sample_rate = 48000
        out.pts = frame.pts
        out.time_base = fractions.Fraction(1, 48000)
        return out


def read_counter(image: np.ndarray) -> int:
    value = 0
    for bit in range(COUNTER_BITS):
        block = image[2 : BLOCK - 2, bit * BLOCK + 2 : (bit + 1) * BLOCK - 2]
        if block.mean() > 128:
            value |= 1 << bit
    return value


def dominant_colour(image: np.ndarray) -> tuple[int, int, int]:
    body = image[BLOCK * 2 :, :, :]
    mean = body.reshape(-1, 3).mean(axis=0)
    return (int(mean[0]), int(mean[1]), int(mean[2]))


@dataclass
class ReceivedVideo:
    frames: int = 0
    counters: list[int] = field(default_factory=list)
    colour: tuple[int, int, int] = (0, 0, 0)
    width: int = 0
    first_frame_at: float = 0.0


@dataclass
class ReceivedAudio:
    frames: int = 0
    peak_rms: float = 0.0


class AiortcParticipant:
    """One participant: a publisher and a subscriber RTCPeerConnection."""

    def __init__(
        self, room: Room, identity: str, *, video_codec: str | None = None, pixels: bool = True
    ) -> None:
        """``pixels=False``: count decoded frames without reading their colour and
        counter (much lighter where many watchers decode in one busy process)."""
        self.room = room
        self.identity = identity
        self.video_codec = video_codec
        self.pixels = pixels
        self.pub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        # MAX_BUNDLE: sections added by later offers must join the one transport.
        self.sub = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.session: Session | None = None
        self.events: list[events.RoomEvent] = []
        self.video: dict[str, ReceivedVideo] = {}
        self.audio: dict[str, ReceivedAudio] = {}
        self._offers: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self.answer_errors: list[Exception] = []
        self.data_messages: list[tuple[str, str, bytes]] = []
        self.server_channels: dict[str, Any] = {}
        self.channel_messages: list[tuple[str, bytes]] = []
        self.sub.on("track", self._on_track)
        self.sub.on("datachannel", self._on_datachannel)

    # -- SessionListener ----------------------------------------------------
    def on_room_event(self, event: events.RoomEvent) -> None:
        self.events.append(event)

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        self._offers.put_nowait((sdp, offer_id))

    def on_data_message(self, target: str, label: str, data: bytes) -> None:
        self.data_messages.append((target, label, data))

    def _on_datachannel(self, channel: Any) -> None:
        self.server_channels[channel.label] = channel

        @channel.on("message")  # type: ignore[misc]
        def on_message(message: bytes | str) -> None:
            data = message.encode() if isinstance(message, str) else message
            self.channel_messages.append((channel.label, data))

    def on_local_candidate(
        self, target: str, candidate: str, sdp_mid: str, sdp_mline_index: int
    ) -> None:
        pass

    # -- driving --------------------------------------------------------------
    async def join(self, **kwargs: Any) -> Session:
        self.session = await self.room.join(self.identity, listener=self, **kwargs)
        self.session.start_subscriber()
        self._tasks.append(asyncio.create_task(self._answer_offers()))
        return self.session

    async def _answer_offers(self) -> None:
        while True:
            sdp, offer_id = await self._offers.get()
            # aiortc only starts receivers added by a renegotiation if its
            # transport has finished connecting; browsers have no such race.
            await self._until_connected(self.sub)
            try:
                await self.sub.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
                answer = await self.sub.createAnswer()
                await self.sub.setLocalDescription(answer)
                assert self.session is not None
                await self.session.accept_subscriber_answer(self.sub.localDescription.sdp, offer_id)
            except Exception as exc:  # recorded for the test to assert on
                self.answer_errors.append(exc)

    @staticmethod
    async def _until_connected(pc: RTCPeerConnection, timeout: float = 10.0) -> None:
        if pc.connectionState == "new" and pc.remoteDescription is None:
            return  # the very first offer
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pc.connectionState not in ("connected", "failed", "closed"):
            if loop.time() > deadline:
                return
            await asyncio.sleep(0.02)

    async def publish(self, *tracks: MediaStreamTrack) -> None:
        for track in tracks:
            transceiver = self.pub.addTransceiver(track, direction="sendonly")
            if track.kind == "video" and self.video_codec:
                preferred = [
                    c
                    for c in RTCRtpSender.getCapabilities("video").codecs
                    if c.mimeType.lower() in (f"video/{self.video_codec.lower()}", "video/rtx")
                ]
                transceiver.setCodecPreferences(preferred)
        offer = await self.pub.createOffer()
        await self.pub.setLocalDescription(offer)
        assert self.session is not None
        answer = await self.session.answer_publisher_offer(self.pub.localDescription.sdp)
        await self.pub.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        key = track.id
        loop = asyncio.get_running_loop()
        if track.kind == "video":
            video = self.video.setdefault(key, ReceivedVideo())
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                video.frames += 1
                if not video.first_frame_at:
                    video.first_frame_at = loop.time()
                video.width = frame.width
                if self.pixels:
                    image = frame.to_ndarray(format="rgb24")
                    video.counters.append(read_counter(image))
                    video.colour = dominant_colour(image)
        else:
            audio = self.audio.setdefault(key, ReceivedAudio())
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                samples = frame.to_ndarray().astype(np.float64)
                audio.frames += 1
                audio.peak_rms = max(audio.peak_rms, float(np.sqrt(np.mean(samples**2))))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pub.close()
        await self.sub.close()
        if self.session is not None and not self.session.closed:
            await self.session.leave()


async def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; fail with the timeout otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
