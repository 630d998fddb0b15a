"""Composition root: configuration -> objects -> one running node.

The HTTP port carries signaling, the APIs, the operator endpoints and the
web-demo; the media worker (:class:`~mediafed.worker.Worker`) owns the UDP port
and drives the rooms. This is the one module that knows every front-end and
wires them to the room core; each front-end is handed its own configuration
section and what else it needs of the node (API keys, public URL, data
directory), never the whole configuration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from mediafed import __version__
from mediafed.config import Config
from mediafed.media import ParticipantInfo, Room, RoomManager, events
from mediafed.operator.health import HEALTH_SECTIONS_KEY, add_health_route, add_worker_route
from mediafed.rocketchat.config import RocketChatConfig
from mediafed.runtime import MAX_LINE_SIZE, stop_on_signals, warn_short_secrets
from mediafed.worker import Worker, WorkerSettings

if TYPE_CHECKING:
    from mediafed.operator.webhooks import WebhookNotifier
    from mediafed.signal.livekit.link import RelayLink
    from mediafed.store import Store

log = logging.getLogger(__name__)

Extension = Callable[[web.Application, Config], Awaitable[None] | None]
"""Adds the routes, startup and cleanup hooks of one front-end to the app."""

CONFIG_KEY = web.AppKey("config", Config)
ROOMS_KEY = web.AppKey("rooms", RoomManager)
WEBHOOKS_KEY: web.AppKey[WebhookNotifier] = web.AppKey("webhooks")
RELAY_LINKS_KEY: web.AppKey[list[RelayLink]] = web.AppKey("relay_links")


def static_dir() -> Path | None:
    """Where the built web-demo lives inside the installed package, if built."""
    path = Path(str(resources.files("mediafed") / "static" / "web-demo"))
    return path if (path / "index.html").is_file() else None


async def _index(request: web.Request) -> web.StreamResponse:
    root = static_dir()
    if root is None:
        return web.Response(
            status=503,
            text="the web-demo is not built; run `npm --prefix web-demo ci && "
            "npm --prefix web-demo run build`",
        )
    return web.FileResponse(root / "index.html")


def livekit_extension(rooms: RoomManager) -> Extension:
    """The LiveKit front-end (``/rtc``, ``/rtc/validate``, dev tokens) on ``rooms``."""
    from mediafed.signal.livekit.frontend import setup_livekit

    def livekit(app: web.Application, config: Config) -> None:
        setup_livekit(
            app,
            rooms,
            keys=config.keys,
            dev=config.server.dev,
            turn_servers=[turn.server() for turn in config.rtc.turn_servers],
        )

    return livekit


def room_service_extension(rooms: RoomManager) -> Extension:
    """LiveKit's RoomService (Twirp), the operators' API, on ``rooms``."""
    from mediafed.operator.twirp import add_twirp_routes

    def room_service(app: web.Application, config: Config) -> None:
        add_twirp_routes(
            app, config.keys, rooms, enable_remote_unmute=config.room.enable_remote_unmute
        )

    return room_service


def relay_links_extension(rooms: RoomManager) -> Extension:
    """``[[relay.links]]``: rooms of other SFUs pulled into ``rooms``, from startup
    to shutdown (:mod:`mediafed.signal.livekit.link`)."""
    from mediafed.signal.livekit.link import LinkTarget, RelayLink
    from mediafed.signal.livekit.tokens import VideoGrant, mint_token

    def relay_links(app: web.Application, config: Config) -> None:
        links: list[RelayLink] = []
        identity = config.relay.identity
        for entry in config.relay.links:
            remote_room = entry.remote_room or entry.room

            async def renew(entry: Any = entry, remote_room: str = remote_room) -> LinkTarget:
                token = entry.token or mint_token(
                    entry.api_key,
                    entry.api_secret,
                    identity=identity,
                    video=VideoGrant(
                        room_join=True,
                        room=remote_room,
                        can_publish=False,
                        can_publish_data=False,
                        hidden=True,
                    ),
                )
                return LinkTarget(entry.url, token, entry.room)

            links.append(RelayLink(rooms, LinkTarget(entry.url, "", entry.room), renew=renew))
        if not links:
            return
        app[RELAY_LINKS_KEY] = links
        app.setdefault(HEALTH_SECTIONS_KEY, {})["relay_links"] = lambda: [
            dataclasses.asdict(link.status) for link in links
        ]

        async def start(app: web.Application) -> None:
            for link in links:
                link.start()

        async def stop(app: web.Application) -> None:
            for link in links:
                await link.close()

        app.on_startup.append(start)
        app.on_shutdown.append(stop)

    return relay_links


def webhook_extension(rooms: RoomManager, **options: Any) -> Extension:
    """LiveKit webhooks of ``rooms`` to ``[webhook] urls``, when there are any;
    ``options`` go to :class:`~mediafed.operator.webhooks.WebhookNotifier`."""
    from mediafed.operator.webhooks import WebhookNotifier

    def webhooks(app: web.Application, config: Config) -> None:
        section = config.webhook
        if not section.urls:
            return
        # config.py checked that api_key names one of [keys]
        secret = config.keys[section.api_key]
        notifier = WebhookNotifier(section.urls, section.api_key, secret, **options)
        rooms.add_observer(notifier.observe)
        app[WEBHOOKS_KEY] = notifier

        async def start(app: web.Application) -> None:
            await notifier.start()

        async def stop(app: web.Application) -> None:
            await notifier.close()

        app.on_startup.append(start)
        app.on_cleanup.append(stop)

    return webhooks


def call_api_extension(
    *,
    store: Store | None = None,
    rocketchat: RocketChatConfig | None = None,
    webhook_options: Mapping[str, Any] | None = None,
) -> Extension:
    """The Rocket.Chat front-end's call API, with explicit parts where given.

    ``rocketchat`` defaults to the ``[rocketchat]`` section; ``store`` to SQLite
    under ``server.data_dir``.
    """
    from mediafed.rocketchat.frontend import setup_call_api

    def calls(app: web.Application, config: Config) -> None:
        setup_call_api(
            app,
            rocketchat or config.rocketchat,
            keys=config.keys,
            data_dir=config.server.data_dir,
            public_url=config.server.public_url,
            local_url=config.server.local_url(),
            store=store,
            webhook_options=webhook_options,
        )

    return calls


def _caller_identity(participant: ParticipantInfo) -> str:
    """The identity the call API's caller gave a participant (webhooks report it),
    also when it joined as a Matrix ghost's device."""
    from mediafed.rocketchat.service import EXTERNAL_IDENTITY

    return participant.attributes.get(EXTERNAL_IDENTITY) or participant.identity


