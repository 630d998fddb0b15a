"""``loadtest --impair``: what a condition says, and the refusals (the calls themselves
run in tests/signal/test_lossy_links.py)."""

from __future__ import annotations

import pytest

from loadtest.__main__ import parse_args
from loadtest.impaired import Impairment, Outcome, markdown


def test_conditions_name_whose_link_and_what() -> None:
    viewer = Impairment.parse("viewer:loss=5")
    assert (viewer.side, viewer.link.loss_up, viewer.link.loss_down) == ("viewer", 5, 5)
    assert str(viewer) == "loss 5%/5% up/down on the viewer's link"
    slow = Impairment.parse("publisher:loss=2,delay=75,jitter=10")
    assert (slow.delay_ms, slow.jitter_ms) == (75, 10)
    assert str(slow) == "loss 2%/2% up/down, 150 ms RTT ±10 on the publisher's link"
    both = Impairment.parse("rate_down=500")
    assert both.side == "both" and both.link.rate_down_kbit == 500
    assert str(Impairment()) == "clean"
    args = parse_args(["--impair", "viewer:loss=5", "--impair", "publisher:delay=75"])
    assert [i.side for i in args.impair] == ["viewer", "publisher"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sideways:loss=5", "say whose link, one of viewer, publisher, both"),
        ("viewer:delay=soon", "expected a number of milliseconds"),
        ("viewer:delay=5000", "milliseconds from 0 to 2000"),
        ("viewer:loss=150", "loss is a percentage"),
        ("viewer:colour=5", "unknown condition 'colour'"),
    ],
)
def test_bad_conditions_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Impairment.parse(text)


def test_the_table_has_a_row_per_condition() -> None:
    outcome = Outcome(
        impairment=Impairment.parse("viewer:loss=5"),
        frames=240,
        decoded_fps=19.5,
        published_fps=20.0,
        longest_gap_ms=180,
        capture_gap_ms=60,
        loop_lag_ms=5,
        audio_frames=1190,
        nacks=31,
        retransmitted=29,
        keyframe_requests=1,
    )
    table = markdown([outcome], measure_s=12.0)
    header, rule, row = table.splitlines()
    assert header.startswith("| condition |") and rule.startswith("|---|")
    assert row == (
        "| loss 5%/5% up/down on the viewer's link | 19.5 / 20.0 | 98% | 180 ms | 99 "
        "| 31 | 29 | 1 |"
    )
