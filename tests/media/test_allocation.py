"""Bandwidth allocation across a subscriber's videos, and simulcast layer switching."""

from __future__ import annotations

import asyncio
import socket
import struct

import pylibsrtp

from mediafed.media import LayerInfo, RoomManager, TrackKind
from mediafed.media.allocation import PAUSED, Demand, allocate, full_demand, shortfall
from mediafed.media.downtrack import RESEND_MAX_TIMES, RESEND_MIN_GAP_S, DownTrack
from mediafed.transport.dtls import SrtpKeys
from mediafed.transport.srtp import SrtpContext
from mediafed.wire import rtcp, rtp
from mediafed.worker import Worker
from tests.support.aiortc_client import AiortcParticipant, wait_for

from .test_downtrack import KEY, feed

LAYERS = {0: 150_000, 1: 500_000, 2: 1_500_000}


def test_everyone_gets_the_lowest_layer_then_the_budget_is_shared() -> None:
    camera = Demand("cam", 2, LAYERS)
    screen = Demand("screen", 2, LAYERS, priority=1)
    assert allocate(10_000_000, [camera, screen]) == {"cam": 2, "screen": 2}
    assert allocate(2_100_000, [camera, screen]) == {"cam": 1, "screen": 2}
    assert allocate(300_000, [camera, screen]) == {"cam": 0, "screen": 0}
    # Never below the lowest layer, even when the budget is smaller.
    assert allocate(10_000, [camera]) == {"cam": 0}
    # Settings cap what is given; missing layers are skipped.
    assert allocate(10_000_000, [Demand("thumb", 1, LAYERS)]) == {"thumb": 1}
    assert allocate(10_000_000, [Demand("two", 2, {0: 150_000, 2: 1_500_000})]) == {"two": 2}


def test_what_does_not_fit_at_all_is_paused_when_pausing_is_allowed() -> None:
    camera = Demand("cam", 2, LAYERS)
    screen = Demand("screen", 2, LAYERS, priority=1)
    # 200 kbit/s carries one lowest layer: the screen share keeps it, the camera pauses
    assert allocate(200_000, [camera, screen], may_pause=True) == {"cam": PAUSED, "screen": 0}
    assert allocate(100_000, [camera, screen], may_pause=True) == {
        "cam": PAUSED,
        "screen": PAUSED,
    }
    assert allocate(300_000, [camera, screen], may_pause=True) == {"cam": 0, "screen": 0}
    # resuming a paused video costs its lowest layer: that is what a probe must find
    choice = allocate(100_000, [camera], may_pause=True)
    assert shortfall([camera], choice) == LAYERS[0]
    assert shortfall([camera], allocate(200_000, [camera], may_pause=True)) == (
        LAYERS[1] - LAYERS[0]
    )
    # nothing known about a track yet: left out, neither paused nor placed
    assert allocate(10_000, [Demand("new", 2, {})], may_pause=True) == {}


SIMULCAST_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 100\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
    "a=rtcp-mux\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
    "a=rtpmap:100 VP8/90000\r\na=rtcp-fb:100 nack\r\na=rtcp-fb:100 nack pli\r\n"
    "a=msid:stream cam\r\na=rid:q send\r\na=rid:h send\r\na=rid:f send\r\n"
    "a=simulcast:send q;h;f\r\n"
)
SSRCS = {"q": 0x1000, "h": 0x2000, "f": 0x3000}
SIMULCAST_LAYERS = [
    LayerInfo(0, 320, 180, LAYERS[0], "q"),
    LayerInfo(1, 640, 360, LAYERS[1], "h"),
    LayerInfo(2, 1280, 720, LAYERS[2], "f"),
]


def layer_packet(rid: str, seq: int, keyframe: bool) -> bytes:
    header = rtp.build_header(
        100, seq, seq * 3000, SSRCS[rid], extensions=[(1, b"0"), (2, rid.encode())]
    )
    vp8 = b"\x10" + (b"\x00" if keyframe else b"\x01")
    return bytes(header) + vp8 + rid.encode() * 30


def test_what_a_probe_aims_for_is_everything_wanted() -> None:
    layers = {0: 150_000, 1: 500_000, 2: 2_500_000}
    demands = [
        Demand("camera", 2, layers),
        Demand("thumbnail", 0, layers),  # the subscriber shows it small
        Demand("gone", 2, {}),
    ]
    assert full_demand(demands) == 2_500_000 + 150_000


