"""RTCP compound packets: SR, RR, SDES, BYE, PLI, FIR, generic NACK, REMB, transport-cc.

Parsing must raise only :class:`RtcpError`; what parses must write back (or refuse with
:class:`RtcpBuildError`) and parse again to the same values. Every transport-cc
feedback parsed is also fed through a :class:`TransportCcRecorder`, as arrivals.
"""

from __future__ import annotations

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    _common.load_native()
    from mediafed.wire import rtcp, twcc


def test_one_input(data: bytes) -> None:
    try:
        packets = rtcp.parse_rtcp(data)
    except rtcp.RtcpError:
        return
    for packet in packets:
        try:
            written = packet.serialize()
        except rtcp.RtcpBuildError:
            continue
        again = rtcp.parse_rtcp(written)
        assert len(again) == 1, again
        if isinstance(packet, rtcp.GenericNack):
            # PID/BLP pairs may be packed differently; the set of lost packets is the same.
            assert isinstance(again[0], rtcp.GenericNack)
            assert set(again[0].lost) == set(packet.lost), (again[0], packet)
        elif not isinstance(packet, rtcp.UnknownRtcp):
            assert again[0] == packet, (again[0], packet)
        if isinstance(packet, rtcp.TransportCcFeedback):
            recorder = twcc.TransportCcRecorder(1, media_ssrc=packet.media_ssrc or 1)
            now_us = 1_000_000
            for seq, delta_us in packet.packets:
                if delta_us is not None:
                    now_us += delta_us
                    recorder.record(seq, max(now_us, 0))
            for feedback in recorder.build_feedback(now_us):
                rtcp.parse_rtcp(feedback)


def main() -> None:
    _common.run(test_one_input)


if __name__ == "__main__":
    main()
