"""A published track: its layers, its subscribers' DownTracks and its keyframe policy.

Forwarding runs from a :class:`~mediafed.media.layer.Layer` (one received
encoding) to the :class:`~mediafed.media.downtrack.DownTrack` of each
subscriber; the track between them decides what each layer costs, which
layers someone watches (dynacast) and when to ask the publisher for a
keyframe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mediafed.media import allocation
from mediafed.media.layer import Layer
from mediafed.media.types import TrackInfo, TrackKind

if TYPE_CHECKING:
    from mediafed.media.downtrack import DownTrack
    from mediafed.media.peer import MediaPeer

KEYFRAME_REQUEST_INTERVAL_S = 0.5
KEYFRAME_SOON_S = 0.1
"""The interval for a subscriber that has just connected: what was asked for before
could not reach it, and waiting out the whole interval shows a black tile."""
KEYFRAME_RETRY_S = 1.0


class PublishedTrack:
    """A track one participant publishes: its layers, subscribers and keyframe policy."""

    def __init__(
        self,
        info: TrackInfo,
        *,
        publisher: MediaPeer,
        mime: str,
        clock_rate: int,
        payload_type: int,
        rtx_payload_type: int | None,
        fmtp: dict[str, str],
        ext_table: bytes,
        twcc_id: int,
        level_id: int,
        mid_id: int,
        rid_id: int,
        rrid_id: int,
        nack_enabled: bool,
        cache_s: float = 1.0,
    ) -> None:
        self.info = info
        self.sid = info.sid
        self.kind = info.kind
        self.publisher = publisher
        self.mime = mime
        self.mime_lower = mime.lower()
        self.clock_rate = clock_rate
        self.payload_type = payload_type
        self.rtx_payload_type = rtx_payload_type
        self.fmtp = fmtp
        self.ext_table = ext_table
        self.twcc_id = twcc_id
        self.level_id = level_id
        self.mid_id = mid_id
        self.rid_id = rid_id
        self.rrid_id = rrid_id
        self.nack_enabled = nack_enabled
        self.cache_s = cache_s
        self.layers: dict[str, Layer] = {}
        self.downtracks: dict[str, DownTrack] = {}
        self.not_for = ""
        """An identity never subscribed to this track: its own publisher's, when the
        track is theirs shown again by a relay link (``Session.echo_of``)."""
        self.last_keyframe_request = -1.0
        self.keyframe_pending = False
        self.keyframe_soon = False
        self.keyframe_requests = 0
        """PLIs sent to the publisher."""
        self.reported_qualities: tuple[int, ...] | None = None
        self.muted = info.muted
        self.closed = False

    def layer(self, rid: str) -> Layer:
        layer = self.layers.get(rid)
        if layer is None:
            quality = 2
            for info in self.info.layers:
                if info.rid == rid:
                    quality = info.quality
                    break
            else:
                if rid:
                    quality = {"q": 0, "h": 1, "f": 2}.get(rid, 2)
            layer = Layer(self, rid=rid, quality=quality, cache_s=self.cache_s)
            self.layers[rid] = layer
        return layer

    def best_layer(self, max_quality: int = 2, now: float | None = None) -> Layer | None:
        """The highest active layer at or below ``max_quality`` (else the lowest active).

        With ``now``, active means receiving in the last second, else ever received."""
        if now is None:
            active = [layer for layer in self.layers.values() if layer.active]
        else:
            active = [layer for layer in self.layers.values() if layer.receiving(now)]
            if not active:
                active = [layer for layer in self.layers.values() if layer.active]
        if not active:
            active = list(self.layers.values())
        if not active:
            return None
        fitting = [layer for layer in active if layer.quality <= max_quality]
        if fitting:
            return max(fitting, key=lambda layer: layer.quality)
        return min(active, key=lambda layer: layer.quality)

    def request_keyframe(self, now: float, *, soon: bool = False) -> None:
        """Ask the publisher for a keyframe (PLI), at most every 500 ms (100 ms when
        ``soon``: for a subscriber that has just connected).

        A request inside the interval is not dropped but deferred to its end
        (:meth:`tick`): the subscriber that asked may be the only one waiting.
        """
        if self.kind is not TrackKind.VIDEO or self.closed:
            return
        interval = KEYFRAME_SOON_S if soon else KEYFRAME_REQUEST_INTERVAL_S
        since = now - self.last_keyframe_request
        if since < interval:
            if since > 0:  # (one made this very moment serves this one too)
                self.keyframe_pending = True
                self.keyframe_soon = self.keyframe_soon or soon
            return
        self.keyframe_pending = False
        self.keyframe_soon = False
        self.last_keyframe_request = now
        self.keyframe_requests += 1
        self.publisher.send_pli(self)

    def layer_bitrates(self, now: float) -> dict[int, int]:
        """Quality -> bitrate of the layers arriving now, else a default for the quality.

        The lowest layer always flows (dynacast keeps it): its measure is what it
        takes. A higher one may have just been resumed, and measures below what it
        sends once in use: the larger of measured and announced."""
        announced = {info.quality: info.bitrate_bps for info in self.info.layers}
        lowest = min((layer.quality for layer in self.layers.values()), default=0)
        rates: dict[int, int] = {}
        for layer in self.layers.values():
            if not layer.receiving(now):
                continue
            measured, stated = layer.bitrate_bps, announced.get(layer.quality, 0)
            rate = (measured or stated) if layer.quality == lowest else max(measured, stated)
            rates[layer.quality] = rate or allocation.DEFAULT_LAYER_BPS.get(layer.quality, 500_000)
        # Layers paused because nobody watched them (dynacast) may still be chosen:
        # the publisher resumes them when told they are wanted.
        for quality, bitrate in announced.items():
            rates.setdefault(quality, bitrate or allocation.DEFAULT_LAYER_BPS.get(quality, 500_000))
        return rates

    def wanted_qualities(self) -> tuple[int, ...]:
        """Simulcast qualities someone watches, plus the lowest (kept for a quick start)."""
        known = sorted(
            {info.quality for info in self.info.layers}
            | {layer.quality for layer in self.layers.values()}
        )
        if len(known) < 2:
            return tuple(known)
        wanted = {known[0]}
        for downtrack in self.downtracks.values():
            if not downtrack.negotiated or downtrack.disabled or downtrack.allocated_quality < 0:
                continue  # off, or paused for bandwidth
            ceiling = min(downtrack.max_quality, downtrack.allocated_quality)
            fitting = [quality for quality in known if quality <= ceiling]
            wanted.add(fitting[-1] if fitting else known[0])
            if downtrack.pending is not None and downtrack.layer is not None:
                # still receiving this one until the new layer's keyframe: keep it on
                wanted.add(downtrack.layer.quality)
        return tuple(sorted(wanted))

    def tick(self, now: float, *, housekeeping: bool = True) -> None:
        """Timer work: deferred keyframe requests, and asking again for subscribers
        still waiting after a second (the PLI or keyframe may be lost); with
        ``housekeeping`` (once a second) also bitrates and the cache trim."""
        if housekeeping:
            for layer in self.layers.values():
                layer.measure(now)
                layer.cache.trim(now)
        if self.kind is not TrackKind.VIDEO:
            return
        since = now - self.last_keyframe_request
        interval = KEYFRAME_SOON_S if self.keyframe_soon else KEYFRAME_REQUEST_INTERVAL_S
        deferred = self.keyframe_pending and since >= interval
        waiting = since >= KEYFRAME_RETRY_S and any(
            layer.keyframe_waiters for layer in self.layers.values()
        )
        if deferred or waiting:
            self.request_keyframe(now, soon=self.keyframe_soon)

    def close(self) -> None:
        self.closed = True
        for downtrack in list(self.downtracks.values()):
            downtrack.detach()
        self.downtracks.clear()
