"""Data channels over the same DTLS association (RFC 8831/8832) with aiortc peers."""

from __future__ import annotations

import pytest

from mediafed.media import RoomManager
from tests.support.aiortc_client import AiortcParticipant, ToneAudioTrack, wait_for

pytestmark = pytest.mark.slow


async def test_client_channels_reach_the_session_and_server_channels_reach_the_client(
    rooms: RoomManager,
) -> None:
    room = rooms.get_or_create("data")
    alice = AiortcParticipant(room, "alice")
    bob = AiortcParticipant(room, "bob")
    try:
        await alice.join()
        bob_session = await bob.join()
        reliable = alice.pub.createDataChannel("_reliable")
        lossy = alice.pub.createDataChannel("_lossy", ordered=False, maxRetransmits=0)
        await alice.publish(ToneAudioTrack())
        await wait_for(lambda: reliable.readyState == "open" and lossy.readyState == "open")
        reliable.send(b"\x01hello reliable")
        lossy.send(b"\x02hello lossy")
        await wait_for(lambda: len(alice.data_messages) == 2)
        assert sorted(alice.data_messages) == [
            ("publisher", "_lossy", b"\x02hello lossy"),
            ("publisher", "_reliable", b"\x01hello reliable"),
        ]
        # The server opens _reliable and _lossy on each subscriber connection.
        await wait_for(
            lambda: all(
                label in bob.server_channels and bob.server_channels[label].readyState == "open"
                for label in ("_reliable", "_lossy")
            )
        )
        assert not bob.server_channels["_lossy"].ordered
        assert bob_session.send_data_message("reliable", b"to bob")
        assert bob_session.send_data_message("lossy", b"to bob, lossy")
        await wait_for(lambda: len(bob.channel_messages) == 2)
        assert sorted(bob.channel_messages) == [
            ("_lossy", b"to bob, lossy"),
            ("_reliable", b"to bob"),
        ]
    finally:
        await alice.close()
        await bob.close()
