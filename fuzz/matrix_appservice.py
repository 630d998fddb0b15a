"""Matrix appservice transactions and the ``m.call.*`` content in them.

The appservice endpoint (``PUT /_matrix/app/v1/transactions/{id}``) of a real app,
with MatrixRTC membership tracking and the classic-call bridge answering invites in
a real room core (UDP on 127.0.0.2: run inside ``scripts/in-netns``). Nothing talks
to a homeserver: the bridge's sender and the bot's intent are local stubs.

Input: one control byte (bit 0: a wrong hs_token) and the transaction body (JSON
text). The answer must be 200 or a Matrix error (4xx); an exception, a 5xx, or an
error mediafed logged with a traceback (one bad event is caught and logged so that
the others still run: the fuzzer treats that as a crash) is a crash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    _common.load_native()
    from mediafed import server
    from mediafed.config import Config, load_config
    from mediafed.matrix.appservice import APPSERVICE_KEY, setup_appservice
    from mediafed.matrix.calls import MatrixCallBridge
    from mediafed.matrix.membership import CallMembership
    from mediafed.matrix.registration import make_registration
    from mediafed.worker import Worker

HOST = "127.0.0.2"
ROOM = "!room:hs.example"
CALLER = "@alice:hs.example"
REGISTRATION = make_registration(url="http://127.0.0.1:9", domain="hs.example")


class Sender:
    """The homeserver as the bridge sees it: the caller and the bot are in every room."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def send(
        self, room_id: str, user_id: str, event_type: str, content: Mapping[str, Any]
    ) -> None:
        json.dumps(content)  # what goes to the homeserver must be JSON
        self.sent.append((room_id, user_id, event_type))

    async def joined_members(self, room_id: str) -> Mapping[str, str] | None:
        return {CALLER: "Alice", REGISTRATION.bot_user_id: ""}


class Intent:
    """The bot's client API, without a homeserver."""

    mxid = REGISTRATION.bot_user_id

    async def join_room(self, room_id: str, servers: Any = None, max_retries: int = 0) -> str:
        return room_id


class Harness:
    def __init__(self) -> None:
        self.data_dir = _common.state_dir("matrix_appservice")
        self.worker = Worker.from_config(
            load_config(
                environ={
                    "MEDIAFED_SERVER_BIND": HOST,
                    "MEDIAFED_RTC_UDP_PORT": "0",
                    "MEDIAFED_RTC_ICE_TCP": "false",
                    "MEDIAFED_RTC_NODE_IP": HOST,
                }
            )
        )
        self.rooms = self.worker.rooms
        _common.run_async(self.worker.start())
        self.membership = CallMembership()

        def extension(app: Any, config: Config) -> None:
            setup_appservice(
                app,
                REGISTRATION,
                homeserver_url="http://127.0.0.1:9",
                data_dir=self.data_dir,
                membership=self.membership,
            )

        self.app = _common.run_async(server.build_app(Config(), extensions=[extension]))
        self.runner = _common.run_async(_common.start_app(self.app))
        self.service = self.app[APPSERVICE_KEY]
        self.service._intent = Intent()  # type: ignore[assignment]
        self.count = 0


_harness: Harness | None = None


def harness() -> Harness:
    global _harness
    if _harness is None:
        _harness = Harness()
    return _harness


async def _transaction(h: Harness, control: int, body: bytes) -> None:
    bridge = MatrixCallBridge(h.rooms, REGISTRATION, Sender())
    h.service.call_sink = bridge
    h.count += 1
    token = "wrong" if control & 1 else REGISTRATION.hs_token
    try:
        status, _ = await _common.http(
            h.app,
            "PUT",
            f"/_matrix/app/v1/transactions/fuzz{h.count}",
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            body,
        )
        assert status in (200, 400, 401, 403), status
        await h.service.wait_idle()
    finally:
        await bridge.close()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    h = harness()
    _common.run_async(_transaction(h, data[0], data[1:]))
    _common.settle(2)
    _common.TRAP.check()


def main() -> None:
    harness()
    _common.run(test_one_input)


if __name__ == "__main__":
    main()
