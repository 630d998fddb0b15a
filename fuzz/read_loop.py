"""The native read loop: crafted datagrams through a real UDP socket into the SFU.

A room with a publisher (VP8 video with mid, rid and transport-cc extensions, Opus
audio with the audio level) and a subscriber whose DownTracks forward; both endpoints
are bound to real sockets on 127.0.0.2 and hold real SRTP contexts. Each input is a
few datagrams, each sent from the publisher's, the subscriber's or a stranger's socket,
either as they are or SRTP/SRTCP-protected with the endpoint's key (so decryption
succeeds and the receive step and the fan-out run, not only the authentication
failure), then the media socket's reader (the native read loop
``read_datagrams``, or the Python reference without the extension) drains
it. Run inside ``scripts/in-netns``.

Any exception, any error mediafed logged with a traceback, and (with the sanitized
build) any ASan/UBSan report is a crash.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    _common.load_native()
    import pylibsrtp

    from mediafed.config import load_config
    from mediafed.media import Session, events
    from mediafed.transport.dtls import SrtpKeys
    from mediafed.transport.srtp import SrtpContext
    from mediafed.wire import rtcp
    from mediafed.worker import Worker

HOST = "127.0.0.2"
KEY = bytes(range(30))
PUB_VIDEO = 0x11111111
PUB_AUDIO = 0x22222222
RTP = struct.Struct("!BBHII")
FINGERPRINT = ":".join(["AB"] * 32)
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    f"a=fingerprint:sha-256 {FINGERPRINT}\r\na=setup:actpass\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 100 101\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
    "a=rtcp-mux\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n"
    "a=rtpmap:100 VP8/90000\r\na=rtcp-fb:100 nack\r\na=rtcp-fb:100 nack pli\r\n"
    "a=rtcp-fb:100 transport-cc\r\na=rtpmap:101 rtx/90000\r\na=fmtp:101 apt=100\r\n"
    f"a=ssrc-group:FID {PUB_VIDEO} 287454020\r\n"
    f"a=msid:s v\r\na=ssrc:{PUB_VIDEO} cname:x\r\na=ssrc:287454020 cname:x\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n"
    "a=rtcp-mux\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:4 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
    f"a=msid:s a\r\na=ssrc:{PUB_AUDIO} cname:x\r\n"
)


class Listener:
    """A session listener that keeps nothing (the signaling side is another target)."""

    def on_room_event(self, event: events.RoomEvent) -> None:
        pass

    def on_subscriber_offer(self, sdp: str, offer_id: int) -> None:
        pass

    def on_local_candidate(
        self, target: str, candidate: str, sdp_mid: str, sdp_mline_index: int
    ) -> None:
        pass

    def on_data_message(self, target: str, label: str, data: bytes) -> None:
        pass


def _client_session(outbound: bool) -> Any:
    policy = pylibsrtp.Policy(
        key=KEY,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND
        if outbound
        else pylibsrtp.Policy.SSRC_ANY_INBOUND,
    )
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return pylibsrtp.Session(policy)


def install_srtp(endpoint: Any, context: SrtpContext) -> None:
    """What a finished DTLS handshake leaves: the endpoint's SRTP context, also in its
    send target where the transport has one."""
    endpoint.srtp = context
    target = getattr(endpoint, "target", None)
    if target is not None:
        target.set_srtp(context)


class Harness:
    """The room, its two participants and the client-side sockets, made once."""

    def __init__(self) -> None:
        config = load_config(
            environ={
                "MEDIAFED_SERVER_BIND": HOST,
                "MEDIAFED_RTC_UDP_PORT": "0",
                "MEDIAFED_RTC_ICE_TCP": "false",
                "MEDIAFED_RTC_NODE_IP": HOST,
            }
        )
        self.worker = Worker.from_config(config)
        self.rooms = self.worker.rooms
        _common.run_async(self.worker.start())
        mux = self.worker.mux
        self.mux = mux
        room = self.rooms.get_or_create("fuzz")
        self.publisher: Session = _common.run_async(room.join("pub", listener=Listener()))
        _common.run_async(self.publisher.answer_publisher_offer(OFFER))
        self.subscriber: Session = _common.run_async(room.join("sub", listener=Listener()))
        self.sockets = [self._socket() for _ in range(3)]  # publisher, subscriber, stranger
        keys = SrtpKeys(b"SRTP_AES128_CM_SHA1_80", KEY, KEY)
        for session, sock in (
            (self.publisher, self.sockets[0]),
            (self.subscriber, self.sockets[1]),
        ):
            for peer in (session.publisher, session.subscriber):
                install_srtp(peer.endpoint, SrtpContext(keys))
            mux.bind_address(session.publisher.endpoint, sock.getsockname())
        mux.bind_address(self.subscriber.subscriber.endpoint, self.sockets[1].getsockname())
        for downtrack in self.subscriber.downtracks.values():
            downtrack.attach(self.rooms.clock())
        self.protect = _client_session(outbound=True)
        _common.settle()

    @staticmethod
    def _socket() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        return sock

    def read(self) -> None:
        """Loopback delivers at once: the socket's reader (the native read loop when
        built, else ``MediaSocket._on_readable``) runs on the next loop iteration."""
        _common.settle(2)

    def drain(self) -> None:
        for sock in self.sockets:
            while True:
                try:
                    sock.recv(4096)
                except BlockingIOError:
                    break


_harness: Harness | None = None


def harness() -> Harness:
    global _harness
    if _harness is None:
        _harness = Harness()
    return _harness


# Input: repeated [sender u8][mode u8][fields][body: u16 length + bytes].
# sender % 3: publisher, subscriber, stranger socket. mode % 4:
#   0: body as it is;
#   1: an RTP header of a known stream (field u8: video, audio, RTX), then body, SRTP;
#   2: an RTP header with any SSRC (field u32), then body, SRTP;
#   3: body SRTP-protected (SRTCP when its second byte says RTCP);
#   4: RTCP feedback about a subscriber's DownTrack (field u8: which; u8: NACK with
#      [count u8][u16 sequence numbers], PLI, FIR, REMB with [u32 bitrate]), SRTCP.
# Modes 1 and 2 take [flags u8: X, P, M bits][seq u16][timestamp u32] before the body.
MAX_DATAGRAMS = 8


def datagram(h: Harness, cursor: _common.Cursor, mode: int) -> bytes:
    """One datagram as the input says: raw, an RTP packet, SRTP or SRTCP."""
    if mode in (1, 2):
        if mode == 1:
            ssrc, pt = ((PUB_VIDEO, 100), (PUB_AUDIO, 111), (287454020, 101))[cursor.u8() % 3]
        else:
            ssrc, pt = cursor.u32(), 100
        flags = cursor.u8()
        first = 0x80 | (flags & 0x30)  # P and X bits from the input
        header = RTP.pack(first, pt | (flags & 0x80), cursor.u16(), cursor.u32(), ssrc)
        body = header + cursor.blob()
    elif mode == 4:
        body = feedback(h, cursor)
    else:
        body = cursor.blob()
        if mode == 0:
            return body
    try:
        if len(body) > 1 and 192 <= body[1] <= 223:
            return bytes(h.protect.protect_rtcp(body))
        return bytes(h.protect.protect(body))
    except (pylibsrtp.Error, ValueError):
        return body  # too long, or libsrtp refuses to protect it: send it as it is


def feedback(h: Harness, cursor: _common.Cursor) -> bytes:
    downtracks = list(h.subscriber.downtracks.values())
    media = downtracks[cursor.u8() % len(downtracks)].ssrc if downtracks else 0
    kind = cursor.u8() % 4
    packet: rtcp.RtcpPacket
    if kind == 0:
        packet = rtcp.GenericNack(1, media, [cursor.u16() for _ in range(cursor.u8() % 64)])
    elif kind == 1:
        packet = rtcp.PictureLossIndication(1, media)
    elif kind == 2:
        packet = rtcp.FullIntraRequest(1, [(media, cursor.u8())])
    else:
        packet = rtcp.Remb(1, cursor.u32(), [media])
    return packet.serialize()


# Exceptions the media socket caught while handling a datagram: counted always, logged
# with a traceback at most every few seconds (so the trap alone could miss a repeat).
CAUGHT = ("media_errors", "dtls_errors")


def caught(h: Harness) -> int:
    return sum(h.mux.counters.get(name, 0) for name in CAUGHT)


def test_one_input(data: bytes) -> None:
    h = harness()
    before = caught(h)
    cursor = _common.Cursor(data)
    sent = 0
    while cursor and sent < MAX_DATAGRAMS:
        sender = h.sockets[cursor.u8() % 3]
        payload = datagram(h, cursor, cursor.u8() % 5)
        try:
            sender.sendto(payload, (HOST, h.mux.port))
            sent += 1
        except OSError:
            continue  # a datagram the kernel refuses (too large)
    h.read()
    h.drain()
    _common.TRAP.check()
    assert caught(h) == before, f"an exception was caught handling a datagram: {h.mux.counters}"


def main() -> None:
    harness()
    _common.run(test_one_input)


if __name__ == "__main__":
    main()
