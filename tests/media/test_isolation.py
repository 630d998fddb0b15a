"""Rooms are sealed: a participant of room A never receives or injects media in room B.

Real aiortc participants publish pattern video whose colour names the room;
attackers try what an SFU must not allow: an SSRC room B uses, a subscription
to room B's track, another endpoint's ICE username, valid SRTP from an address
that passed no check. What crossed rooms is counted from what viewers decoded
and what the relay forwarded: it must be 0.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pylibsrtp
import pytest
from aioice import stun
from aiortc import RTCSessionDescription

from mediafed.errors import LocalProtocolError
from mediafed.media import RoomManager
from mediafed.transport.dtls import SrtpKeys
from mediafed.transport.ice import binding_request
from mediafed.transport.srtp import SrtpContext
from mediafed.worker import Worker
from tests.support.aiortc_client import AiortcParticipant, PatternVideoTrack, wait_for
from tests.support.media import media_config, use_python_paths

from .test_downtrack import KEY, OFFER, PUB_SSRC, vp8_packet

pytestmark = pytest.mark.slow

RED = (220, 0, 0)  # room A
BLUE = (0, 0, 220)  # room B


def is_colour(seen: tuple[int, int, int], rgb: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 40 for a, b in zip(seen, rgb, strict=True))


class Colours(AiortcParticipant):
    """A viewer that keeps the colour of every frame it decodes."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.colours: list[tuple[int, int, int]] = []

    async def _consume(self, track: object) -> None:
        from tests.support.aiortc_client import dominant_colour

        if getattr(track, "kind", "") != "video":
            await super()._consume(track)  # type: ignore[arg-type]
            return
        while True:
            try:
                frame = await track.recv()  # type: ignore[attr-defined]
            except Exception:
                return
            self.colours.append(dominant_colour(frame.to_ndarray(format="rgb24")))


async def publish_with_ssrc(
    participant: AiortcParticipant, track: PatternVideoTrack, ssrc: int
) -> None:
    """Publish as a browser would, but on an SSRC of our choosing."""
    transceiver = participant.pub.addTransceiver(track, direction="sendonly")
    transceiver.sender._ssrc = ssrc
    offer = await participant.pub.createOffer()
    await participant.pub.setLocalDescription(offer)
    assert participant.session is not None
    assert f"a=ssrc:{ssrc} " in participant.pub.localDescription.sdp
    answer = await participant.session.answer_publisher_offer(participant.pub.localDescription.sdp)
    await participant.pub.setRemoteDescription(RTCSessionDescription(answer, "answer"))


async def test_an_ssrc_of_room_b_published_in_room_a_stays_in_room_a(rooms: RoomManager) -> None:
    room_a, room_b = rooms.get_or_create("a"), rooms.get_or_create("b")
    bob = AiortcParticipant(room_b, "bob")
    bob_viewer = Colours(room_b, "bob-viewer")
    mallory = AiortcParticipant(room_a, "mallory")
    alice_viewer = Colours(room_a, "alice-viewer")
    everyone = (bob, bob_viewer, mallory, alice_viewer)
    try:
        for participant in everyone:
            await participant.join()
        await bob.publish(PatternVideoTrack(BLUE))
        await wait_for(lambda: len(bob_viewer.colours) > 10)
        (b_track,) = room_b.tracks.values()
        b_ssrc = next(iter(b_track.layers.values())).ssrc
        assert b_ssrc
        # mallory, in room A, publishes red on room B's SSRC
        await publish_with_ssrc(mallory, PatternVideoTrack(RED), b_ssrc)
        await wait_for(lambda: len(alice_viewer.colours) > 30)
        before = len(bob_viewer.colours)
        await wait_for(lambda: len(bob_viewer.colours) > before + 30)
        crossed = sum(is_colour(c, RED) for c in bob_viewer.colours)
        crossed += sum(is_colour(c, BLUE) for c in alice_viewer.colours)
        assert crossed == 0
        assert all(is_colour(c, BLUE) for c in bob_viewer.colours[5:])
        assert all(is_colour(c, RED) for c in alice_viewer.colours[5:])
        # each room's layer got only its own publisher's packets
        (a_track,) = room_a.tracks.values()
        a_layer, b_layer = next(iter(a_track.layers.values())), next(iter(b_track.layers.values()))
        assert a_layer.ssrc == b_layer.ssrc == b_ssrc
        assert a_track.publisher is not b_track.publisher
    finally:
        for participant in everyone:
            await participant.close()


