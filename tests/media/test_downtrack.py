"""A DownTrack's output stays one continuous stream when its input restarts.

Packets are handed to the publisher's peer as the UDP demux would after
SRTP; the subscriber's output is read from a real socket and decrypted.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pylibsrtp
import pytest
from pylibsrtp._binding import lib

from mediafed.media import RoomManager
from mediafed.media.session import Session
from mediafed.transport.dtls import SrtpKeys
from mediafed.transport.srtp import MAX_DATAGRAM, PacketBuffer, SrtpContext, copy_into
from mediafed.worker import Worker
from tests.support.aiortc_client import AiortcParticipant
from tests.support.media import media_config, native_paths_built, use_python_paths

KEY = bytes(range(30))
PUB_SSRC = 0x11111111
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 100\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
    "a=rtcp-mux\r\na=rtpmap:100 VP8/90000\r\na=rtcp-fb:100 nack\r\na=rtcp-fb:100 nack pli\r\n"
    f"a=msid:s v\r\na=ssrc:{PUB_SSRC} cname:x\r\n"
)
RTP = struct.Struct("!BBHII")


def vp8_packet(ssrc: int, seq: int, ts: int, keyframe: bool) -> bytes:
    descriptor = b"\x10"  # S=1, partition 0
    header = b"\x00" if keyframe else b"\x01"  # VP8 P bit: 0 = keyframe
    return RTP.pack(0x80, 0x80 | 100, seq, ts, ssrc) + descriptor + header + bytes(50)


@pytest.fixture(params=["native", "python"])
async def wired(
    rooms: RoomManager, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Session, Session, socket.socket]]:
    # Both forwarding paths: the native steps and their Python reference.
    if request.param == "python":
        use_python_paths(monkeypatch, read_loop=False)
    else:
        native_paths_built()
    publisher, subscriber, sink = await publisher_and_subscriber(rooms, "continuity", OFFER)
    yield publisher, subscriber, sink
    sink.close()


async def publisher_and_subscriber(
    rooms: RoomManager, name: str, offer: str
) -> tuple[Session, Session, socket.socket]:
    """A publisher of ``offer`` and a subscriber whose output reaches ``sink``."""
    room = rooms.get_or_create(name)
    publisher = await room.join("pub", listener=AiortcParticipant(room, "x"))
    await publisher.answer_publisher_offer(offer)
    subscriber = await room.join("sub", listener=AiortcParticipant(room, "y"))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.2", 0))
    sink.setblocking(False)
    endpoint = subscriber.subscriber.endpoint
    endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY))
    endpoint.mux.bind_address(endpoint, sink.getsockname())
    for downtrack in subscriber.downtracks.values():
        downtrack.attach(rooms.clock())
    return publisher, subscriber, sink


def feed(publisher: Session, packet: bytes, now: float) -> None:
    buf = PacketBuffer()
    size = copy_into(buf, packet)
    publisher.publisher.on_rtp(publisher.publisher.endpoint, buf, size, now)


async def plaintext(sink: socket.socket) -> list[bytes]:
    """Every RTP packet the sink got, decrypted, duplicates included (RTCP skipped)."""
    await asyncio.sleep(0.05)
    out = []
    while True:
        try:
            data = sink.recv(2048)
        except BlockingIOError:
            return out
        if 192 <= data[1] <= 223:
            continue  # RTCP (sender reports)
        # A fresh session per packet: the SFU forwards a duplicate as it came.
        rx = pylibsrtp.Session(
            pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
        )
        out.append(rx.unprotect(data))


async def received(sink: socket.socket) -> list[tuple[int, int, int]]:
    """(seq, ts, ssrc) of every RTP packet the sink got, duplicates included."""
    return [tuple(RTP.unpack_from(p, 0)[2:]) for p in await plaintext(sink)]  # type: ignore[misc]


async def test_output_continues_across_a_publisher_restart(
    wired: tuple[Session, Session, socket.socket],
) -> None:
    publisher, subscriber, sink = wired
    downtrack = next(iter(subscriber.downtracks.values()))
    # Before the first keyframe nothing is sent: a decoder cannot start on a delta frame.
    feed(publisher, vp8_packet(PUB_SSRC, 99, 1000, keyframe=False), 10.0)
    assert await received(sink) == []
    for index in range(5):
        feed(publisher, vp8_packet(PUB_SSRC, 100 + index, 3000 + 3000 * index, index == 0), 10.0)
    first = await received(sink)
    assert [s for s, _, _ in first] == [(first[0][0] + i) & 0xFFFF for i in range(5)]
    assert {ssrc for _, _, ssrc in first} == {downtrack.ssrc}
    # The publisher restarts its stream: new SSRC, unrelated sequence and timestamps.
    layer = next(iter(publisher.published.values())).layer("")
    peer = publisher.publisher
    peer.layers_by_ssrc.pop(PUB_SSRC)
    layer.set_ssrc(0x22222222)
    peer.layers_by_ssrc[0x22222222] = layer
    feed(publisher, vp8_packet(0x22222222, 40000, 777, keyframe=False), 10.5)
    assert await received(sink) == [], "waits for a keyframe of the new stream"
    for index in range(3):
        feed(publisher, vp8_packet(0x22222222, 40001 + index, 900 + 3000 * index, index == 0), 10.5)
    second = await received(sink)
    assert [s for s, _, _ in second] == [(first[-1][0] + 1 + i) & 0xFFFF for i in range(3)]
    gap_ts = (second[0][1] - first[-1][1]) & 0xFFFFFFFF
    assert 0.4 * 90000 < gap_ts < 0.6 * 90000, "timestamps advance by the real time elapsed"
    assert {ssrc for _, _, ssrc in second} == {downtrack.ssrc}


LAYER_FIELDS = (
    "received",
    "octets",
    "cycles",
    "base_seq",
    "highest_seq",
    "last_seq",
    "last_ts",
    "last_transit",
    "jitter",
    "last_packet_at",
    "last_keyframe_at",
    "keyframe_waiters",
)


async def test_native_receive_keeps_the_same_state_as_layer_receive(
    rooms: RoomManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gaps (NACK bookkeeping), reordering, duplicates, a wrap, keyframe waiters:
    the native receive_rtp and Layer.receive end in the same state and send the same."""
    native_paths_built()
    seqs = [65530, 65531, 65533, 65532, 65532, 65534, 65535, 0, 4, 1, 2, 3, 300, 5, 301, 310]
    results = []
    for path in ("native", "python"):
        if path == "python":
            use_python_paths(monkeypatch, read_loop=False)
        publisher, subscriber, sink = await publisher_and_subscriber(
            rooms, f"receive-{path}", OFFER
        )
        layer = next(iter(publisher.published.values())).layer("")
        for index, seq in enumerate(seqs):
            keyframe = index == 3  # the subscriber waits until this one
            feed(
                publisher,
                vp8_packet(PUB_SSRC, seq, 1000 + 3000 * index, keyframe),
                100 + index / 50,
            )
        state = {name: getattr(layer, name) for name in LAYER_FIELDS}
        state["missing"] = sorted(layer.missing)
        state["cached"] = [layer.cache.get(seq, 100.3) for seq in seqs]
        state["sent"] = [(seq, ts) for seq, ts, _ssrc in await received(sink)]
        downtrack = next(iter(subscriber.downtracks.values()))
        state["downtrack"] = (downtrack.packets_sent, downtrack.octets_sent)
        results.append(state)
        sink.close()
    native_state, python_state = results
    # Sequence numbers and timestamps out start from random points per DownTrack.
    for state in results:
        first_seq, first_ts = state["sent"][0]
        state["sent"] = [
            ((s - first_seq) & 0xFFFF, (t - first_ts) & 0xFFFFFFFF) for s, t in state["sent"]
        ]
    assert native_state == python_state
    assert (
        python_state["missing"] == sorted({*range(6, 300)} - {5})[:256] or python_state["missing"]
    )
    assert python_state["received"] == len(seqs)
    # not sent: the three before the keyframe, and the duplicate 65532 (subscribers had it)
    assert python_state["downtrack"][0] == len(seqs) - 3 - 1


