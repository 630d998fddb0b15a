"""Write the seed corpora (``fuzz/corpus/<target>/``): realistic, valid inputs.

Seeds come from the golden packets of ``tests/wire/golden`` and from mediafed's own
builders, so each target starts from what clients really send. Deterministic: run it
again and the same files come out (named by content). ``python -m fuzz.make_corpus``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable

from fuzz import _common

ROOT = _common.ROOT
GOLDEN = ROOT / "tests" / "wire" / "golden"
CORPUS = ROOT / "fuzz" / "corpus"


def put(target: str, seeds: Iterable[bytes]) -> int:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*"):
        old.unlink()
    count = 0
    for seed in seeds:
        (folder / ("seed-" + hashlib.sha1(seed).hexdigest()[:16])).write_bytes(seed)
        count += 1
    return count


def golden_payloads(name: str) -> list[bytes]:
    data = (GOLDEN / name).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from("!H", data, pos)
        out.append(data[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return out


def rtp_packets() -> list[bytes]:
    from mediafed.wire import rtp

    exts = [
        [(1, b"0")],  # mid
        [(1, b"1"), (10, b"q")],  # mid + rid
        [(3, b"\x12\x34")],  # transport-cc
        [(2, b"\x85")],  # audio level
        [(1, b"0"), (3, b"\x00\x01"), (4, b"\x00\x00\x01")],
    ]
    packets = []
    for name, pt in (
        ("vp8_keyframe.payloads", 96),
        ("vp8_delta.payloads", 96),
        ("h264_keyframe.payloads", 102),
        ("h264_delta.payloads", 102),
        ("opus.payloads", 111),
    ):
        for index, body in enumerate(golden_payloads(name)[:3]):
            ext = exts[index % len(exts)]
            header = rtp.build_header(pt, 1000 + index, 90000, 0x11111111, extensions=ext)
            packets.append(bytes(header) + body[:300])
    # Two-byte extensions (RFC 8285 section 4.3), CSRCs and padding.
    two_byte = struct.pack("!BBHII", 0x90, 96, 7, 8, 9) + struct.pack("!HH", 0x1000, 2)
    packets.append(two_byte + b"\x01\x02ab\x00\x00\x10\x00\x00" + b"\x10\x00")
    csrc = struct.pack("!BBHIIII", 0x82, 111, 1, 2, 3, 4, 5) + b"\xf8\xff\xfe"
    packets.append(csrc)
    padded = struct.pack("!BBHII", 0xA0, 96, 1, 2, 3) + b"\x10\x00" + b"\x00\x00\x03"
    packets.append(padded)
    return [bytes([control]) + packet for control in (0x23, 0x31) for packet in packets]


def rtcp_packets() -> list[bytes]:
    from mediafed.wire import rtcp

    seeds = [path.read_bytes() for path in sorted(GOLDEN.glob("*.bin"))]
    built = [
        rtcp.GenericNack(1, 2, [100, 101, 105, 117, 200]),
        rtcp.PictureLossIndication(1, 2),
        rtcp.FullIntraRequest(1, [(2, 7), (3, 8)]),
        rtcp.Remb(1, 1_500_000, [2, 3]),
        rtcp.TransportCcFeedback(
            1,
            2,
            65530,
            -5,
            3,
            [(65530, 250), (65531, None), (65532, 64000), (65533, -1000), (65534, 0), (65535, 500)],
        ),
        rtcp.TransportCcFeedback(1, 2, 10, 100, 1, [(10 + i, 250 * (i % 3)) for i in range(40)]),
        rtcp.SourceDescription([(5, [(1, b"cname"), (2, b"name")])]),
        rtcp.Bye([5, 6], b"bye"),
        rtcp.SenderReport(
            5, 1 << 40, 90000, 10, 1000, [rtcp.ReportBlock(6, 3, -2, 70000, 12, 34, 56)]
        ),
        rtcp.ReceiverReport(5, [rtcp.ReportBlock(6, 0, 0, 1, 2, 3, 4)]),
        rtcp.UnknownRtcp(207, 3, b"\x00" * 8),
    ]
    seeds += [packet.serialize() for packet in built]
    seeds.append(rtcp.serialize_rtcp(built[:3]))
    return seeds


def sdp_texts() -> list[bytes]:
    return [path.read_bytes() for path in sorted(GOLDEN.glob("*.sdp"))]


def stun_messages() -> list[bytes]:
    from aioice import stun

    from fuzz import stun as target

    def binding(kind: stun.Class, txid: int, **attributes: object) -> stun.Message:
        message = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=kind,
            transaction_id=bytes([txid]) * 12,  # fixed: the same seeds every time
        )
        message.attributes.update(attributes)
        return message

    def signed(message: stun.Message, fingerprint: bool = False) -> bytes:
        message.add_message_integrity(target.PWD.encode())
        if fingerprint:
            message.add_fingerprint()
        return bytes(message)

    user = f"{target.UFRAG}:peer"
    request = stun.Class.REQUEST
    messages = [
        # A full agent's check, as ice.binding_request writes it: nominating or not.
        signed(
            binding(
                request,
                1,
                USERNAME=user,
                PRIORITY=1,
                **{"ICE-CONTROLLING": 1, "USE-CANDIDATE": None},
            )
        ),
        signed(binding(request, 2, USERNAME=user, PRIORITY=1, **{"ICE-CONTROLLING": 1})),
        signed(binding(request, 3, USERNAME="other:peer", PRIORITY=1)),
        signed(binding(request, 4, USERNAME=user, PRIORITY=9, **{"ICE-CONTROLLED": 5}), True),
        bytes(binding(stun.Class.INDICATION, 5)),
        bytes(binding(stun.Class.RESPONSE, 6, **{"XOR-MAPPED-ADDRESS": ("127.0.0.1", 4000)})),
        bytes(binding(stun.Class.ERROR, 7, **{"ERROR-CODE": (487, "Role Conflict")})),
    ]
    return [bytes([control]) + message for control in (0, 3, 6) for message in messages]


def _blob(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def read_loop_inputs() -> list[bytes]:
    """[sender][mode][fields][blob] records: see ``fuzz/read_loop.py``."""
    from mediafed.wire import rtcp, rtp

    vp8 = golden_payloads("vp8_keyframe.payloads")[:3]
    vp8_delta = golden_payloads("vp8_delta.payloads")[:2]
    opus = golden_payloads("opus.payloads")[:2]

    def known(stream: int, flags: int, seq: int, ts: int, body: bytes) -> bytes:
        return bytes([0, 1, stream, flags]) + struct.pack("!HI", seq, ts) + _blob(body)

    # Extension blocks as they follow a fixed header with the X bit set (flags 0x10).
    mid_twcc = rtp.build_header(100, 0, 0, 0, extensions=[(1, b"0"), (3, b"\x00\x07")])[12:]
    level = rtp.build_header(111, 0, 0, 0, extensions=[(1, b"1"), (4, b"\x8a")])[12:]
    rid = rtp.build_header(100, 0, 0, 0, extensions=[(1, b"0"), (2, b"h")])[12:]
    keyframe = b"".join(
        known(0, 0x10, 1000 + i, 90000, bytes(mid_twcc) + payload) for i, payload in enumerate(vp8)
    )
    delta = b"".join(known(0, 0, 1003 + i, 93000, payload) for i, payload in enumerate(vp8_delta))
    audio = b"".join(
        known(1, 0x10, 50 + i, 960 * i, bytes(level) + payload) for i, payload in enumerate(opus)
    )
    rtx = known(2, 0, 7, 90000, b"\x03\xe8" + vp8[0])
    new_ssrc = (
        bytes([0, 2]) + struct.pack("!IBHI", 0x33333333, 0x10, 5, 9) + _blob(bytes(rid) + vp8[0])
    )
    nack = bytes([1, 4, 0, 0, 3]) + struct.pack("!HHH", 1000, 1001, 1002)
    pli, fir = bytes([1, 4, 0, 1]), bytes([1, 4, 0, 2, 5])
    remb = bytes([1, 4, 0, 3]) + struct.pack("!I", 300_000)
    sr = rtcp.SenderReport(0x11111111, 1 << 40, 90000, 3, 3000).serialize()
    publisher_rtcp = bytes([0, 3]) + _blob(sr)
    stun_like = bytes([2, 0]) + _blob(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12))
    dtls_like = bytes([0, 0]) + _blob(b"\x16\xfe\xfd" + bytes(10))
    stranger_rtp = bytes([2, 1, 0, 0]) + struct.pack("!HI", 1, 1) + _blob(vp8[0])
    return [
        keyframe,
        keyframe + delta,
        keyframe + nack + pli,
        audio,
        rtx,
        new_ssrc,
        keyframe + fir + remb,
        publisher_rtcp + audio,
        stun_like + dtls_like + stranger_rtp,
    ]


def signal_inputs() -> list[bytes]:
    """[grants u8] then [length u16][SignalRequest] frames: see ``fuzz/livekit_signal.py``."""
    from livekit.protocol import models, rtc

    from fuzz.read_loop import OFFER

    def frames(*requests: rtc.SignalRequest) -> bytes:
        return b"".join(_blob(request.SerializeToString()) for request in requests)

    video = rtc.SignalRequest(
        add_track=rtc.AddTrackRequest(
            cid="cam",
            name="camera",
            type=models.TrackType.VIDEO,
            source=models.TrackSource.CAMERA,
            width=640,
            height=480,
            layers=[
                models.VideoLayer(quality=models.VideoQuality.LOW, width=320, height=240),
                models.VideoLayer(quality=models.VideoQuality.HIGH, width=640, height=480),
            ],
        )
    )
    audio = rtc.SignalRequest(
        add_track=rtc.AddTrackRequest(
            cid="mic", type=models.TrackType.AUDIO, source=models.TrackSource.MICROPHONE
        )
    )
    offer = rtc.SignalRequest(offer=rtc.SessionDescription(type="offer", sdp=OFFER, id=1))
    candidate = json.dumps(
        {
            "candidate": "candidate:1 1 udp 2122260223 127.0.0.2 50000 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        }
    )
    trickle = rtc.SignalRequest(
        trickle=rtc.TrickleRequest(candidateInit=candidate, target=rtc.SignalTarget.PUBLISHER)
    )
    mute = rtc.SignalRequest(mute=rtc.MuteTrackRequest(sid="T0", muted=True))
    unsubscribe = rtc.SignalRequest(
        subscription=rtc.UpdateSubscription(track_sids=["T0", "T1"], subscribe=False)
    )
    subscribe = rtc.SignalRequest(
        subscription=rtc.UpdateSubscription(
            subscribe=True,
            participant_tracks=[models.ParticipantTracks(participant_sid="x", track_sids=["T1"])],
        )
    )
    settings = rtc.SignalRequest(
        track_setting=rtc.UpdateTrackSettings(
            track_sids=["T0"], quality=models.VideoQuality.LOW, width=320, height=240, fps=15
        )
    )
    metadata = rtc.SignalRequest(
        update_metadata=rtc.UpdateParticipantMetadata(
            metadata="{}", name="N", attributes={"k": "v"}, request_id=3
        )
    )
    ping = rtc.SignalRequest(ping=5)
    ping_req = rtc.SignalRequest(ping_req=rtc.Ping(timestamp=6, rtt=7))
    answer = rtc.SignalRequest(answer=rtc.SessionDescription(type="answer", sdp=OFFER, id=0))
    leave = rtc.SignalRequest(
        leave=rtc.LeaveRequest(reason=models.DisconnectReason.CLIENT_INITIATED)
    )
    everything = 0x7F
    return [
        bytes([everything]) + frames(video, audio, offer, trickle, ping),
        bytes([everything]) + frames(unsubscribe, subscribe, settings, mute, ping_req),
        bytes([everything]) + frames(metadata, answer, leave),
        bytes([0x02]) + frames(video, offer, metadata),
        bytes([0x03]) + frames(audio, offer, trickle, mute, leave),
        bytes([everything]) + _blob(b"\xff\xff") + frames(ping),
    ]


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def appservice_inputs() -> list[bytes]:
    """[control u8] + transaction JSON: see ``fuzz/matrix_appservice.py``."""
    from fuzz.matrix_appservice import CALLER, REGISTRATION, ROOM

    offer = (GOLDEN / "aiortc_offer.sdp").read_text()
    base = {"room_id": ROOM, "sender": CALLER, "origin_server_ts": 1_700_000_000_000}

    def event(kind: str, content: object, **extra: object) -> dict[str, object]:
        return {**base, "type": kind, "event_id": f"$e{kind}", "content": content, **extra}

    invite = event(
        "m.call.invite",
        {
            "call_id": "c1",
            "party_id": "ALICE",
            "version": "1",
            "lifetime": 60000,
            "invitee": REGISTRATION.bot_user_id,
            "offer": {"type": "offer", "sdp": offer},
            "sdp_stream_metadata": {"s": {"purpose": "m.usermedia", "audio_muted": False}},
        },
    )
    candidates = event(
        "m.call.candidates",
        {
            "call_id": "c1",
            "party_id": "ALICE",
            "version": "1",
            "candidates": [
                {
                    "candidate": "candidate:1 1 udp 2122260223 127.0.0.2 5000 typ host",
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                },
                {"candidate": ""},
            ],
        },
    )
    select = event(
        "m.call.select_answer",
        {"call_id": "c1", "party_id": "ALICE", "version": "1", "selected_party_id": "BOT"},
    )
    negotiate = event(
        "m.call.negotiate",
        {
            "call_id": "c1",
            "party_id": "ALICE",
            "version": "1",
            "lifetime": 10000,
            "description": {"type": "offer", "sdp": offer},
        },
    )
    metadata = event(
        "m.call.sdp_stream_metadata_changed",
        {
            "call_id": "c1",
            "party_id": "ALICE",
            "version": "1",
            "sdp_stream_metadata": {"s": {"purpose": "m.usermedia", "video_muted": True}},
        },
    )
    hangup = event(
        "m.call.hangup",
        {"call_id": "c1", "party_id": "ALICE", "version": "1", "reason": "user_hangup"},
    )
    legacy = event(
        "m.call.invite",
        {
            "call_id": "c0",
            "version": 0,
            "lifetime": 60000,
            "offer": {"type": "offer", "sdp": offer},
        },
    )
    answer = event(
        "m.call.answer",
        {
            "call_id": "c1",
            "party_id": "ALICE",
            "version": "1",
            "answer": {"type": "answer", "sdp": offer},
        },
    )
    reject = event("m.call.reject", {"call_id": "c1", "party_id": "ALICE", "version": "1"})
    member = event(
        "org.matrix.msc3401.call.member",
        {
            "application": "m.call",
            "call_id": "",
            "scope": "m.room",
            "device_id": "DEV",
            "expires": 3_600_000,
            "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
            "foci_preferred": [
                {
                    "type": "livekit",
                    "livekit_service_url": "https://sfu.example",
                    "livekit_alias": ROOM,
                }
            ],
        },
        state_key=f"_{CALLER}_DEV_m.call",
    )
    rtc_member = event(
        "org.matrix.msc4143.rtc.member",
        {
            "slot_id": "m.call#ROOM",
            "application": {"type": "m.call"},
            "member": {"id": "x", "claimed_user_id": CALLER, "claimed_device_id": "DEV"},
            "rtc_transports": [{"type": "livekit", "livekit_service_url": "https://sfu.example"}],
        },
        state_key=f"_{CALLER}_DEV_m.call",
    )
    left = event("org.matrix.msc3401.call.member", {}, state_key=f"_{CALLER}_DEV_m.call")
    bot_invite = event(
        "m.room.member", {"membership": "invite"}, state_key=REGISTRATION.bot_user_id
    )
    transactions = [
        {"events": [invite, candidates, select]},
        {"events": [invite, negotiate, metadata, hangup]},
        {"events": [legacy, answer, reject]},
        {"events": [member, rtc_member, left]},
        {"events": [bot_invite], "ephemeral": [], "to_device": []},
        {"events": [invite, {"type": "m.call.invite"}, 5]},
    ]
    return [bytes([control]) + _json(t) for control in (0,) for t in transactions] + [
        b"\x01" + _json(transactions[0]),
        b"\x00not json",
    ]


def focus_inputs() -> list[bytes]:
    openid = {
        "access_token": "t",
        "token_type": "Bearer",
        "matrix_server_name": "hs.example",
        "expires_in": 3600,
    }
    legacy = {"room": "!room:hs.example", "openid_token": openid, "device_id": "DEV"}
    current = {
        "room_id": "!room:hs.example",
        "slot_id": "m.call#ROOM",
        "openid_token": openid,
        "member": {"id": "m1", "claimed_user_id": "@user:hs.example", "claimed_device_id": "DEV"},
    }
    bad = {**legacy, "openid_token": {**openid, "access_token": "bad"}}
    return [
        b"\x00" + _json(legacy),
        b"\x01" + _json(current),
        b"\x03" + _json(current),
        b"\x00" + _json(bad),
        b"\x01[]",
    ]


def call_api_inputs() -> list[bytes]:
    def request(route: int, param: str = "", query: str = "", body: object = None) -> bytes:
        return (
            bytes([route])
            + _blob(param.encode())
            + _blob(query.encode())
            + (b"" if body is None else _json(body))
        )

    return [
        request(
            0,
            body={
                "external_room": "rocketchat:GENERAL",
                "title": "Standup",
                "webhook_url": "http://127.0.0.1:9/hook",
                "external_call_id": "x",
            },
        ),
        request(0, body={"external_room": "!abc:hs.example"}),
        request(0, body={"external_room": "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"}),
        request(1, query="status=active"),
        request(2, "C0"),
        request(4, "C0", body={"identity": "bob", "name": "Bob", "mic": True, "ttl_s": 600}),
        request(5, "C0", "code=K0&name=Guest"),
        request(6),
        request(7, "room-1", body={"rocketchat_room": "GENERAL", "matrix_room": "!a:hs.example"}),
        request(8, "room-1"),
        request(3, "C0"),
        request(0x10, body={"external_room": "rocketchat:GENERAL"}),
    ]


def webhook_inputs() -> list[bytes]:
    from fuzz.webhooks import NOW, SECRET
    from mediafed.rocketchat import webhooks

    body = _json({"id": "1", "event": "participant_joined", "call_id": "c", "identity": "ä"})
    signed = webhooks.sign(SECRET, body, NOW).encode()
    return [signed + b"\0" + body, b"t=1,v1=00\0" + body, b"v1=ab,t=1700000000,v1=cd\0{}"]


def twirp_inputs() -> list[bytes]:
    """[control u8] + a RoomService request (protobuf, or JSON with bit 4)."""
    from google.protobuf import json_format
    from livekit.protocol import models, room as room_pb

    from fuzz.twirp import METHODS

    requests = {
        "CreateRoom": room_pb.CreateRoomRequest(name="other", empty_timeout=10, metadata="m"),
        "ListRooms": room_pb.ListRoomsRequest(names=["fuzz"]),
        "DeleteRoom": room_pb.DeleteRoomRequest(room="other"),
        "ListParticipants": room_pb.ListParticipantsRequest(room="fuzz"),
        "GetParticipant": room_pb.RoomParticipantIdentity(room="fuzz", identity="host"),
        "RemoveParticipant": room_pb.RoomParticipantIdentity(room="fuzz", identity="host"),
        "MutePublishedTrack": room_pb.MuteRoomTrackRequest(
            room="fuzz", identity="host", track_sid="TR_x", muted=True
        ),
        "UpdateParticipant": room_pb.UpdateParticipantRequest(
            room="fuzz",
            identity="host",
            metadata="{}",
            name="Host",
            attributes={"k": "v"},
            permission=models.ParticipantPermission(can_publish=True, can_subscribe=True),
        ),
        "SendData": room_pb.SendDataRequest(
            room="fuzz", data=b"hello", kind=models.DataPacket.Kind.RELIABLE, topic="t"
        ),
    }
    seeds = []
    for index, method in enumerate(METHODS):
        message = requests[method]
        seeds.append(bytes([index]) + message.SerializeToString())
        seeds.append(bytes([index | 0x10]) + json_format.MessageToJson(message).encode())
    return seeds


def main() -> None:
    for target, seeds in (
        ("rtp", rtp_packets()),
        ("rtcp", rtcp_packets()),
        ("sdp", sdp_texts()),
        ("stun", stun_messages()),
        ("read_loop", read_loop_inputs()),
        ("livekit_signal", signal_inputs()),
        ("matrix_appservice", appservice_inputs()),
        ("matrix_focus", focus_inputs()),
        ("call_api", call_api_inputs()),
        ("webhooks", webhook_inputs()),
        ("twirp", twirp_inputs()),
    ):
        print(f"{target}: {put(target, seeds)} seeds")


if __name__ == "__main__":
    main()
