"""What one participant can make a worker hold or do is bounded (media/limits.py).

Beyond each limit the excess is dropped and counted by kind
(``RoomManager.dropped``), with one log line per interval; the participant's
call and everyone else's go on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pylibsrtp
import pytest

from mediafed.media import RoomManager, limits
from mediafed.media.events import DataReceived, RoomEvent
from mediafed.media.types import LayerInfo, Permission, TrackKind
from mediafed.transport import endpoint as endpoint_module
from mediafed.transport.dtls import SrtpKeys
from mediafed.transport.srtp import SrtpContext
from mediafed.wire import rtcp, rtp
from mediafed.worker import Worker
from tests.support.aiortc_client import AiortcParticipant
from tests.support.media import use_python_paths

from .test_allocation import SIMULCAST_OFFER
from .test_downtrack import KEY, OFFER, PUB_SSRC, vp8_packet


class Inbox(AiortcParticipant):
    """A listener that keeps the data packets it is given."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.data: list[bytes] = []

    def on_room_event(self, event: RoomEvent) -> None:
        if isinstance(event, DataReceived):
            self.data.append(event.payload)


async def test_data_packets_beyond_size_and_rate_are_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.support.media import media_config

    caplog.set_level(logging.INFO, logger="mediafed.media.room")
    now = [100.0]
    worker = Worker.from_config(media_config(), clock=lambda: now[0])  # type: ignore[arg-type]
    rooms = worker.rooms
    room = rooms.get_or_create("chatty")
    sender = await room.join("sender", listener=AiortcParticipant(room, "x"))
    inbox = Inbox(room, "y")
    await room.join("reader", listener=inbox)
    sender.send_data(b"x" * limits.MAX_DATA_BYTES)  # at the limit: relayed
    sender.send_data(b"x" * (limits.MAX_DATA_BYTES + 1))
    assert [len(p) for p in inbox.data] == [limits.MAX_DATA_BYTES]
    assert rooms.dropped == {"data_size": 1}
    for index in range(1000):  # one instant: only the burst passes
        sender.send_data(index.to_bytes(4, "big"))
    burst = int(limits.DATA_PACKET_BURST)
    assert len(inbox.data) == burst  # the 64 KiB packet took one token
    assert rooms.dropped["data_rate"] == 1000 - (burst - 1)
    assert caplog.text.count("dropped: data_rate") == 1, "one line, not one per packet"
    now[0] += 0.5  # tokens come back with time
    for _ in range(int(limits.DATA_PACKETS_PER_S * 0.5)):
        sender.send_data(b"later")
    assert inbox.data[-1] == b"later"
    assert rooms.dropped["data_rate"] == 1000 - (burst - 1)
    # bytes are metered too: 4 MiB at once, then nothing more this instant
    big = b"y" * limits.MAX_DATA_BYTES
    now[0] += 100
    passed = sum(1 for _ in range(100) if _send_counted(sender, inbox, big))
    assert passed == int(limits.DATA_BYTE_BURST // limits.MAX_DATA_BYTES)


def _send_counted(sender: object, inbox: Inbox, payload: bytes) -> bool:
    before = len(inbox.data)
    sender.send_data(payload)  # type: ignore[attr-defined]
    return len(inbox.data) > before


@pytest.fixture(params=["native", "python"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        use_python_paths(monkeypatch)
    yield str(request.param)


async def test_an_endpoint_spraying_ssrcs_holds_a_bounded_number_of_srtp_streams(
    read_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """libsrtp makes a stream for every SSRC it decrypts and searches them one by one:
    SSRCs that belong to no track are kept up to a limit, the rest forgotten again."""
    from tests.support.media import media_config

    worker = Worker.from_config(media_config())  # type: ignore[arg-type]
    manager = worker.rooms
    await worker.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        room = manager.get_or_create("spray")
        publisher = await room.join("pub", listener=AiortcParticipant(room, "x"))
        await publisher.answer_publisher_offer(OFFER)
        client.bind(("127.0.0.2", 0))
        endpoint = publisher.publisher.endpoint
        endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY))
        worker.mux.bind_address(endpoint, client.getsockname())
        tx = pylibsrtp.Session(
            pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        target = ("127.0.0.2", worker.udp_port)
        sent = {}
        for index in range(100):
            ssrc = 0x50000000 + index
            stray = bytearray(vp8_packet(ssrc, 1, 0, keyframe=True))
            stray[1] = 111  # a payload type of no track: these streams belong to nothing
            sent[ssrc] = tx.protect(bytes(stray))
            client.sendto(sent[ssrc], target)
        client.sendto(tx.protect(vp8_packet(PUB_SSRC, 1, 0, keyframe=True)), target)
        await asyncio.sleep(0.3)
        peer = publisher.publisher
        assert list(peer.stray_ssrcs) == [0x50000000 + i for i in range(limits.MAX_STRAY_SSRCS)]
        assert manager.dropped["stray_ssrc"] == 100 - limits.MAX_STRAY_SSRCS
        assert peer.layers_by_ssrc[PUB_SSRC].received == 1, "the real stream is untouched"
        # Replays tell which streams libsrtp still holds: a kept stream remembers the
        # packet and refuses it again; a forgotten one starts afresh and takes it.
        failed = endpoint.stats["srtp_auth_failed"]
        client.sendto(sent[0x50000000], target)  # kept
        client.sendto(sent[0x50000000 + 99], target)  # forgotten
        await asyncio.sleep(0.2)
        assert endpoint.stats["srtp_auth_failed"] == failed + 1
        assert manager.dropped["stray_ssrc"] == 100 - limits.MAX_STRAY_SSRCS + 1
        assert caplog.text.count("dropped: stray_ssrc") <= 1
    finally:
        client.close()
        await worker.stop()


async def test_a_publisher_restarting_its_stream_again_and_again_leaves_one_behind(
    rooms: RoomManager,
    worker: Worker,
) -> None:
    """A new SSRC for a track's encoding replaces the old one, whose libsrtp state goes."""
    room = rooms.get_or_create("churn")
    publisher = await room.join("pub", listener=AiortcParticipant(room, "x"))
    await publisher.answer_publisher_offer(OFFER)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.bind(("127.0.0.2", 0))
        endpoint = publisher.publisher.endpoint
        endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY))
        worker.mux.bind_address(endpoint, client.getsockname())
        tx = pylibsrtp.Session(
            pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        target = ("127.0.0.2", worker.udp_port)
        first = tx.protect(vp8_packet(0x60000000, 1, 0, keyframe=True))
        client.sendto(first, target)
        for index in range(1, 50):
            client.sendto(tx.protect(vp8_packet(0x60000000 + index, 1, 0, True)), target)
        await asyncio.sleep(0.3)
        peer = publisher.publisher
        assert list(peer.layers_by_ssrc) == [0x60000000 + 49]
        assert not peer.stray_ssrcs
        # the first stream was forgotten: its packet is taken again, not a replay
        failed = endpoint.stats["srtp_auth_failed"]
        client.sendto(first, target)
        await asyncio.sleep(0.2)
        assert endpoint.stats["srtp_auth_failed"] == failed
    finally:
        client.close()


async def test_srtcp_from_too_many_senders_is_dropped_unread(
    rooms: RoomManager, worker: Worker
) -> None:
    room = rooms.get_or_create("rtcp-spray")
    session = await room.join("pub", listener=AiortcParticipant(room, "x"))
    endpoint = session.publisher.endpoint
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.bind(("127.0.0.2", 0))
        endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY))
        worker.mux.bind_address(endpoint, client.getsockname())
        tx = pylibsrtp.Session(
            pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        for index in range(100):
            report = rtcp.serialize_rtcp([rtcp.ReceiverReport(0x70000000 + index, [])])
            client.sendto(tx.protect_rtcp(report), ("127.0.0.2", worker.udp_port))
        await asyncio.sleep(0.3)
        limit = endpoint_module.MAX_RTCP_SENDERS
        assert endpoint.stats["rtcp_in"] == limit
        assert endpoint.stats["rtcp_sender_limit"] == 100 - limit
        assert endpoint.stats["srtp_auth_failed"] == 0
    finally:
        client.close()


async def test_a_made_up_rid_creates_no_layer(rooms: RoomManager) -> None:
    room = rooms.get_or_create("rids")
    publisher = await room.join("pub", listener=AiortcParticipant(room, "x"))
    publisher.announce_track("cam", TrackKind.VIDEO, layers=[LayerInfo(0, 320, 180, 150_000, "q")])
    await publisher.answer_publisher_offer(SIMULCAST_OFFER)
    track = next(iter(publisher.published.values()))
    peer = publisher.publisher
    from mediafed.transport.srtp import PacketBuffer, copy_into

    def feed(ssrc: int, rid: bytes) -> None:
        header = rtp.build_header(100, 1, 0, ssrc, extensions=[(1, b"0"), (2, rid)])
        buf = PacketBuffer()
        size = copy_into(buf, bytes(header) + b"\x10\x00" + bytes(30))
        peer.on_rtp(peer.endpoint, buf, size, 1.0)

    feed(0x1000, b"q")
    for index in range(50):
        feed(0x9000 + index, f"x{index}".encode())
    assert sorted(track.layers) == ["f", "h", "q"]
    assert list(peer.layers_by_ssrc) == [0x1000]


def test_a_simulcast_offer_keeps_at_most_four_encodings() -> None:
    from mediafed.media import negotiation

    many = SIMULCAST_OFFER.replace(
        "a=rid:f send\r\n", "".join(f"a=rid:r{i} send\r\n" for i in range(10)) + "a=rid:f send\r\n"
    )
    offer = negotiation.parse(many, "publisher offer")
    answer, accepted = negotiation.answer_offer(
        offer,
        negotiation.LocalTransport(
            "u", "p" * 22, "sha-256 " + ":".join(["00"] * 32), "passive", ()
        ),
        session_id=1,
        version=1,
    )
    assert accepted[0].rids == ["q", "h", "r0", "r1"]
    assert [r.rid for r in answer.media[0].rids] == ["q", "h", "r0", "r1"]


async def test_a_data_sender_without_permission_is_refused(rooms: RoomManager) -> None:
    from mediafed.errors import AuthError

    room = rooms.get_or_create("quiet")
    mute = await room.join(
        "mute",
        listener=AiortcParticipant(room, "x"),
        permission=Permission(can_publish_data=False),
    )
    with pytest.raises(AuthError, match="may not publish data"):
        mute.send_data(b"hi")
    assert rooms.dropped == {}