class SimulcastSubscriber:
    """A publisher of three VP8 layers fed by hand, one subscriber whose packets
    land on a local socket, and REMB and NACK sent as that subscriber."""

    def __init__(self, rooms: RoomManager, worker: Worker) -> None:
        self.rooms = rooms
        self.worker = worker
        self.seq = iter(range(1, 10_000))
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.2", 0))
        self.sink.setblocking(False)
        self.rx = pylibsrtp.Session(
            pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
        )
        self.tx = pylibsrtp.Session(
            pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )

    async def join(self) -> DownTrack:
        room = self.rooms.get_or_create("simulcast")
        self.publisher = await room.join("pub", listener=AiortcParticipant(room, "x"))
        self.publisher.announce_track(
            "cam",
            TrackKind.VIDEO,
            layers=SIMULCAST_LAYERS,
        )
        answer = await self.publisher.answer_publisher_offer(SIMULCAST_OFFER)
        assert "a=simulcast:recv q;h;f" in answer and "a=rid:q recv" in answer
        subscriber = await room.join("sub", listener=AiortcParticipant(room, "y"))
        endpoint = subscriber.subscriber.endpoint
        endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY))
        endpoint.mux.bind_address(endpoint, self.sink.getsockname())
        [self.downtrack] = subscriber.downtracks.values()
        return self.downtrack

    def send_round(self, keyframe_on: str = "") -> None:
        number = next(self.seq)
        for rid in ("q", "h", "f"):
            feed(self.publisher, layer_packet(rid, number, rid == keyframe_on), self.rooms.clock())

    async def forwarded(self) -> list[tuple[int, str]]:
        """(sequence number, layer) of each media packet that reached the subscriber."""
        await asyncio.sleep(0.05)
        out = []
        while True:
            try:
                data = self.sink.recv(2048)
            except BlockingIOError:
                return out
            if 192 <= data[1] <= 223:
                continue
            plain = self.rx.unprotect(data)
            out.append((struct.unpack_from("!H", plain, 2)[0], chr(plain[-1])))

    def _rtcp(self, packet: rtcp.RtcpPacket) -> None:
        data = rtcp.serialize_rtcp([packet])
        self.sink.sendto(self.tx.protect_rtcp(data), ("127.0.0.2", self.worker.udp_port))

    def remb(self, bitrate_bps: int) -> None:
        self._rtcp(rtcp.Remb(0xABC, bitrate_bps, [self.downtrack.ssrc]))

    def nack(self, sequences: list[int]) -> None:
        self._rtcp(rtcp.GenericNack(0xABC, self.downtrack.ssrc, sequences))


async def test_remb_moves_a_subscriber_between_simulcast_layers(
    rooms: RoomManager, worker: Worker
) -> None:
    sub = SimulcastSubscriber(rooms, worker)
    downtrack = await sub.join()
    send_round, forwarded_layers = sub.send_round, sub.forwarded
    try:
        send_round()  # every layer starts arriving
        downtrack.attach(rooms.clock())
        assert downtrack.layer is not None and downtrack.layer.rid == "f"
        send_round(keyframe_on="f")
        send_round()
        first = await forwarded_layers()
        assert [layer for _, layer in first] == ["f", "f"]

        sub.remb(1_000_000)  # f (1.5 Mbit/s) no longer fits, h does
        await wait_for(lambda: downtrack.pending is not None and downtrack.pending.rid == "h")
        send_round()  # no keyframe of h yet: f goes on, the picture never freezes
        held = await forwarded_layers()
        assert [layer for _, layer in held] == ["f"]
        send_round(keyframe_on="h")  # the switch happens on h's keyframe
        send_round()
        second = await forwarded_layers()
        assert [layer for _, layer in second] == ["h", "h"]
        assert second[0][0] == (held[-1][0] + 1) & 0xFFFF, "one continuous sequence"
        assert downtrack.layer is not None and downtrack.layer.rid == "h"
        assert downtrack.pending is None

        async def keep_sending(seconds: float) -> list[str]:
            """The publisher goes on sending every layer (no keyframes) for a while."""
            layers: list[str] = []
            for _ in range(int(seconds / 0.2)):
                send_round()
                layers += [layer for _, layer in await forwarded_layers()]
                await asyncio.sleep(0.15)
            return layers

        sub.remb(5_000_000)  # room again, but upgrades wait out the hold time
        assert set(await keep_sending(0.6)) == {"h"}
        assert downtrack.pending is None and downtrack.layer.rid == "h"
        assert set(await keep_sending(1.6)) == {"h"}
        sub.remb(5_000_000)
        for _ in range(50):  # the next allocation (at most a second away) moves it up
            if downtrack.pending is not None:
                break
            assert set(await keep_sending(0.2)) == {"h"}
        assert downtrack.pending is not None and downtrack.pending.rid == "f"
        send_round()  # until f's keyframe, h goes on
        assert [layer for _, layer in await forwarded_layers()] == ["h"]
        send_round(keyframe_on="f")  # h's packet of this round still goes, then f's keyframe
        third = await forwarded_layers()
        assert [layer for _, layer in third] == ["h", "f"]
        assert third[1][0] == (third[0][0] + 1) & 0xFFFF
    finally:
        sub.sink.close()


