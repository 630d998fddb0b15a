"""Against a real Synapse: OpenID tokens it mints, transactions it delivers.

One Synapse runs for the whole session (tests/support/synapse.py); the focus
reaches its plain-HTTP federation listener through
``[matrix] federation_url_overrides`` and the appservice listens where the
session's registration file points.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mediafed import server
from mediafed.config import Config
from mediafed.matrix.appservice import APPSERVICE_KEY, MatrixAppService
from mediafed.matrix.config import MatrixConfig
from mediafed.matrix.focus import legacy_identity, livekit_identity, livekit_room_alias
from mediafed.matrix.frontend import MEMBERSHIP_KEY, setup_matrix
from mediafed.matrix.membership import CallMembership
from mediafed.matrix.voip import CallEvent, Invite
from mediafed.signal.livekit.tokens import require_room_join, verify_token
from tests.matrix.conftest import serve
from tests.support.synapse import SynapseServer

pytestmark = pytest.mark.slow

KEYS = {"focuskey": "a-secret-long-enough-for-hs256-signing!!"}
TIMEOUT_S = 30.0


@asynccontextmanager
async def _mediafed(
    synapse: SynapseServer, data_dir: Path, *, appservice: bool = False, sink: Any = None
) -> AsyncIterator[tuple[str, Any]]:
    registration = None
    if appservice:
        assert synapse.appservice is not None
        registration = data_dir / "registration.yaml"
        synapse.appservice.write(registration)
    matrix = MatrixConfig(
        server_name=synapse.server_name,
        homeserver_url=synapse.base_url,
        allowed_homeservers=[synapse.server_name, "claims-to-be.example"],
        federation_url_overrides={
            synapse.server_name: synapse.base_url,
            "claims-to-be.example": synapse.base_url,
        },
        registration=registration,
    )
    config = Config.model_validate({"keys": KEYS, "server": {"data_dir": str(data_dir)}})

    def extension(app: Any, cfg: Config) -> None:
        setup_matrix(app, matrix, keys=cfg.keys, data_dir=cfg.server.data_dir, call_sink=sink)

    app = await server.build_app(config, extensions=[extension])
    async with serve(app, port=synapse.appservice_port if appservice else 0) as url:
        yield url, app


async def _post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_synapse_openid_tokens_are_accepted(synapse: SynapseServer, tmp_path: Path) -> None:
    alice = await asyncio.to_thread(synapse.register_user, "alice")
    room_id = await asyncio.to_thread(synapse.create_room, alice)
    openid = await asyncio.to_thread(synapse.openid_token, alice)
    assert openid["matrix_server_name"] == synapse.server_name
    async with _mediafed(synapse, tmp_path) as (url, _):
        status, body = await _post(
            f"{url}/sfu/get",
            {"room": room_id, "openid_token": openid, "device_id": alice.device_id},
        )
        assert status == 200, body
        claims = verify_token(body["jwt"], KEYS)
        assert claims.identity == legacy_identity(alice.user_id, alice.device_id)
        assert claims.identity == f"@alice:{synapse.server_name}:{alice.device_id}"
        assert require_room_join(claims) == livekit_room_alias(room_id, "m.call#ROOM")
        assert body["url"] == url.replace("http://", "ws://")

        status, body = await _post(
            f"{url}/get_token",
            {
                "room_id": room_id,
                "slot_id": "m.call#ROOM",
                "openid_token": openid,
                "member": {
                    "id": "member-alice",
                    "claimed_user_id": alice.user_id,
                    "claimed_device_id": alice.device_id,
                },
            },
        )
        assert status == 200, body
        claims = verify_token(body["jwt"], KEYS)
        assert claims.identity == livekit_identity(alice.user_id, alice.device_id, "member-alice")
        assert claims.video.room == livekit_room_alias(room_id, "m.call#ROOM")
        assert claims.name == alice.user_id


async def test_synapse_refusals(synapse: SynapseServer, tmp_path: Path) -> None:
    bob = await asyncio.to_thread(synapse.register_user, "bob")
    openid = await asyncio.to_thread(synapse.openid_token, bob)
    expiring = await asyncio.to_thread(synapse.openid_token, bob)
    await asyncio.to_thread(synapse.expire_openid_token, expiring["access_token"])
    room = "!any:room"

    def sfu_get(token: Mapping[str, Any]) -> dict[str, Any]:
        return {"room": room, "openid_token": dict(token), "device_id": bob.device_id}

    async with _mediafed(synapse, tmp_path) as (url, _):
        forged = dict(openid, access_token="forged" + openid["access_token"][6:])
        status, body = await _post(f"{url}/sfu/get", sfu_get(forged))
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
        assert f"homeserver {synapse.server_name} did not accept the OpenID token" in body["error"]

        status, body = await _post(f"{url}/sfu/get", sfu_get(expiring))
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
        assert "unknown or expired" in body["error"]

        # Synapse vouches for bob of its own server, not of the server the request names
        elsewhere = dict(openid, matrix_server_name="claims-to-be.example")
        status, body = await _post(f"{url}/sfu/get", sfu_get(elsewhere))
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
        assert (
            f"belongs to {bob.user_id}, who is not a user of claims-to-be.example" in body["error"]
        )

        stranger = dict(openid, matrix_server_name="not-allowed.example")
        status, body = await _post(f"{url}/sfu/get", sfu_get(stranger))
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")

        status, body = await _post(
            f"{url}/get_token",
            {
                "room_id": room,
                "slot_id": "m.call#ROOM",
                "openid_token": openid,
                "member": {
                    "id": "m",
                    "claimed_user_id": f"@alice:{synapse.server_name}",
                    "claimed_device_id": bob.device_id,
                },
            },
        )
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
        assert "does not match" in body["error"]

        # the genuine token still works: refusals had no side effect
        status, body = await _post(f"{url}/sfu/get", sfu_get(openid))
        assert status == 200, body


class Waiter:
    """Lets a test await a condition over the events the appservice received."""

    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []
        self._waiting: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def __call__(self, raw: Mapping[str, Any]) -> None:
        self.events.append(raw)
        self._check()

    def _check(self) -> None:
        for predicate, future in self._waiting:
            if not future.done() and predicate():
                future.set_result(None)

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        entry = (predicate, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        self._check()
        try:
            await asyncio.wait_for(entry[1], TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; got {self.events}") from None
        finally:
            self._waiting.remove(entry)


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    async def on_call_event(
        self, room_id: str, sender: str, call_event: CallEvent, raw: Mapping[str, Any]
    ) -> None:
        self.events.append(call_event)


async def test_synapse_delivers_transactions(
    synapse: SynapseServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert synapse.appservice is not None
    bot = synapse.appservice.bot_user_id
    carol = await asyncio.to_thread(synapse.register_user, "carol")
    sink, waiter = RecordingSink(), Waiter()
    caplog.set_level(logging.INFO, logger="mediafed.matrix")
    async with _mediafed(synapse, tmp_path, appservice=True, sink=sink) as (url, app):
        service: MatrixAppService = app[APPSERVICE_KEY]
        membership: CallMembership = app[MEMBERSHIP_KEY]
        service.add_event_listener(waiter)

        # Element Call's discovery: the homeserver names this relay as its focus
        # (configured as `mediafed matrix recipe` prints it) ...
        transports = await asyncio.to_thread(
            synapse.request,
            "GET",
            "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports",
            token=carol.access_token,
        )
        [focus] = transports["rtc_transports"]
        assert focus == {"type": "livekit", "livekit_service_url": url}
        # ... and the relay hands out a token there
        openid = await asyncio.to_thread(synapse.openid_token, carol)
        status, body = await _post(
            f"{focus['livekit_service_url']}/sfu/get",
            {"room": "!r", "openid_token": openid, "device_id": carol.device_id},
        )
        assert status == 200, body

        # the bot, invited, joins by itself
        room_id = await asyncio.to_thread(synapse.create_room, carol)
        await asyncio.to_thread(synapse.invite, carol, room_id, bot)

        def bot_joined() -> bool:
            return any(
                e.get("type") == "m.room.member"
                and e.get("state_key") == bot
                and e.get("content", {}).get("membership") == "join"
                for e in waiter.events
            )

        await waiter.until(bot_joined, "the bot's join")
        assert bot in await asyncio.to_thread(synapse.joined_members, carol, room_id)

        # a real call.member state event reaches the membership tracker
        state_key = f"_{carol.user_id}_{carol.device_id}_m.call"
        content = {
            "application": "m.call",
            "call_id": "",
            "scope": "m.room",
            "device_id": carol.device_id,
            "membershipID": "carol-1",
            "expires": 3_600_000,
            "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
            "foci_preferred": [{"type": "livekit", "livekit_service_url": url}],
        }
        await asyncio.to_thread(
            synapse.send_state, carol, room_id, "org.matrix.msc3401.call.member", state_key, content
        )

        # (this one: Synapse may still deliver other tests' memberships, the delayed
        # leaves of their ghosts, to the same appservice)
        def carols(event: Mapping[str, Any]) -> bool:
            return (
                event.get("type") == "org.matrix.msc3401.call.member"
                and event.get("room_id") == room_id
                and event.get("state_key") == state_key
            )

        await waiter.until(lambda: any(carols(e) for e in waiter.events), "the call.member event")
        sent_at = next(int(e["origin_server_ts"]) for e in waiter.events if carols(e))
        [member] = membership.members(room_id, now_ms=sent_at)
        assert (member.user_id, member.device_id, member.member_id) == (
            carol.user_id,
            carol.device_id,
            "carol-1",
        )

        # malformed m.call content is logged and dropped; the next valid event arrives
        await asyncio.to_thread(
            synapse.send_event,
            carol,
            room_id,
            "m.call.invite",
            {"call_id": "bad", "party_id": "P", "version": "1", "lifetime": 60000},
        )
        good = {
            "call_id": "good",
            "party_id": carol.device_id,
            "version": "1",
            "lifetime": 60000,
            "invitee": bot,
            "offer": {"type": "offer", "sdp": "v=0\r\n"},
        }
        await asyncio.to_thread(synapse.send_event, carol, room_id, "m.call.invite", good)
        await waiter.until(
            lambda: (
                sum(
                    e.get("type") == "m.call.invite" and e.get("room_id") == room_id
                    for e in waiter.events
                )
                == 2
            ),
            "both invites",
        )
        assert [e.call_id for e in sink.events] == ["good"]
        assert isinstance(sink.events[0], Invite) and sink.events[0].invitee == bot
        assert "dropped m.call.invite" in caplog.text and "`offer` must be an object" in caplog.text

        # replaying a transaction Synapse already delivered changes nothing
        last_txn = service.txn_log.recent(1)[0]
        headers = {"Authorization": f"Bearer {synapse.appservice.hs_token}"}
        replay = {"events": [dict(waiter.events[-1])]}
        async with aiohttp.ClientSession() as http:
            txn_url = f"{url}/_matrix/app/v1/transactions/{last_txn}"
            async with http.put(txn_url, json=replay, headers=headers) as resp:
                assert resp.status == 200
            async with http.put(
                txn_url, json=replay, headers={"Authorization": "Bearer not-the-hs-token"}
            ) as resp:
                assert resp.status == 403
                assert (await resp.json())["errcode"] == "M_FORBIDDEN"
        assert [e.call_id for e in sink.events] == ["good"]
        await service.wait_idle()