def front_ends(rooms: RoomManager, *, home: bool = True) -> list[Extension]:
    """Every front-end of a full node, wired to ``rooms``; without ``home``, only
    those of a node's other workers (LiveKit signaling, RoomService, webhooks: the
    Matrix, Rocket.Chat and relay-link front-ends run on the home worker)."""
    from mediafed.matrix.frontend import RTC_GHOSTS_KEY, RTC_LINKS_KEY, setup_matrix
    from mediafed.matrix.rtc_ghosts import ghost_identity
    from mediafed.rocketchat.handlers import CALL_SERVICE_KEY

    call_api = call_api_extension()

    def calls(app: web.Application, config: Config) -> None:
        call_api(app, config)
        service = app[CALL_SERVICE_KEY]

        async def close_room(room: str) -> bool:
            return await rooms.delete(room, "call ended")

        service.on_call_ended = close_room

        def observe(room: Room, event: events.RoomEvent) -> None:
            match event:
                case events.ParticipantJoined(participant=participant):
                    service.participant_joined(
                        room.name, _caller_identity(participant), participant.name
                    )
                case events.ParticipantLeft(participant=participant):
                    service.participant_left(
                        room.name, _caller_identity(participant), participant.name
                    )
                case events.RoomClosed():
                    service.room_finished(room.name)

        rooms.add_observer(observe)

    def matrix(app: web.Application, config: Config) -> None:
        service = app.get(CALL_SERVICE_KEY)  # set by `calls`, which runs first
        setup_matrix(
            app,
            config.matrix,
            keys=config.keys,
            data_dir=config.server.data_dir,
            public_url=config.server.public_url,
            rooms=rooms,
            on_call_started=service.call_started_elsewhere if service is not None else None,
            on_call_ended=service.call_ended_elsewhere if service is not None else None,
            matrix_room_of=service.matrix_room_of if service is not None else None,
        )
        links = app.get(RTC_LINKS_KEY)
        if links is not None:
            app.setdefault(HEALTH_SECTIONS_KEY, {})["matrixrtc_links"] = lambda: [
                dataclasses.asdict(link.status) for link in links.links.values()
            ]
        ghosts = app.get(RTC_GHOSTS_KEY)
        if service is not None and ghosts is not None:
            # Users of calls linked to a Matrix room join as their ghost's device.
            service.ghost_identity = functools.partial(ghost_identity, ghosts.registration)
            # Calls Rocket.Chat started ring the Matrix side (MSC4075).
            ghosts.ringing_call_of = service.rocketchat_started_call

    shared = [livekit_extension(rooms), room_service_extension(rooms), webhook_extension(rooms)]
    if not home:
        return shared
    return [*shared, relay_links_extension(rooms), calls, matrix]


