"""Composition of the Matrix front-end: the focus always, the appservice when a
registration file is configured (``[matrix] registration``), and with a media
server (``rooms``) the bridge that answers classic ``m.call.*`` calls
(:mod:`mediafed.matrix.calls`), which also places classic calls from ghosts
(Rocket.Chat calls in direct rooms, ``[matrix] classic_call_invites``).

The composition root (:mod:`mediafed.server`) hands it the ``[matrix]`` section
and what it needs of the node: the API keys, the public URL, the data directory.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from mediafed.errors import ConfigError
from mediafed.matrix.appservice import CallEventSink, MatrixAppService, setup_appservice
from mediafed.matrix.calls import AppServiceSender, MatrixCallBridge, OnCallStarted
from mediafed.matrix.callwatch import MatrixCallWatcher, OnCallEnded
from mediafed.matrix.config import MatrixConfig
from mediafed.matrix.focus import FOCUS_KEY, setup_focus
from mediafed.matrix.membership import CallMembership
from mediafed.matrix.registration import Registration
from mediafed.matrix.rtc_ghosts import AppServiceGhostHomeserver, MatrixRoomOf, RtcGhosts
from mediafed.matrix.rtc_links import AppServiceOpenID, RtcLinks

if TYPE_CHECKING:
    from mediafed.media import RoomManager

log = logging.getLogger(__name__)

MEMBERSHIP_KEY = web.AppKey("matrix_membership", CallMembership)
CALL_BRIDGE_KEY = web.AppKey("matrix_call_bridge", MatrixCallBridge)
RTC_GHOSTS_KEY = web.AppKey("matrix_rtc_ghosts", RtcGhosts)
RTC_LINKS_KEY = web.AppKey("matrix_rtc_links", RtcLinks)


def setup_matrix(
    app: web.Application,
    matrix: MatrixConfig,
    *,
    keys: Mapping[str, str],
    data_dir: Path,
    public_url: str = "",
    call_sink: CallEventSink | None = None,
    rooms: RoomManager | None = None,
    on_call_started: OnCallStarted | None = None,
    on_call_ended: OnCallEnded | None = None,
    matrix_room_of: MatrixRoomOf | None = None,
) -> None:
    """Add the Matrix routes; does nothing when ``[matrix] server_name`` is unset.

    With ``rooms`` (and no ``call_sink``), classic calls to bridge users are
    answered in the media server; ``on_call_started(mediafed_room, caller_name)``
    is told of each (the Rocket.Chat card or notice), and so are MatrixRTC calls
    (Element Call) as they start; ``on_call_ended(mediafed_room)`` when a room's
    last MatrixRTC member leaves. With ``rooms`` and ``matrix_room_of`` (mediafed
    room -> linked Matrix room), bridged participants of linked calls appear in
    the Matrix room as MatrixRTC members (:mod:`.rtc_ghosts`)."""
    if not matrix.server_name:
        log.info("- Matrix front-end off: set [matrix] server_name to enable it")
        return
    if matrix.admit_room_members and matrix.registration is None:
        raise ConfigError(
            "[matrix] admit_room_members needs the appservice (the bridge bot sees the "
            "room's members): set registration and homeserver_url, or turn it off"
        )
    room_exists = None if rooms is None else (lambda name: rooms.get(name) is not None)
    members_of: list[AppServiceSender] = []

    async def room_members(room_id: str) -> Mapping[str, str] | None:
        return await members_of[0].joined_members(room_id) if members_of else None

    setup_focus(
        app,
        matrix,
        keys=keys,
        public_url=public_url,
        room_exists=room_exists,
        room_members=room_members,
    )
    if matrix.registration is None:
        return
    if not matrix.homeserver_url:
        raise ConfigError(
            "[matrix] registration is set but homeserver_url is not; give the homeserver's "
            "client-server API URL, e.g. https://matrix.example.org"
        )
    registration = Registration.load(matrix.registration)
    if registration.domain != matrix.server_name:
        raise ConfigError(
            f"{matrix.registration} is for {registration.domain}, but [matrix] server_name is "
            f"{matrix.server_name}; regenerate it with --domain {matrix.server_name}"
        )
    membership = CallMembership()
    app[MEMBERSHIP_KEY] = membership
    service = setup_appservice(
        app,
        registration,
        homeserver_url=matrix.homeserver_url,
        data_dir=data_dir,
        membership=membership,
        call_sink=call_sink,
    )
    members_of.append(AppServiceSender(service))
    if rooms is not None and matrix_room_of is not None:
        _setup_rtc_ghosts(app, matrix, registration, service, rooms, matrix_room_of, public_url)
    if rooms is not None and matrix.relay_links:
        _setup_rtc_links(app, registration, service, membership, rooms, public_url)
    if on_call_started is not None or on_call_ended is not None:
        watcher = MatrixCallWatcher(
            membership, registration.is_ours, on_started=on_call_started, on_ended=on_call_ended
        )
        service.add_event_listener(watcher.on_event)
    if call_sink is None and rooms is not None:
        sender = AppServiceSender(service)
        bridge = MatrixCallBridge(
            rooms,
            registration,
            sender,
            on_call_started=on_call_started,
            classic_invites=matrix.classic_call_invites,
            invite_lifetime_ms=int(matrix.classic_invite_lifetime_s * 1000),
            matrixrtc_used=sender.matrixrtc_used,
        )
        service.call_sink = bridge
        service.add_event_listener(bridge.on_room_event)
        app[CALL_BRIDGE_KEY] = bridge
        ghosts = app.get(RTC_GHOSTS_KEY)
        if ghosts is not None:
            # A Rocket.Chat call in a direct room rings classic clients too.
            ghosts.classic_call = bridge.place_call

        async def hang_up_all(app: web.Application) -> None:
            await bridge.close()

        # on_shutdown runs before on_cleanup, while the appservice can still send.
        app.on_shutdown.append(hang_up_all)


def _setup_rtc_ghosts(
    app: web.Application,
    matrix: MatrixConfig,
    registration: Registration,
    service: MatrixAppService,
    rooms: RoomManager,
    matrix_room_of: MatrixRoomOf,
    public_url: str,
) -> None:
    focus_url = public_url.rstrip("/")
    if not focus_url:
        log.warning(
            "x bridged participants are not shown as MatrixRTC members: set [server] "
            "public_url (the focus URL Element Call users reach this relay at)"
        )
        return
    ghosts = RtcGhosts(
        registration,
        AppServiceGhostHomeserver(service),
        matrix_room_of,
        focus_url=focus_url,
        rtc_member_events=matrix.rtc_member_events,
        leave_delay_ms=int(matrix.ghost_leave_delay_s * 1000),
    )
    rooms.add_observer(ghosts.observe)
    app[RTC_GHOSTS_KEY] = ghosts

    async def remove_ghosts(app: web.Application) -> None:
        await ghosts.close()

    # on_shutdown runs before on_cleanup, while the appservice can still send.
    app.on_shutdown.append(remove_ghosts)


def _setup_rtc_links(
    app: web.Application,
    registration: Registration,
    service: MatrixAppService,
    membership: CallMembership,
    rooms: RoomManager,
    public_url: str,
) -> None:
    if not public_url:
        log.warning(
            "x no relay links to other homeservers' SFUs: set [server] public_url (the "
            "focus URL of this relay, which tells local MatrixRTC members from remote ones)"
        )
        return
    links = RtcLinks(
        membership,
        registration,
        rooms,
        AppServiceOpenID(service),
        focus_url=public_url,
        is_matrixrtc=app[FOCUS_KEY].is_matrixrtc,
    )
    service.add_event_listener(links.on_event)
    rooms.add_observer(links.observe)
    app[RTC_LINKS_KEY] = links

    async def close_links(app: web.Application) -> None:
        await links.close()

    app.on_shutdown.append(close_links)
