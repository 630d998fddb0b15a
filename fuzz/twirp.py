"""LiveKit's RoomService over Twirp (``operator/twirp.py``): request bodies.

A real room core (UDP on 127.0.0.2: run inside ``scripts/in-netns``) with room ``fuzz``
and a participant ``host`` publishing video and audio (put back whenever an input
deleted them). Input: one control byte (``% 9``: the method; bit 4: JSON instead of
protobuf; bit 5: no valid admin token) and the body. The answer must be the method's
result (200) or a Twirp error with a 4xx status; an exception, a 5xx or an error
mediafed logged with a traceback is a crash.
"""

from __future__ import annotations

import json

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    _common.load_native()
    from fuzz.read_loop import OFFER, Listener
    from mediafed import server
    from mediafed.config import load_config
    from mediafed.operator.twirp import PREFIX, add_twirp_routes
    from mediafed.signal.livekit.tokens import VideoGrant, mint_token
    from mediafed.worker import Worker

HOST = "127.0.0.2"
SECRET = "s" * 32
METHODS = (
    "CreateRoom",
    "ListRooms",
    "DeleteRoom",
    "ListParticipants",
    "GetParticipant",
    "RemoveParticipant",
    "MutePublishedTrack",
    "UpdateParticipant",
    "SendData",
)


class Harness:
    def __init__(self) -> None:
        config = load_config(
            environ={
                "MEDIAFED_SERVER_BIND": HOST,
                "MEDIAFED_RTC_UDP_PORT": "0",
                "MEDIAFED_RTC_ICE_TCP": "false",
                "MEDIAFED_RTC_NODE_IP": HOST,
                "MEDIAFED_KEYS": "k1: " + SECRET,
            }
        )
        self.worker = Worker.from_config(config)
        self.rooms = self.worker.rooms
        _common.run_async(self.worker.start())

        def extension(app: object, cfg: object) -> None:
            add_twirp_routes(app, config.keys, self.rooms)  # type: ignore[arg-type]

        self.app = _common.run_async(server.build_app(config, extensions=[extension]))
        self.runner = _common.run_async(_common.start_app(self.app))
        self.token = mint_token(
            "k1",
            SECRET,
            identity="admin",
            video=VideoGrant(room_create=True, room_list=True, room_admin=True, room="fuzz"),
        )
        self.host_present()

    def host_present(self) -> None:
        room = self.rooms.get_or_create("fuzz")
        if "host" not in room.sessions:
            host = _common.run_async(room.join("host", listener=Listener()))
            _common.run_async(host.answer_publisher_offer(OFFER))


_harness: Harness | None = None


def harness() -> Harness:
    global _harness
    if _harness is None:
        _harness = Harness()
    return _harness


def test_one_input(data: bytes) -> None:
    if not data:
        return
    h = harness()
    control, body = data[0], data[1:]
    as_json = bool(control & 0x10)
    headers = {
        "Content-Type": "application/json" if as_json else "application/protobuf",
        "Authorization": "Bearer " + (h.token if not control & 0x20 else "x.y.z"),
    }
    path = PREFIX + METHODS[control % len(METHODS)]
    status, answer = _common.run_async(_common.http(h.app, "POST", path, headers, body))
    assert status < 500, (status, answer)
    if status != 200:
        assert json.loads(answer)["code"], answer
    _common.settle(1)
    h.host_present()
    _common.TRAP.check()


def main() -> None:
    harness()
    _common.run(test_one_input)


if __name__ == "__main__":
    main()
