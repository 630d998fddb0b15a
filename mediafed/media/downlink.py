"""One subscriber's downlink: how much it carries, and which layers fit.

The estimate comes from transport-wide feedback on what we send (media/bwe.py)
once the subscriber sends it, else from its REMB. Every half second, and when
the estimate moves by a tenth, each watched video gets the best layer that
fits (media/allocation.py); lower layers apply at once, higher ones only after
a hold so a noisy estimate does not flap (each switch costs a keyframe). A
video whose lowest layer does not fit is paused (audio goes on) and the
subscriber is told; it resumes, as any upgrade, after the hold. When a better
layer is wanted but does not fit, a probe (padding on an RTX stream,
media/probe.py) finds out whether the link carries it: at the rate everything
wanted needs, up to three times the estimate; failed probes back off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING

from mediafed.media import allocation, bwe, events, probe
from mediafed.media.types import TrackKind, TrackSource
from mediafed.wire.rtcp import TransportCcFeedback

if TYPE_CHECKING:
    from mediafed.media.downtrack import DownTrack
    from mediafed.media.session import Session

log = logging.getLogger(__name__)

ALLOCATE_INTERVAL_S = 0.5
UPGRADE_HOLD_S = 2.0
PROBE_REACH = 3.0
"""A probe asks for at most this many times the current estimate."""
OVERRUN = 2.0
"""A layer this many times the estimate leaves at once (DownTrack.overrun)."""
PAUSE_HOLD_S = 2.0
ESTIMATE_STALE_S = 5.0
AUDIO_RESERVE_BPS = 64_000
"""Kept for an audio track before its rate is measured."""
AUDIO_OVERHEAD = 1.25
"""Measured audio (RTP bytes) plus SRTP, UDP and IP headers: small packets."""
SUBSCRIBER_START_BPS = 5_000_000
"""Until its feedback says otherwise, a subscriber's link is taken to carry the best
layers (a narrow one shows queueing within a second and is moved down)."""


class Downlink:
    """Bandwidth estimation, layer allocation and probing for one subscriber."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.estimate_bps: int | None = None
        """The subscriber's REMB, for browsers without transport-wide feedback."""
        self._estimate_at = 0.0
        self._allocated_at = -1.0
        self.bwe = bwe.BandwidthEstimator(SUBSCRIBER_START_BPS)
        """Send-side estimate of this participant's downlink (transport-wide feedback)."""
        self._probe: probe.Probe | None = None
        self._probed_at = -probe.PROBE_INTERVAL_S
        self._probe_interval_s = probe.PROBE_INTERVAL_S
        self._estimate_at_probe = 0
        self._cluster = 0
        self._short_since: dict[str, float] = {}
        """Track sid -> since when its lowest layer has not fit (pausing waits)."""
        self._fits_since: dict[str, tuple[int, float]] = {}
        """Track sid -> (quality, since when) a better layer than the current fits:
        moving up waits until it has for UPGRADE_HOLD_S."""

    @property
    def downtracks(self) -> dict[str, DownTrack]:
        return self.session.subscribing.downtracks

    def on_estimate(self, bitrate_bps: int, now: float) -> None:
        """The subscriber's downlink estimate (REMB) arrived."""
        self.estimate_bps = bitrate_bps
        self._estimate_at = now
        if now - self._allocated_at >= ALLOCATE_INTERVAL_S:
            self.allocate(now)

    def on_transport_feedback(self, feedback: TransportCcFeedback, now: float) -> None:
        """Transport-wide feedback on what we sent this participant."""
        target = self.session.subscriber.endpoint.target
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
            send_us, size, is_probe = record
            results.append(
                bwe.PacketResult(
                    seq, send_us, size, arrival_us if delta_us is not None else None, is_probe
                )
            )
        if not results:
            return
        before = self.bwe.estimate_bps
        self.bwe.on_feedback(results, now, rtt_s=self.rtt_ms() / 1000)
        after = self.bwe.estimate_bps
        if (
            after < 0.9 * before
            or after > 1.1 * before
            or (now - self._allocated_at >= ALLOCATE_INTERVAL_S)
        ):
            self.allocate(now)

    def rtt_ms(self) -> float:
        """The longest round trip measured on this subscriber's streams (0: none yet)."""
        return max((d.rtt_ms for d in self.downtracks.values() if d.rtt_ms), default=0.0)

    def budget_bps(self, now: float) -> int | None:
        """What this subscriber's downlink carries: the send-side estimate once its
        feedback arrives, else the browser's REMB, else unknown (None)."""
        if self.bwe.has_feedback:
            return self.bwe.estimate_bps
        if self.estimate_bps is None or now - self._estimate_at > ESTIMATE_STALE_S:
            return None
        return self.estimate_bps

    def allocate(self, now: float) -> None:
        """Pick each watched video's layer within the estimate; timers call this too."""
        self._allocated_at = now
        downtracks = self.downtracks
        videos = [
            d
            for d in downtracks.values()
            if d.track.kind is TrackKind.VIDEO and d.negotiated and not d.disabled
        ]
        if not videos:
            return
        estimate = self.budget_bps(now)
        rates: dict[Hashable, dict[int, int]] = {}
        if estimate is None:
            choice: dict[Hashable, int] = {d.track.sid: 2 for d in videos}
        else:
            audio = sum(
                _audio_bps(d) for d in downtracks.values() if d.track.kind is TrackKind.AUDIO
            )
            budget = int(estimate * 0.95) - audio
            demands = [
                allocation.Demand(
                    key=d.track.sid,
                    max_quality=d.max_quality,
                    layers=d.track.layer_bitrates(now),
                    priority=1 if d.track.info.source is TrackSource.SCREEN_SHARE else 0,
                )
                for d in videos
            ]
            rates = {demand.key: demand.layers for demand in demands}
            # Pausing needs probes to find the way back: the send-side estimate only.
            choice = allocation.allocate(budget, demands, may_pause=self.bwe.has_feedback)
            missing = allocation.shortfall(demands, choice)
            if missing is not None and self.bwe.has_feedback:
                spent = sum(
                    demand.layers[choice[demand.key]]
                    for demand in demands
                    if choice.get(demand.key, allocation.PAUSED) != allocation.PAUSED
                )
                wanted = (spent + missing + audio) / 0.95
                # Probe for what everyone wants, not only the next step, so a link that
                # came back is found in one or two probes: at most PROBE_REACH times the
                # estimate (a probe far above a narrow link costs it a queue's worth).
                everything = (allocation.full_demand(demands) + audio) / 0.95
                reach = min(everything * 1.25, estimate * PROBE_REACH)
                self._maybe_probe(max(wanted * 1.25, estimate * 1.5, reach), now)
        for downtrack in videos:
            quality = choice.get(downtrack.track.sid, downtrack.allocated_quality)
            before = downtrack.allocated_quality
            sid = downtrack.track.sid
            if quality == allocation.PAUSED and before != allocation.PAUSED:
                # pause only when the lowest layer has not fit for a while: one
                # keyframe, or a dip of the estimate, must not stop the picture
                since = self._short_since.setdefault(sid, now)
                if now - since < PAUSE_HOLD_S:
                    quality = min(before, 0)
            else:
                self._short_since.pop(sid, None)
            if quality > before:
                # up (or out of a pause) once a better layer has fit for a while: a
                # probe that a link's burst allowance let through fast must not do it
                fit = self._fits_since.get(sid)
                fit = (quality, now) if fit is None else (min(fit[0], quality), fit[1])
                self._fits_since[sid] = fit
                settled = now - fit[1] >= UPGRADE_HOLD_S
                held = now - downtrack.allocated_at >= UPGRADE_HOLD_S
                quality = fit[0] if settled and held else before
            else:
                self._fits_since.pop(sid, None)
            if quality != before:
                downtrack.allocated_quality = quality
                downtrack.allocated_at = now
                paused = quality == allocation.PAUSED
                if paused != (before == allocation.PAUSED):
                    self._paused(downtrack, paused)
            current = downtrack.layer
            downtrack.overrun = (
                estimate is not None
                and current is not None
                and rates[sid].get(current.quality, 0) > OVERRUN * estimate
            )
            downtrack.select_layer(now)

    def _paused(self, downtrack: DownTrack, paused: bool) -> None:
        """Tell the subscriber (LiveKit's StreamStateUpdate) and the log."""
        session = self.session
        log.info(
            "- %s %s %s (downlink %d bps)",
            session.label,
            "pauses" if paused else "resumes",
            downtrack.track.sid,
            self.bwe.estimate_bps,
        )
        session.listener.on_room_event(events.StreamStateChanged(downtrack.track.info, paused))

    def _maybe_probe(self, rate_bps: float, now: float) -> None:
        """Send a probe cluster at ``rate_bps`` unless one ran lately.

        A probe that did not raise the estimate by a tenth failed: the link is full,
        and probing it again soon only drops its packets. After each failure the wait
        doubles, up to PROBE_BACKOFF_MAX_S; a probe that succeeds resets it.
        """
        if self._probe is not None:
            return
        found_room = self._cluster and self.bwe.estimate_bps > 1.1 * self._estimate_at_probe
        if found_room:
            self._probe_interval_s = probe.PROBE_INTERVAL_S  # climb on without the backoff
        if now - self._probed_at < self._probe_interval_s:
            return
        if self._cluster and not found_room:
            self._probe_interval_s = min(2 * self._probe_interval_s, probe.PROBE_BACKOFF_MAX_S)
            if now - self._probed_at < self._probe_interval_s:
                return
        target = self.session.subscriber.endpoint.target
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
        self._estimate_at_probe = self.bwe.estimate_bps
        self._cluster += 1
        self._probe = probe.Probe(self._cluster, min(rate_bps, bwe.MAX_BPS), now)
        stream = probe.PaddingStream(
            carrier.rtx_payload_type or 0, carrier.rtx_ssrc, target.twcc_id
        )
        log.debug("- %s probes at %d bps", self.session.label, int(rate_bps))
        self._send_probe(stream, carrier)

    def _send_probe(self, stream: probe.PaddingStream, carrier: DownTrack) -> None:
        running = self._probe
        session = self.session
        if running is None or session.closed:
            return
        target = session.subscriber.endpoint.target
        now = session.room.manager.clock()
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


def _audio_bps(downtrack: DownTrack) -> int:
    """What one audio track takes of the downlink: measured, else AUDIO_RESERVE_BPS."""
    measured = max((layer.bitrate_bps for layer in downtrack.track.layers.values()), default=0)
    return int(measured * AUDIO_OVERHEAD) if measured else AUDIO_RESERVE_BPS
