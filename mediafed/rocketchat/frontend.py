"""Composition of the Rocket.Chat front-end: the call API with its database,
signed webhooks and, when ``[rocketchat] url`` is set, the Rocket.Chat client
that posts call notices.

The composition root (:mod:`mediafed.server`) hands it the ``[rocketchat]``
section and what it needs of the node: the API keys, the public URL, the data
directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from mediafed.rocketchat.client import RocketChatClient
from mediafed.rocketchat.config import RocketChatConfig
from mediafed.rocketchat.handlers import add_call_routes
from mediafed.rocketchat.service import DB_FILE, CallService
from mediafed.rocketchat.webhooks import WebhookSender
from mediafed.store import Store


def setup_call_api(
    app: web.Application,
    rocketchat: RocketChatConfig,
    *,
    keys: Mapping[str, str],
    data_dir: Path,
    public_url: str = "",
    local_url: str = "http://127.0.0.1:7880",
    store: Store | None = None,
    webhook_options: Mapping[str, Any] | None = None,
) -> CallService:
    """Add the call API (routes, database, webhook sender) to ``app``.

    ``store`` defaults to SQLite under ``data_dir``; ``public_url`` (may be empty)
    and ``local_url`` are the bases of the links the service hands out
    (:meth:`CallService.public_url`).
    """
    db = store or Store(data_dir / DB_FILE)
    sender = WebhookSender(keys, store=db, **(webhook_options or {}))
    client = RocketChatClient(rocketchat) if rocketchat.enabled else None
    service = CallService(
        db,
        sender,
        keys=keys,
        public_url=public_url,
        local_url=local_url,
        rocketchat=client,
        rocketchat_config=rocketchat,
    )

    async def startup(app: web.Application) -> None:
        await db.open()
        await sender.start()

    async def cleanup(app: web.Application) -> None:
        await service.close()
        await sender.close()
        if client is not None:
            await client.close()
        await db.close()

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    add_call_routes(app, service)
    return service
