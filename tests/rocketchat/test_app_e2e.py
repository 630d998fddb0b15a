"""End to end: the Rocket.Chat App's provider and endpoint (under node) against mediafed.

The App's real TypeScript code runs under node with a real HTTP client
(fetch) against the real call API on loopback: it checks its settings, opens
the call of a Rocket.Chat room and makes per-user links. The join tokens are
checked here with mediafed.signal.livekit.tokens. mediafed's signed webhooks then reach the
App's endpoint through a real node HTTP server; a forged and a replayed one
are refused. Media between the two users comes with the signaling front-end
(built in parallel) and is not exercised here.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from mediafed import server
from mediafed.config import Config
from mediafed.rocketchat import webhooks
from mediafed.rocketchat.handlers import CALL_SERVICE_KEY
from mediafed.signal.livekit.tokens import VideoGrant, mint_token, require_room_join, verify_token

APP = Path(__file__).resolve().parents[2] / "rocketchat-app"
KEY, SECRET = "rc-app-key", "a-long-enough-api-secret-for-the-app-0123456789"


async def _line(stream: asyncio.StreamReader) -> dict[str, Any]:
    raw = await asyncio.wait_for(stream.readline(), 60)
    assert raw, "the node driver exited without output"
    data: dict[str, Any] = json.loads(raw)
    assert "error" not in data, data["error"]
    return data


@pytest.mark.slow
async def test_app_provider_and_endpoint_against_real_mediafed(tmp_path: Path) -> None:
    node, npx = shutil.which("node"), shutil.which("npx")
    assert node and npx, "node is not installed; run scripts/install-test-deps"
    build = await asyncio.create_subprocess_exec(
        npx,
        "tsc",
        "-p",
        "tsconfig.test.json",
        cwd=APP,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(build.communicate(), 240)
    assert build.returncode == 0, out.decode()[-3000:]

    config = Config.model_validate({"keys": {KEY: SECRET}, "server": {"data_dir": str(tmp_path)}})
    extension = server.call_api_extension(webhook_options={"base_delay_s": 0.05, "max_attempts": 3})
    app = await server.build_app(config, extensions=[extension])
    service = app[CALL_SERVICE_KEY]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    driver = await asyncio.create_subprocess_exec(
        node,
        str(APP / "build" / "test" / "e2e" / "run.js"),
        cwd=APP,
        env={
            **os.environ,
            "MEDIAFED_URL": url,
            "MEDIAFED_API_KEY": KEY,
            "MEDIAFED_API_SECRET": SECRET,
        },
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert driver.stdout is not None
        ready = await _line(driver.stdout)
        assert ready["configured"] is True
        assert ready["misconfigured"] is False

        # The call exists for the Rocket.Chat room and call.
        [call] = await service.store.list_calls(status="active")
        assert (call.external_room, call.external_call_id) == ("rocketchat:ROOME2E", "rccall-e2e")
        assert call.title == "End to end" and call.webhook_url == ready["webhookUrl"]
        invite = ready["generated"]
        assert invite.startswith(f"{url}/api/v1/calls/{call.call_id}/invite?code=")

        # Alice's link carries a token for this room only, with her name and mic/cam.
        alice = urlsplit(ready["alice"])
        assert f"{alice.scheme}://{alice.netloc}" == url
        query = parse_qs(alice.query)
        assert (query["mic"], query["cam"]) == (["1"], ["0"])
        claims = verify_token(query["token"][0], {KEY: SECRET})
        assert require_room_join(claims, call.room) == call.room
        assert (claims.identity, claims.name) == ("alice", "Alice")
        guest = verify_token(parse_qs(urlsplit(ready["guest"]).query)["token"][0], {KEY: SECRET})
        assert guest.identity.startswith("guest-") and guest.video.room == call.room

        # A forged event (wrong secret) is refused by the App's endpoint.
        forged = json.dumps(
            {
                "id": "forged",
                "event": "call_ended",
                "call_id": call.call_id,
                "external_call_id": "rccall-e2e",
                "room": call.room,
                "timestamp": 0,
            },
            separators=(",", ":"),
        ).encode()
        async with aiohttp.ClientSession() as session:
            # The call's shared link opens as a guest.
            async with session.get(invite, allow_redirects=False) as response:
                assert response.status == 302
            async with session.post(
                ready["webhookUrl"],
                data=forged,
                headers={
                    webhooks.SIGNATURE_HEADER: webhooks.sign("wrong", forged, int(time.time())),
                    webhooks.KEY_HEADER: KEY,
                    "Content-Type": "application/json",
                },
            ) as response:
                assert response.status == 401

            # Room-core events and the end of the call reach the App, signed.
            await service.participant_joined(call.room, "alice", "Alice")
            await service.participant_joined(call.room, "@zoe:matrix.example.org", "Zoë 🎥")
            await service.webhooks.wait_idle()
            admin = mint_token(
                KEY, SECRET, identity="ops", video=VideoGrant(room_admin=True, room_list=True)
            )
            async with session.delete(
                f"{url}/api/v1/calls/{call.call_id}", headers={"Authorization": f"Bearer {admin}"}
            ) as response:
                assert response.status == 200

        done = await _line(driver.stdout)
        assert done["done"] is True
        forged_delivery, *signed, replayed = done["deliveries"]
        assert (replayed["event"], replayed["status"]) == ("call_ended", 409)
        assert forged_delivery["status"] == 401
        assert "does not match" in forged_delivery["error"]
        by_event = {(d["event"], d.get("identity")): d["status"] for d in signed}
        assert by_event == {
            ("participant_joined", "alice"): 200,
            ("participant_joined", "@zoe:matrix.example.org"): 200,
            ("call_ended", None): 200,
        }
        assert done["replayStatus"] == 409
        ops = [op for op in done["ops"] if op[1] != "setEndedAt"]
        assert ops == [
            ["rccall-e2e", "addUser", "uid-alice"],
            ["rccall-e2e", "finish", None],
            ["rccall-e2e", "setStatus", 3],
            ["rccall-e2e", "finish", None],
        ]
        await service.webhooks.wait_idle()
        deliveries = await service.store.deliveries(call.call_id)
        assert [d.status for d in deliveries] == ["delivered"] * 3
        assert await asyncio.wait_for(driver.wait(), 30) == 0
    finally:
        if driver.returncode is None:
            driver.kill()
            await driver.wait()
        await runner.cleanup()
