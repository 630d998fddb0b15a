"""One media worker: its UDP socket (and ICE-TCP listener), DTLS certificate, clock and
timers; it drives the rooms.

Everything below the front-ends that has to do with time or I/O lives here. The
room core (media/) gets what it needs — a clock, a factory that makes a peer
connection's transport endpoint on this worker's socket, how long to keep
packets for retransmission — and nothing of the configuration; the transport
(transport/) gets its socket and certificate. The timers are batched across
every room and endpoint (ARCHITECTURE.md): every 50 ms NACKs and transport-cc
feedback; every second RTCP reports, allocation, connection quality, room
expiry, ICE consent and DTLS retransmission; every 300 ms the active speakers.
A worker that holds no room wakes once a second until a room is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mediafed.config import Config
from mediafed.media import Room, RoomManager, events
from mediafed.transport.dtls import Certificate
from mediafed.transport.endpoint import Endpoint, EndpointHandler
from mediafed.transport.tcp import TcpListener
from mediafed.transport.udp import MediaSocket

log = logging.getLogger(__name__)

TICK_S = 0.05
REPORT_EVERY_S = 1.0
SPEAKERS_EVERY_S = 0.3


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What a worker needs to know (from ``[server]`` and ``[rtc]``)."""

    bind: str = "0.0.0.0"
    udp_port: int = 7882
    tcp_port: int | None = None
    """The ICE-TCP port (0: any free one); None: no ICE-TCP."""
    advertised_ips: tuple[str, ...] = ("127.0.0.1",)
    consent_timeout_s: float = 30.0
    rtx_cache_s: float = 1.0

    @classmethod
    def from_config(cls, config: Config, *, index: int = 0) -> WorkerSettings:
        """Worker ``index`` of the node: its ports are the configured ones plus
        ``index`` (0 stays 0: any free port)."""

        def port(base: int) -> int:
            return base + index if base else 0

        return cls(
            bind=config.server.bind or "0.0.0.0",
            udp_port=port(config.rtc.udp_port),
            tcp_port=port(config.rtc.tcp_port) if config.rtc.ice_tcp else None,
            advertised_ips=tuple(config.advertised_ips()),
            consent_timeout_s=config.rtc.consent_timeout_s,
            rtx_cache_s=config.rtc.rtx_cache_ms / 1000,
        )


class Worker:
    """A UDP port, a certificate and the rooms on them, run on one event loop."""

    def __init__(
        self, settings: WorkerSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.certificate = Certificate()
        self.mux = MediaSocket(
            settings.bind, settings.udp_port, list(settings.advertised_ips), clock=clock
        )
        self.tcp = (
            TcpListener(self.mux, settings.tcp_port) if settings.tcp_port is not None else None
        )
        self.rooms = RoomManager(
            new_endpoint=self._new_endpoint, clock=clock, rtx_cache_s=settings.rtx_cache_s
        )
        self.link_sockets: list[MediaSocket] = []
        """Ports of their own, one per relay link connection (``Room.join(own_port=)``)."""
        self.link_datagrams_retired = 0
        """Datagrams received on link ports since closed (``/metrics`` never falls)."""
        self._task: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()
        """Set when a room is made: an idle worker's timers start again at once."""
        self.rooms.add_observer(self._on_room_event)

    @classmethod
    def from_config(cls, config: Config, *, clock: Callable[[], float] = time.monotonic) -> Worker:
        return cls(WorkerSettings.from_config(config), clock=clock)

    @property
    def udp_port(self) -> int:
        return self.mux.port

    @property
    def tcp_port(self) -> int:
        """The ICE-TCP port, 0 when off."""
        return self.mux.tcp_port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.mux.open(loop)
        if self.tcp is not None:
            try:
                await self.tcp.open()
            except OSError as exc:
                self.mux.close()
                raise OSError(
                    f"ICE-TCP port {self.tcp.port} on {self.mux.bind_ip}: {exc.strerror}; "
                    "set [rtc] tcp_port, or ice_tcp = false"
                ) from exc
        self._task = loop.create_task(self._run_timers(), name="mediafed-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.rooms.close("server shutting down")
        for mux in self.link_sockets:
            mux.close()
        self._prune_link_sockets()
        if self.tcp is not None:
            await self.tcp.close()
        self.mux.close()

    def _new_endpoint(self, handler: EndpointHandler, label: str, own_port: bool) -> Endpoint:
        mux = self.mux
        if own_port:
            mux = MediaSocket(
                self.mux.bind_ip,
                0,
                list(self.settings.advertised_ips),
                clock=self.clock,
                dedicated=True,
            )
            mux.open(asyncio.get_running_loop())
            self._prune_link_sockets()
            self.link_sockets.append(mux)
        return Endpoint(mux, self.certificate, handler, label=label, now=self.clock())

    def _prune_link_sockets(self) -> None:
        for mux in self.link_sockets:
            if mux.sock is None:
                self.link_datagrams_retired += mux.counters["datagrams_in"]
        self.link_sockets = [m for m in self.link_sockets if m.sock is not None]

    def link_datagrams_in(self) -> int:
        """Datagrams relay links received since start (their own ports)."""
        return self.link_datagrams_retired + sum(
            m.counters["datagrams_in"] for m in self.link_sockets
        )

    def _on_room_event(self, room: Room, event: events.RoomEvent) -> None:
        if isinstance(event, events.RoomCreated):
            self._woken.set()

    def idle(self) -> bool:
        """No rooms and no relay-link sockets: nothing for the timers to do."""
        return not self.rooms.rooms() and not self.link_sockets

    async def _run_timers(self) -> None:
        next_report = self.clock() + REPORT_EVERY_S
        next_speakers = self.clock() + SPEAKERS_EVERY_S
        while True:
            if self.idle():
                # An idle worker (every worker but one on a fresh node) wakes once a
                # second, not 20 times, until a room is made.
                # (No wait_for: in 3.11 it can swallow the cancel that stops us.)
                self._woken.clear()
                alarm = asyncio.get_running_loop().call_later(REPORT_EVERY_S, self._woken.set)
                try:
                    await self._woken.wait()
                finally:
                    alarm.cancel()
            else:
                await asyncio.sleep(TICK_S)
            now = self.clock()
            reports = now >= next_report
            speakers = now >= next_speakers
            if reports:
                next_report = now + REPORT_EVERY_S
            if speakers:
                next_speakers = now + SPEAKERS_EVERY_S
            try:
                self.rooms.tick(now, reports=reports, speakers=speakers)
                for mux in (self.mux, *self.link_sockets):
                    mux.send_checks(now)
                    if reports:
                        mux.tick(now, self.settings.consent_timeout_s)
                if reports:
                    self._prune_link_sockets()
            except Exception:
                log.exception("x timer work failed")
