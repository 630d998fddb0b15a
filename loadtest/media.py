"""Pre-encoded media for the load-test publishers: real VP8 and Opus frames made once.

Frames are encoded with PyAV (libvpx, libopus) from a synthetic moving test
pattern and a tone, then replayed in a loop with fresh RTP headers. The video
clip starts with its only keyframe, so every loop restarts decodable. VP8 is
RFC 6386, its RTP payload RFC 7741; Opus is RFC 6716, its RTP payload RFC 7587.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

log = logging.getLogger(__name__)

OPUS_FRAME_SAMPLES = 960  # 20 ms at 48 kHz


@dataclass(frozen=True, slots=True)
class Clip:
    """Encoded frames to replay, ``frame_interval_s`` apart, ``ticks_per_frame`` RTP ticks."""

    kind: str  # "audio" or "video"
    codec: str  # "VP8" or "opus"
    clock_rate: int
    frame_interval_s: float
    ticks_per_frame: int
    frames: tuple[bytes, ...]

    @property
    def bitrate_bps(self) -> float:
        total = sum(len(f) for f in self.frames)
        return 8 * total / (len(self.frames) * self.frame_interval_s)


def _pattern(width: int, height: int, index: int) -> np.ndarray:
    """A moving gradient with a bouncing box: enough motion to keep the encoder busy."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = (x + 4 * index) % 256
    frame[..., 1] = (y + 2 * index) % 256
    frame[..., 2] = ((x + y) // 2 + 6 * index) % 256
    size = max(8, height // 4)
    bx = (index * 7) % max(1, width - size)
    by = (index * 5) % max(1, height - size)
    frame[by : by + size, bx : bx + size] = (255, 255, 255)
    return frame


def encode_vp8(
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    bitrate_bps: int = 500_000,
    seconds: float = 2.0,
) -> Clip:
    """Encode ``seconds`` of test pattern as VP8 with one keyframe at the start."""
    count = max(1, round(fps * seconds))
    codec = av.CodecContext.create("libvpx", "w")
    codec.width = width
    codec.height = height
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, fps)
    codec.framerate = Fraction(fps, 1)
    codec.bit_rate = bitrate_bps
    codec.gop_size = count + 1
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "error-resilient": "1",
        "kf_max_dist": str(count + 1),
        "minrate": str(bitrate_bps),
        "maxrate": str(bitrate_bps),
        "bufsize": str(bitrate_bps),
    }
    frames: list[bytes] = []
    for index in range(count):
        image = av.VideoFrame.from_ndarray(_pattern(width, height, index), format="rgb24")
        image = image.reformat(format="yuv420p")
        image.pts = index
        for packet in codec.encode(image):
            frames.append(bytes(packet))
    for packet in codec.encode(None):
        frames.append(bytes(packet))
    if not frames or frames[0][0] & 0x01:
        raise RuntimeError("libvpx did not start the clip with a keyframe; check the av build")
    clip = Clip("video", "VP8", 90_000, 1 / fps, 90_000 // fps, tuple(frames))
    log.debug(
        "- VP8 clip %sx%s@%s: %s frames, %.0f bps", width, height, fps, count, clip.bitrate_bps
    )
    return clip


def encode_opus(bitrate_bps: int = 32_000, seconds: float = 2.0) -> Clip:
    """Encode ``seconds`` of a warbling tone as 20 ms Opus frames."""
    rate = 48_000
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = rate
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = bitrate_bps
    codec.time_base = Fraction(1, rate)
    count = max(1, round(seconds / 0.02))
    t = np.arange(count * OPUS_FRAME_SAMPLES) / rate
    tone = 0.3 * np.sin(2 * np.pi * (440 + 40 * np.sin(2 * np.pi * 0.5 * t)) * t)
    pcm = (tone * 32767).astype(np.int16)
    frames: list[bytes] = []
    for index in range(count):
        chunk = pcm[index * OPUS_FRAME_SAMPLES : (index + 1) * OPUS_FRAME_SAMPLES]
        stereo = np.repeat(chunk, 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = rate
        frame.pts = index * OPUS_FRAME_SAMPLES
        for packet in codec.encode(frame):
            frames.append(bytes(packet))
    for packet in codec.encode(None):
        frames.append(bytes(packet))
    if not frames:
        raise RuntimeError("libopus produced no frames; check the av build")
    return Clip("audio", "opus", rate, 0.02, OPUS_FRAME_SAMPLES, tuple(frames))
