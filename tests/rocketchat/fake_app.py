"""The mediafed Rocket.Chat App, as the fake Rocket.Chat runs it: its provider and its
public ``events`` endpoint, making the same HTTP requests as ``rocketchat-app/src``.

Provider (``videoConfProvider.ts``, ``mediafedClient.ts``): ``generateUrl`` and
``customizeUrl`` ``POST /api/v1/calls`` with ``{external_room: "rocketchat:<rid>",
external_call_id, title, webhook_url}`` and a service token like ``serviceToken``
(``iss`` the API key, ``sub`` ``rocketchat-app``, room create/list/admin grants);
``customizeUrl`` then ``POST /api/v1/calls/{id}/join`` for the user.
Endpoint (``endpoint.ts``): signed events from mediafed; ``participant_joined``
of a Rocket.Chat user adds them to the call (CALLING -> STARTED), ``call_ended``
ends it (status 3).
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
from aiohttp import web
from fake_server import VIDEOCONF_CALLING, VIDEOCONF_ENDED, VIDEOCONF_STARTED, FakeRocketChat

from mediafed.errors import AuthError
from mediafed.rocketchat import webhooks
from mediafed.signal.livekit.tokens import VideoGrant, mint_token

APP_ID = "6d2c7bf4-95cb-4c6e-8a5f-3c3a4e1f0d21"


class FakeMediafedApp:
    name = "mediafed"
    capabilities = {"mic": True, "cam": True, "title": True}

    def __init__(
        self,
        rocketchat: FakeRocketChat,
        session: aiohttp.ClientSession,
        mediafed_url: str,
        key: str,
        secret: str,
        *,
        site_url: bool = True,
    ) -> None:
        self.rocketchat, self.session, self.url = rocketchat, session, mediafed_url
        self.key, self.secret = key, secret
        self.site_url = site_url
        """Whether Rocket.Chat's Site_Url is set (the App gives no webhook URL without)."""
        self.events: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        rocketchat.provider = self
        rocketchat.app_endpoint = self.endpoint

    def _headers(self) -> dict[str, str]:
        grant = VideoGrant(room_create=True, room_list=True, room_admin=True)
        token = mint_token(self.key, self.secret, identity="rocketchat-app", video=grant, ttl_s=300)
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def webhook_url(self) -> str:
        if not self.site_url:
            return ""
        return f"{self.rocketchat.url}/api/apps/public/{APP_ID}/events"

    async def _open_call(self, call: dict[str, Any]) -> dict[str, Any]:
        body = {
            "external_room": f"rocketchat:{call['rid']}",
            "external_call_id": call["_id"],
            "title": call.get("title") or "",
            "webhook_url": self.webhook_url(),
        }
        async with self.session.post(
            f"{self.url}/api/v1/calls", data=json.dumps(body), headers=self._headers()
        ) as response:
            data: dict[str, Any] = await response.json()
            if response.status not in (200, 201):
                raise RuntimeError(f"mediafed refused the call: {data.get('error')}")
            return data

    async def generate_url(self, call: dict[str, Any]) -> str:
        return str((await self._open_call(call))["join_url"])

    async def customize_url(
        self, call: dict[str, Any], user: dict[str, Any], options: dict[str, bool]
    ) -> str:
        made = await self._open_call(call)
        body = {"identity": user["username"], "name": user["name"], **options}
        async with self.session.post(
            f"{self.url}/api/v1/calls/{made['call_id']}/join",
            data=json.dumps(body),
            headers=self._headers(),
        ) as response:
            return str((await response.json())["join_url"])

    async def endpoint(self, request: web.Request, path: str) -> web.Response:
        if path != "events" or request.method != "POST":
            return web.json_response({"error": "not found"}, status=404)
        body = await request.read()
        try:
            if request.headers.get(webhooks.KEY_HEADER) != self.key:
                raise AuthError("X-Mediafed-Key is not the API key set in the App")
            webhooks.verify(request.headers.get(webhooks.SIGNATURE_HEADER, ""), body, self.secret)
        except AuthError as exc:
            return web.json_response({"error": str(exc)}, status=401)
        event = json.loads(body)
        if event["id"] in self._seen:
            return web.json_response({"error": "replayed"}, status=409)
        self._seen.add(event["id"])
        self.events.append(event)
        call = self.rocketchat.calls.get(event.get("external_call_id") or "")
        if call is not None:
            if event["event"] == "participant_joined":
                if event.get("identity") in self.rocketchat.user_ids:
                    call["users"].append({"username": event["identity"]})
                    if call["status"] == VIDEOCONF_CALLING:
                        call["status"] = VIDEOCONF_STARTED
                        call["ringing"] = False
            elif event["event"] == "call_ended":
                call["status"] = VIDEOCONF_ENDED
                call["ringing"] = False
                call["endedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.rocketchat._changed()
        return web.json_response({"ok": True})