async def test_a_subscription_to_another_rooms_track_is_refused(rooms: RoomManager) -> None:
    room_a, room_b = rooms.get_or_create("a"), rooms.get_or_create("b")
    bob = AiortcParticipant(room_b, "bob")
    mallory = Colours(room_a, "mallory")
    try:
        await bob.join()
        await mallory.join()
        await bob.publish(PatternVideoTrack(BLUE))
        await wait_for(lambda: bool(room_b.tracks))
        (b_sid,) = room_b.tracks
        assert mallory.session is not None
        with pytest.raises(LocalProtocolError, match=f"no track {b_sid} in room a"):
            mallory.session.set_subscribed(b_sid, True)
        mallory.session.set_subscribed(b_sid, False)  # nothing to forget either
        await asyncio.sleep(1.0)
        assert mallory.session.downtracks == {}
        assert not mallory.session.unsubscribed
        (b_track,) = room_b.tracks.values()
        assert list(b_track.downtracks) == [], "room B forwards to nobody in room A"
        assert mallory.colours == []
    finally:
        await bob.close()
        await mallory.close()


@pytest.fixture(params=["native", "python"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        use_python_paths(monkeypatch)
    yield str(request.param)


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.2", 0))
    sock.setblocking(False)
    return sock


async def _stun(sock: socket.socket, request: bytes, port: int) -> stun.Message:
    sock.sendto(request, ("127.0.0.2", port))
    loop = asyncio.get_running_loop()
    return stun.parse_message(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))


async def test_media_moves_to_a_new_address_only_after_a_valid_check(
    read_path: str,
) -> None:
    """Even with the SRTP keys, packets from an address that passed no ICE check are
    dropped; an address that fails the check (a stranger with the username but not
    the password) never takes the path; a valid check moves it (NAT rebinding)."""
    worker = Worker.from_config(media_config())  # type: ignore[arg-type]
    manager = worker.rooms
    await worker.start()
    first, second, stranger = _socket(), _socket(), _socket()
    try:
        room = manager.get_or_create("rebind")
        session = await room.join("pub", listener=AiortcParticipant(room, "x"))
        await session.answer_publisher_offer(OFFER)
        endpoint = session.publisher.endpoint
        ufrag, pwd, port = endpoint.ice.local_ufrag, endpoint.ice.local_pwd, worker.udp_port
        ok = await _stun(first, binding_request(f"{ufrag}:c", pwd), port)
        assert ok.message_class == stun.Class.RESPONSE
        endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY))
        (track,) = room.tracks.values()
        layer = next(iter(track.layers.values()))
        tx = pylibsrtp.Session(
            pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        seq = iter(range(1, 1000))

        def send(sock: socket.socket) -> None:
            sock.sendto(tx.protect(vp8_packet(PUB_SSRC, next(seq), 0, True)), ("127.0.0.2", port))

        send(first)
        await wait_for(lambda: layer.received == 1)
        dropped = worker.mux.counters["dropped_unbound"]
        for _ in range(5):
            send(second)  # valid SRTP, unchecked address
        refused = await _stun(
            stranger, binding_request(f"{ufrag}:c", "wrong-password-xxxxxx"), port
        )
        assert refused.message_class == stun.Class.ERROR
        for _ in range(5):
            send(stranger)
        await asyncio.sleep(0.2)
        assert layer.received == 1, "nothing from an unchecked address reached the room"
        assert worker.mux.counters["dropped_unbound"] == dropped + 10
        assert endpoint.addr == first.getsockname()
        # the client's NAT rebinds: a valid, nominating check from the new address
        moved = await _stun(second, binding_request(f"{ufrag}:c", pwd), port)
        assert moved.message_class == stun.Class.RESPONSE
        assert endpoint.addr == second.getsockname()
        send(second)
        send(first)  # the old address is a stranger now
        await asyncio.sleep(0.2)
        assert layer.received == 2
        assert worker.mux.counters["dropped_unbound"] == dropped + 11
    finally:
        for sock in (first, second, stranger):
            sock.close()
        await worker.stop()


async def test_a_token_for_one_room_reaches_no_other() -> None:
    """Over the LiveKit front-end: the token's room is the only room; a subscription
    request naming another room's track is refused and forwards nothing."""
    import aiohttp
    from livekit.protocol import rtc

    from tests.support.livekit_node import live_node

    async with live_node("127.0.0.2") as node:
        room_b = node.rooms.get_or_create("b")
        bob = AiortcParticipant(room_b, "bob")
        await bob.join()
        await bob.publish(PatternVideoTrack(BLUE))
        await wait_for(lambda: bool(room_b.tracks))
        (b_sid,) = room_b.tracks
        async with aiohttp.ClientSession() as http:
            url = f"{node.ws_url}/rtc?access_token={node.token('mallory', room='a')}"
            ws = await http.ws_connect(url)
            first = rtc.SignalResponse()
            first.ParseFromString((await ws.receive()).data)
            assert first.join.room.name == "a"
            assert [p.identity for p in first.join.other_participants] == []
            request = rtc.SignalRequest(
                subscription=rtc.UpdateSubscription(track_sids=[b_sid], subscribe=True)
            )
            await ws.send_bytes(request.SerializeToString())
            await asyncio.sleep(0.5)
            room_a = node.rooms.get("a")
            assert room_a is not None and list(room_a.sessions) == ["mallory"]
            assert room_a.sessions["mallory"].downtracks == {}
            (b_track,) = room_b.tracks.values()
            assert b_track.downtracks == {}
            await ws.close()
        await bob.close()