async def test_publisher_alone_is_cached_not_forwarded(rooms: RoomManager) -> None:
    # A room with one publisher and nobody watching forwards nothing and fails nothing.
    worker = Worker.from_config(media_config())  # type: ignore[arg-type]
    manager = worker.rooms
    await worker.start()
    try:
        room = manager.get_or_create("alone")
        publisher = await room.join("pub", listener=AiortcParticipant(room, "x"))
        await publisher.answer_publisher_offer(OFFER)
        feed(publisher, vp8_packet(PUB_SSRC, 1, 0, keyframe=True), 1.0)
        layer = next(iter(publisher.published.values())).layer("")
        assert layer.received == 1
        assert layer.cache.get(1, 1.0) is not None
        # The track's timer work lets packets older than the cache's age go.
        track = next(iter(publisher.published.values()))
        track.tick(1.5)
        assert layer.cache.held() == 1
        track.tick(2.5)
        assert layer.cache.held() == 0 and layer.cache.expired(1, 2.5)
    finally:
        await worker.stop()


TWCC_OFFER = OFFER.replace(
    "a=rtcp-mux\r\n",
    "a=rtcp-mux\r\na=extmap:5 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-"
    "extensions-01\r\n",
).replace("a=rtcp-fb:100 nack pli\r\n", "a=rtcp-fb:100 nack pli\r\na=rtcp-fb:100 transport-cc\r\n")