async def test_a_link_far_too_thin_leaves_the_layer_at_once_and_stops_repairing_it(
    rooms: RoomManager, worker: Worker
) -> None:
    """What the top layer would send until the lowest one's keyframe is lost in the
    queue of a link a fifth its size, and the keyframe behind it: f stops at once, and
    the subscriber's NACKs for what it sent of f are not answered (the keyframe of q
    makes them useless), while those for q's packets are."""
    sub = SimulcastSubscriber(rooms, worker)
    downtrack = await sub.join()
    try:
        sub.send_round()
        downtrack.attach(rooms.clock())
        sub.send_round(keyframe_on="f")
        sub.send_round()
        top = await sub.forwarded()
        assert [layer for _, layer in top] == ["f", "f"]

        sub.remb(300_000)  # a fifth of f: only q fits
        await wait_for(lambda: downtrack.layer is not None and downtrack.layer.rid == "q")
        assert downtrack.pending is None and downtrack.overrun
        sub.send_round()  # nothing until q's keyframe
        assert await sub.forwarded() == []
        sub.send_round(keyframe_on="q")
        sub.send_round()
        low = await sub.forwarded()
        assert [layer for _, layer in low] == ["q", "q"]
        assert low[0][0] == (top[-1][0] + 1) & 0xFFFF, "one continuous sequence"

        sub.nack([seq for seq, _ in top] + [low[1][0]])
        resent = await sub.forwarded()
        assert [layer for _, layer in resent] == ["q"], resent
        assert downtrack.retransmitted == 1
    finally:
        sub.sink.close()


async def test_publishers_hear_which_layers_are_watched(rooms: RoomManager) -> None:
    from mediafed.media import events

    room = rooms.get_or_create("dynacast")
    recorder = AiortcParticipant(room, "x")
    publisher = await room.join("pub", listener=recorder)
    publisher.announce_track(
        "cam",
        TrackKind.VIDEO,
        layers=SIMULCAST_LAYERS,
    )
    await publisher.answer_publisher_offer(SIMULCAST_OFFER)
    [track_sid] = publisher.published

    def reported() -> list[tuple[int, ...]]:
        return [
            e.qualities for e in recorder.events if isinstance(e, events.SubscribedQualitiesChanged)
        ]

    # Nobody watches yet: only the lowest layer is wanted.
    await wait_for(lambda: reported() == [(0,)], timeout=5)
    viewer = await room.join("viewer", listener=AiortcParticipant(room, "y"))
    viewer.downtracks[track_sid].attach(rooms.clock())
    viewer.update_track_settings(track_sid, quality=1)
    await wait_for(lambda: reported()[-1] == (0, 1), timeout=5)
    viewer.update_track_settings(track_sid, width=1280, height=720)
    await wait_for(lambda: reported()[-1] == (0, 2), timeout=5)
    viewer.set_subscribed(track_sid, False)
    await wait_for(lambda: reported()[-1] == (0,), timeout=5)


async def test_a_packet_that_cannot_be_resent_brings_a_keyframe_one_not_arrived_does_not(
    rooms: RoomManager, worker: Worker
) -> None:
    """A subscriber's decoder stalls on a frame it cannot complete until libwebrtc
    gives up on it (3 s), so a packet resent RESEND_MAX_TIMES times and asked for
    again makes the relay ask its publisher for a keyframe. A packet the relay has
    not got yet (lost on the publisher's side, its retransmission on the way) is
    asked for as often without one."""
    sub = SimulcastSubscriber(rooms, worker)
    downtrack = await sub.join()
    track = downtrack.track
    try:
        sub.send_round()
        downtrack.attach(rooms.clock())
        sub.send_round(keyframe_on="f")
        next(sub.seq)  # this round is lost on the way from the publisher
        sub.send_round()
        got = await sub.forwarded()
        assert len(got) == 2 and got[1][0] == (got[0][0] + 2) & 0xFFFF
        missing = (got[0][0] + 1) & 0xFFFF
        await asyncio.sleep(0.6)  # past the interval of the first keyframe request
        requests = track.keyframe_requests
        for _ in range(RESEND_MAX_TIMES + 2):
            sub.nack([missing])
            await asyncio.sleep(RESEND_MIN_GAP_S + 0.03)
        assert await sub.forwarded() == []
        await asyncio.sleep(0.6)  # (a request within the interval would wait for it)
        assert track.keyframe_requests == requests and not track.keyframe_pending
        sub.send_round()
        [(held, _)] = await sub.forwarded()
        for _ in range(RESEND_MAX_TIMES):
            sub.nack([held])
            await asyncio.sleep(RESEND_MIN_GAP_S + 0.03)
        assert len(await sub.forwarded()) == RESEND_MAX_TIMES
        assert track.keyframe_requests == requests
        sub.nack([held])
        await wait_for(lambda: track.keyframe_requests == requests + 1, timeout=2)
    finally:
        sub.sink.close()
