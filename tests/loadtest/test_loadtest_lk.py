"""Reading `lk load-test`'s tables (LiveKit's load tester, run by ``loadtest.lk``)."""

from __future__ import annotations

import pytest

from loadtest.lk import LkResult, parse_lk_output

# What lk-load-test printed against mediafed (box-drawing rows of lipgloss tables).
OUTPUT = """\
Starting load test with 1 video publishers, 2 subscribers, room: lk-load
publishing simulcast video track - fmlqs_pub_0
Finished connecting to room, waiting 10s

Track loading:
┌────────┬─────────────────┬───────┬───────┬─────────┬───────────┐
│ Tester │ Track           │ Kind  │ Pkts. │ Bitrate │ Pkt. Loss │
├────────┼─────────────────┼───────┼───────┼─────────┼───────────┤
│ Sub 0  │ TR_yKC7kRT9thlt │ video │ 1413  │ 2.1mbps │ 0 (0%)    │
│        │                 │       │       │         │           │
│ Sub 1  │ TR_yKC7kRT9thlt │ video │ 1400  │ 2.1mbps │ 13 (0.92%)│
└────────┴─────────────────┴───────┴───────┴─────────┴───────────┘

Subscriber summaries:
┌────────┬────────┬───────────────────────┬─────────────────┬───────┐
│ Tester │ Tracks │ Bitrate               │ Total Pkt. Loss │ Error │
├────────┼────────┼───────────────────────┼─────────────────┼───────┤
│ Sub 0  │ 1/1    │ 2.1mbps               │ 0 (0%)          │ -     │
│ Sub 1  │ 1/1    │ 2.1mbps               │ 13 (0.92%)      │ -     │
│ Total  │ 2/2    │ 4.1mbps (2.1mbps avg) │ 13 (0.46%)      │ 0     │
└────────┴────────┴───────────────────────┴─────────────────┴───────┘
"""


def test_tables_give_tracks_packets_bitrate_and_loss() -> None:
    result = LkResult("mediafed", 0, 1, 0, 2, 10.0, exit_code=0)
    parse_lk_output(OUTPUT, result)
    assert (result.tracks_received, result.tracks_expected) == (2, 2)
    assert result.packets == 1413 + 1400
    assert result.bitrate_bps == pytest.approx(4.1e6)
    assert result.loss_percent == 0.46
    assert result.errors == 0


def test_failed_connections_leave_nothing_counted() -> None:
    failed = """\
Subscriber summaries:
│ Tester │ Tracks │ Bitrate               │ Total Pkt. Loss │ Error                           │
│ Sub 0  │ 0/1    │ NaNmbps               │  -              │ could not connect after timeout │
│ Total  │ 0/1    │ NaNmbps (NaNmbps avg) │  -              │ 1                               │
"""
    result = LkResult("livekit", 0, 1, 0, 1, 10.0, exit_code=0)
    parse_lk_output(failed, result)
    assert (result.tracks_received, result.tracks_expected, result.packets) == (0, 1, 0)
    assert result.bitrate_bps == 0.0 and result.loss_percent is None and result.errors == 1