async def test_publisher_gets_transport_cc_feedback_and_nacks(rooms: RoomManager) -> None:
    from mediafed.wire import rtcp, rtp

    room = rooms.get_or_create("feedback")
    publisher = await room.join("pub", listener=AiortcParticipant(room, "x"))
    answer = await publisher.answer_publisher_offer(TWCC_OFFER)
    assert "transport-cc" in answer  # accepted in the answer: the browser will send it
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.bind(("127.0.0.2", 0))
    back.setblocking(False)
    endpoint = publisher.publisher.endpoint
    endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY))
    endpoint.mux.bind_address(endpoint, back.getsockname())
    # Packets 0..9 arrive with transport-wide sequence numbers, RTP sequence 6 is lost.
    for index in range(10):
        if index == 6:
            continue
        header = rtp.build_header(
            100, 500 + index, 3000 * index, PUB_SSRC, extensions=[(5, struct.pack("!H", index))]
        )
        feed(publisher, bytes(header) + b"\x10\x00" + bytes(40), rooms.clock())
    rx = pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
    feedback: list[rtcp.TransportCcFeedback] = []
    nacks: list[rtcp.GenericNack] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while (not feedback or not nacks) and loop.time() < deadline:
        await asyncio.sleep(0.05)
        while True:
            try:
                data = back.recv(2048)
            except BlockingIOError:
                break
            for item in rtcp.parse_rtcp(rx.unprotect_rtcp(data)):
                if isinstance(item, rtcp.TransportCcFeedback):
                    feedback.append(item)
                elif isinstance(item, rtcp.GenericNack):
                    nacks.append(item)
    back.close()
    assert feedback, "no transport-cc feedback reached the publisher"
    statuses = {seq: delta is not None for fb in feedback for seq, delta in fb.packets}
    assert statuses[0] and statuses[5] and statuses[7] and not statuses[6]
    assert nacks and nacks[0].media_ssrc == PUB_SSRC and 506 in nacks[0].lost


