"""Bandwidth probes (media/probe.py): padding packets and their pace."""

from __future__ import annotations

from mediafed.media.probe import (
    DURATION_S,
    PADDING_BYTES,
    SLOT_S,
    PaddingStream,
    Probe,
    padding_packet,
)
from mediafed.wire import rtp


def test_a_padding_packet_is_padding_only_with_a_transport_wide_number_slot() -> None:
    packet = padding_packet(PaddingStream(97, 0xABCDEF01, 3), 65536 + 7, 123456)
    assert len(packet) == 12 + 8 + PADDING_BYTES
    assert packet[0] & 0x20, "P bit: the payload is all padding"
    assert packet[1] == 97
    assert rtp.payload_offset(packet, len(packet)) == rtp.payload_end(packet, len(packet))
    at = rtp.find_extension(packet, len(packet), 3, 2)
    assert at == 12 + 4 + 1, "one-byte extension id 3, two bytes for the send target"
    seq, ts, ssrc = rtp.SEQ_TS_SSRC.unpack_from(packet, 2)
    assert (seq, ts, ssrc) == (7, 123456, 0xABCDEF01)


def test_a_probe_is_paced_over_its_duration_at_its_rate() -> None:
    probe = Probe(4, 3_000_000, start=10.0)
    per_packet = 12 + 8 + PADDING_BYTES
    assert probe.total == int(3_000_000 * DURATION_S / 8 / per_packet)
    sent, now, slots = 0, 10.0, 0
    while not probe.done:
        count = probe.due(now)
        assert count <= probe.total / 5, "never the whole cluster at once"
        assert probe.due(now) == 0, "nothing more before the next slot"
        sent += count
        slots += 1
        now = probe.next_at
    assert sent == probe.total
    assert now - 10.0 <= DURATION_S + SLOT_S
    assert slots >= 10
    # a late timer catches up rather than stretching the cluster
    late = Probe(5, 3_000_000, start=0.0)
    assert late.due(DURATION_S) == late.total