async def build_app(
    config: Config,
    extensions: list[Extension] | None = None,
    *,
    worker: Worker | None = None,
) -> web.Application:
    """The HTTP application. With ``worker``, the media worker starts and stops with it."""
    app = web.Application(client_max_size=1 << 20)
    app[CONFIG_KEY] = config
    if worker is not None:
        from mediafed.operator.metrics import setup_metrics

        app[ROOMS_KEY] = worker.rooms
        media = worker
        setup_metrics(app, worker)

        async def start_media(app: web.Application) -> None:
            await media.start()

        async def stop_media(app: web.Application) -> None:
            await media.stop()

        app.on_startup.append(start_media)
        app.on_cleanup.append(stop_media)
    add_health_route(app, worker.rooms if worker is not None else None)
    for extension in extensions or []:
        result = extension(app, config)
        if result is not None:
            await result
    root = static_dir()
    app.router.add_get("/", _index)
    if root is not None:
        app.router.add_static("/assets/", root / "assets", show_index=False)
    return app


async def serve(
    config: Config,
    *,
    ready: asyncio.Event | None = None,
    worker_index: int | None = None,
    unix_path: str | None = None,
) -> None:
    """Run one node (HTTP + one media worker) until SIGINT/SIGTERM.

    As worker ``worker_index`` of a node with several (:mod:`mediafed.cluster`),
    it serves HTTP on the Unix socket ``unix_path`` for the supervisor, which
    owns the public port; its UDP and ICE-TCP ports are the configured ones plus
    its index, and only the home worker (0) runs the Matrix, Rocket.Chat and
    relay-link front-ends.
    """
    if worker_index is None:
        warn_short_secrets(config)
    settings = WorkerSettings.from_config(config, index=worker_index or 0)
    worker = Worker(settings)
    home = not worker_index
    app = await build_app(config, front_ends(worker.rooms, home=home), worker=worker)
    if worker_index is not None:
        add_worker_route(app, worker_index, worker)
    runner = web.AppRunner(app, access_log=None, max_line_size=MAX_LINE_SIZE)
    await runner.setup()
    site: web.BaseSite
    if unix_path is not None:
        site = web.UnixSite(runner, unix_path)
        where = f"worker {worker_index} on {unix_path}"
    else:
        site = web.TCPSite(runner, config.server.bind, config.server.http_port)
        where = f"http://{config.server.bind}:{config.server.http_port}"
    await site.start()
    log.info(
        "- mediafed %s listening on %s (media UDP %d, ICE-TCP %s, advertised %s)",
        __version__,
        where,
        worker.udp_port,
        worker.tcp_port or "off",
        config.advertised_ips(),
    )
    stop = stop_on_signals()
    # Everything built so far lives as long as the process: keep the cyclic
    # garbage collector from walking it again and again (pauses on the media path).
    gc.collect()
    gc.freeze()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("- shutting down")
        await runner.cleanup()