async def _receive_through_the_socket(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, object]:
    """SRTP packets sent to a fresh server's UDP port; the state they leave behind."""
    from mediafed.wire import rtp

    if path == "python":
        use_python_paths(monkeypatch)
    worker = Worker.from_config(media_config())  # type: ignore[arg-type]
    manager = worker.rooms
    await worker.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    publisher, subscriber, sink = await publisher_and_subscriber(manager, "through", TWCC_OFFER)
    try:
        client.bind(("127.0.0.2", 0))
        endpoint = publisher.publisher.endpoint
        endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY))
        worker.mux.bind_address(endpoint, client.getsockname())
        tx = pylibsrtp.Session(
            pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        seqs = [10, 11, 12, 14, 13, 15, 20, 16, 21]
        for index, seq in enumerate(seqs):
            header = rtp.build_header(
                100, seq, 3000 * index, PUB_SSRC, extensions=[(5, struct.pack("!H", 7 + index))]
            )
            vp8 = b"\x10" + (b"\x00" if index == 2 else b"\x01") + bytes(60)
            client.sendto(tx.protect(bytes(header) + vp8), ("127.0.0.2", worker.udp_port))
        client.sendto(
            tx.protect(RTP.pack(0x80, 100, 99, 0, 0xDEAD) + bytes(20)),
            ("127.0.0.2", worker.udp_port),
        )
        await asyncio.sleep(0.2)
        layer = next(iter(publisher.published.values())).layer("")
        twcc = publisher.publisher.twcc
        assert twcc is not None
        downtrack = next(iter(subscriber.downtracks.values()))
        return {
            "counts": (layer.received, layer.octets, layer.cycles),
            "sequence": (layer.base_seq, layer.highest_seq, layer.last_seq, layer.last_ts),
            "missing": sorted(layer.missing),
            "cached": [layer.cache.get(seq, manager.clock()) for seq in seqs],
            "twcc": sorted(seq & 0xFFFF for seq in twcc._seqs if seq >= 0),
            "rtp_in": publisher.publisher.endpoint.stats["rtp_in"],
            "sent": (downtrack.packets_sent, downtrack.octets_sent),
            "received": len(await received(sink)),
        }
    finally:
        client.close()
        sink.close()
        await worker.stop()


async def test_native_read_path_leaves_the_state_the_python_path_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decrypt, stream lookup, transport-cc, statistics, cache and fan-out done
    natively from the socket end where MediaPeer.on_rtp and Layer.receive end."""
    native_paths_built()
    native_state = await _receive_through_the_socket("native", monkeypatch)
    python_state = await _receive_through_the_socket("python", monkeypatch)
    assert native_state == python_state
    assert python_state["twcc"] == list(range(7, 16))
    assert python_state["rtp_in"] == len([10, 11, 12, 14, 13, 15, 20, 16, 21]) + 1  # + unknown SSRC
    assert python_state["sent"][0] == python_state["received"] == 7, "from the keyframe on"


async def test_an_error_in_the_native_receive_path_is_logged_and_the_next_packet_handled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = Worker.from_config(media_config())  # type: ignore[arg-type]
    manager = worker.rooms
    await worker.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        room = manager.get_or_create("broken")
        publisher = await room.join("pub", listener=AiortcParticipant(room, "x"))
        await publisher.answer_publisher_offer(OFFER)
        client.bind(("127.0.0.2", 0))
        endpoint = publisher.publisher.endpoint
        endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY))
        worker.mux.bind_address(endpoint, client.getsockname())
        layer = next(iter(publisher.published.values())).layer("")
        layer.cache = None  # a bug: the receive step fails after its statistics
        tx = pylibsrtp.Session(
            pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        for seq in (1, 2):
            packet = tx.protect(vp8_packet(PUB_SSRC, seq, 3000 * seq, keyframe=True))
            client.sendto(packet, ("127.0.0.2", worker.udp_port))
        await asyncio.sleep(0.2)
        assert layer.received == 2
        # both counted; one line with its traceback (a peer must not flood the log)
        assert endpoint.stats["media_errors"] == 2
        assert worker.mux.counters["media_errors"] == 2
        assert caplog.text.count("error handling media") == 1
        assert "TypeError: receive_rtp: layer.cache is unset" in caplog.text
    finally:
        client.close()
        await worker.stop()


GCM_KEY = bytes(range(100, 128))


def _unprotect(ctx: SrtpContext, datagram: bytes, rtcp_packet: bool = False) -> bytes:
    """Decrypt with libsrtp directly (pylibsrtp's own buffer is shorter than ours)."""
    buf = PacketBuffer()
    buf.view[: len(datagram)] = datagram
    buf.length[0] = len(datagram)
    unprotect = lib.srtp_unprotect_rtcp if rtcp_packet else lib.srtp_unprotect
    assert unprotect(ctx.rx, buf.cdata, buf.length) == 0
    return bytes(buf.view[: buf.length[0]])


@pytest.mark.parametrize("path", ["native", "python"])
async def test_the_longest_packet_reaches_a_gcm_subscriber_and_is_repaired_by_rtx(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publisher on AES_CM (10-byte tag) sends the longest datagram mediafed takes;
    its subscriber is on AES-GCM (16-byte tag), NACKs it, and gets it again as RTX
    (2 bytes longer). Every step protects into buffers that must hold the result."""
    from mediafed.wire import rtcp, rtp

    if path == "python":
        use_python_paths(monkeypatch)
    worker = Worker.from_config(media_config())  # type: ignore[arg-type]
    manager = worker.rooms
    await worker.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    publisher, subscriber, sink = await publisher_and_subscriber(manager, "longest", OFFER)
    try:
        gcm = SrtpKeys(b"SRTP_AEAD_AES_128_GCM", GCM_KEY, GCM_KEY)
        subscriber.subscriber.endpoint.srtp = SrtpContext(gcm)
        downtrack = next(iter(subscriber.downtracks.values()))
        downtrack.rtx_payload_type = 97
        client.bind(("127.0.0.2", 0))
        endpoint = publisher.publisher.endpoint
        endpoint.srtp = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY))
        worker.mux.bind_address(endpoint, client.getsockname())
        tx = SrtpContext(SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY))
        longest = vp8_packet(PUB_SSRC, 700, 9000, keyframe=True)
        longest += bytes(range(256)) * 8
        longest = longest[: MAX_DATAGRAM - 10]  # + the 10-byte tag: MAX_DATAGRAM on the wire
        buf = PacketBuffer()
        size = tx.protect_rtp(buf, copy_into(buf, longest))
        assert size == MAX_DATAGRAM
        client.sendto(bytes(buf.view[:size]), ("127.0.0.2", worker.udp_port))
        sink.settimeout(2)
        loop = asyncio.get_running_loop()
        forwarded = await loop.run_in_executor(None, sink.recv, 4096)
        assert len(forwarded) == MAX_DATAGRAM - 10 + 16
        them = SrtpContext(gcm)
        plain = _unprotect(them, forwarded)
        seq_out = struct.unpack_from("!H", plain, 2)[0]
        assert plain[12:] == longest[12:]
        # the subscriber lost it: a NACK, protected with its GCM keys
        nack = rtcp.serialize_rtcp([rtcp.GenericNack(0x5EED, downtrack.ssrc, [seq_out])])
        protected = them.protect_rtcp_bytes(nack)
        assert protected is not None
        sink.sendto(protected, ("127.0.0.2", worker.udp_port))
        while True:
            datagram = await loop.run_in_executor(None, sink.recv, 4096)
            if not 192 <= datagram[1] <= 223:
                break  # RTP, not one of our sender reports
        repaired = _unprotect(them, datagram)
        assert len(datagram) == len(longest) + 2 + 16
        assert repaired[1] & 0x7F == 97
        assert struct.unpack_from("!I", repaired, 8)[0] == downtrack.rtx_ssrc
        start = rtp.payload_offset(repaired, len(repaired))
        assert struct.unpack_from("!H", repaired, start)[0] == seq_out  # RFC 4588 OSN
        assert repaired[start + 2 :] == longest[12:]
        assert downtrack.retransmitted == 1
        assert subscriber.subscriber.endpoint.target.oversize == 0
    finally:
        client.close()
        sink.close()
        await worker.stop()


async def test_a_late_packet_does_not_move_the_point_a_switch_continues_from(
    wired: tuple[Session, Session, socket.socket],
) -> None:
    """A packet repaired upstream arrives late (after newer ones) and is forwarded; it
    must not pull back the last sequence number the next re-sync continues from, or
    the new stream would reuse numbers the subscriber has (a frozen picture)."""
    publisher, subscriber, sink = wired
    downtrack = next(iter(subscriber.downtracks.values()))
    for index, seq in enumerate([100, 101, 103, 104]):  # 102 is lost on the way in
        feed(publisher, vp8_packet(PUB_SSRC, seq, 3000 * index, index == 0), 10.0)
    before_late = await received(sink)
    newest = before_late[-1][0]
    feed(publisher, vp8_packet(PUB_SSRC, 102, 3000, keyframe=False), 10.01)  # repaired, late
    late = await received(sink)
    assert [seq for seq, _, _ in late] == [(newest - 2) & 0xFFFF]
    assert downtrack.seq_out == newest
    # the publisher restarts: the next stream continues after the newest, not the late one
    layer = next(iter(publisher.published.values())).layer("")
    peer = publisher.publisher
    peer.layers_by_ssrc.pop(PUB_SSRC)
    layer.set_ssrc(0x33333333)
    peer.layers_by_ssrc[0x33333333] = layer
    feed(publisher, vp8_packet(0x33333333, 7, 50, keyframe=True), 10.5)
    after = await received(sink)
    assert [seq for seq, _, _ in after] == [(newest + 1) & 0xFFFF]
    # and a duplicate of what was forwarded is not forwarded again
    feed(publisher, vp8_packet(0x33333333, 7, 50, keyframe=True), 10.6)
    assert await received(sink) == []


async def resent(sink: socket.socket) -> list[tuple[int, int]]:
    """(original sequence number, timestamp) of each RTX packet the sink got."""
    from mediafed.wire import rtp

    out = []
    for plain in await plaintext(sink):
        start = rtp.payload_offset(plain, len(plain))
        out.append((struct.unpack_from("!H", plain, start)[0], RTP.unpack_from(plain, 0)[3]))
    return out


def padding_packet(ssrc: int, seq: int, ts: int) -> bytes:
    """Padding only (RFC 3550 §5.1), as libwebrtc probes on a media SSRC without RTX."""
    return RTP.pack(0xA0, 100, seq, ts, ssrc) + bytes(223) + bytes([224])


async def test_padding_is_not_forwarded_and_the_numbers_close_over_it(
    wired: tuple[Session, Session, socket.socket],
) -> None:
    """Padding-only packets cost a subscriber bandwidth and carry nothing: dropped, and
    the packets after them numbered on without a gap, while a late packet from before
    the padding and a retransmission of one after it map to the numbers they were given."""
    publisher, subscriber, sink = wired
    downtrack = next(iter(subscriber.downtracks.values()))
    feed(publisher, vp8_packet(PUB_SSRC, 100, 3000, keyframe=True), 10.0)
    # 101 is lost on the way in; 102 arrives, then a run of padding, then media
    feed(publisher, vp8_packet(PUB_SSRC, 102, 3000, keyframe=False), 10.0)
    for seq in (103, 104, 105):
        feed(publisher, padding_packet(PUB_SSRC, seq, 3000), 10.01)
    feed(publisher, vp8_packet(PUB_SSRC, 106, 6000, keyframe=False), 10.03)
    out = await received(sink)
    first = out[0][0]
    assert [seq for seq, _, _ in out] == [first, first + 2, first + 3], "no padding, no gap"
    feed(publisher, vp8_packet(PUB_SSRC, 101, 3000, keyframe=False), 10.04)  # repaired late
    assert [seq for seq, _, _ in await received(sink)] == [first + 1]
    assert downtrack.seq_out == first + 3, "the late packet does not move the newest back"
    # the subscriber asks for the packet after the padding again: 106 is resent as it was
    assert downtrack.retransmit([first + 3, first + 2], 10.05) == 2
    assert sorted(await resent(sink)) == sorted((seq, ts) for seq, ts, _ in out[1:])
    # padding out of order (something before it is missing) is forwarded, not renumbered
    feed(publisher, padding_packet(PUB_SSRC, 108, 6000), 10.06)
    assert [seq for seq, _, _ in await received(sink)] == [first + 5]


async def test_a_packet_is_resent_once_a_round_trip_and_a_few_times_at_most(
    wired: tuple[Session, Session, socket.socket],
) -> None:
    """NACKs repeated while the repair waits in a full link's queue do not resend the
    packet again: once per round trip (50 ms at least), RESEND_MAX_TIMES in all."""
    publisher, subscriber, sink = wired
    downtrack = next(iter(subscriber.downtracks.values()))
    feed(publisher, vp8_packet(PUB_SSRC, 100, 3000, keyframe=True), 10.0)
    feed(publisher, vp8_packet(PUB_SSRC, 101, 3000, keyframe=False), 10.0)
    first = (await received(sink))[0][0]
    assert downtrack.retransmit([first, first + 1], 10.02) == 2
    assert downtrack.retransmit([first, first + 1], 10.04) == 0, "within 50 ms of the resend"
    assert downtrack.retransmit([first + 1], 10.08) == 1
    downtrack.rtt_ms = 200.0  # a longer round trip spaces the resends further
    assert downtrack.retransmit([first + 1], 10.2) == 0
    assert downtrack.retransmit([first + 1], 10.29) == 1
    assert downtrack.retransmit([first + 1], 10.5) == 1  # the fourth time
    assert downtrack.retransmit([first + 1], 10.8) == 0, "no fifth"
    assert downtrack.retransmit([first], 10.8) == 1
    assert downtrack.nacked == 10 and downtrack.retransmitted == 6
    assert len(await resent(sink)) == 6
