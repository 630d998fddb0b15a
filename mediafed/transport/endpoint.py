"""One WebRTC transport endpoint: ICE-lite + DTLS + SRTP over the shared UDP port.

An endpoint is one peer connection's transport (BUNDLE with rtcp-mux: one
5-tuple carries everything). The UDP demux (:mod:`mediafed.transport.udp`)
hands it STUN, DTLS and SRTP datagrams — or, for a client that reached us over
ICE-TCP, its connection does (:mod:`mediafed.transport.tcp`); it hands
decrypted RTP/RTCP up to an :class:`EndpointHandler` (the room core) and sends
what the core asks, on whichever path its last nominated check came.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import struct
from typing import TYPE_CHECKING, Protocol

from mediafed.transport import native
from mediafed.transport.datachannel import DataChannels
from mediafed.transport.dtls import Certificate, DtlsSession, DtlsState
from mediafed.transport.ice import IceLiteAgent
from mediafed.transport.srtp import PacketBuffer, SrtpContext

if TYPE_CHECKING:
    from mediafed.transport.tcp import TcpConnection
    from mediafed.transport.udp import MediaSocket

log = logging.getLogger(__name__)

MAX_RTCP_SENDERS = 64
"""Distinct SSRCs an endpoint may send SRTCP from (see :meth:`Endpoint._rtcp_sender_allowed`)."""
_U32 = struct.Struct("!I")

_background: set[asyncio.Task[None]] = set()
"""Data-channel tasks, kept referenced until they finish."""


class EndpointState(enum.Enum):
    NEW = "new"
    CHECKING = "checking"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


class EndpointHandler(Protocol):
    """What the room core does with an endpoint's traffic."""

    def on_rtp(self, endpoint: Endpoint, buf: PacketBuffer, length: int, now: float) -> None:
        """Plaintext RTP sits in ``buf``; copy what you keep before returning."""

    def on_rtcp(self, endpoint: Endpoint, packet: bytes, now: float) -> None: ...

    def on_state(self, endpoint: Endpoint, state: EndpointState) -> None: ...

    def on_channel_message(self, endpoint: Endpoint, label: str, data: bytes) -> None:
        """A data channel message (SCTP over this endpoint's DTLS)."""


MAX_REMOTE_CANDIDATES = 16
CONSENT_CHECK_S = 4.0
"""How often the controlling side refreshes consent (RFC 7675 §5.1: about 5 s)."""
CHECK_RETRY_S = 0.2
"""How often the controlling side checks candidates that have not answered yet."""


def parse_udp_candidate(line: str) -> tuple[str, int] | None:
    """(address, port) of an IPv4 UDP candidate line of component 1 (RFC 8839 §5.1),
    with or without its ``a=``/``candidate:`` prefix; None for any other."""
    parts = line.strip().removeprefix("a=").removeprefix("candidate:").split()
    if len(parts) < 8 or parts[1] != "1" or parts[2].lower() != "udp" or parts[6] != "typ":
        return None
    try:
        address = str(ipaddress.IPv4Address(parts[4]))
        port = int(parts[5])
    except ValueError:
        return None
    if not 0 < port < 65536:
        return None
    return address, port


class Endpoint:
    """Transport state of one peer connection."""

    __slots__ = (
        "__weakref__",
        "_rtcp_senders",
        "_srtp",
        "addr",
        "certificate",
        "created_at",
        "datachannels",
        "dtls",
        "dtls_role_server",
        "handler",
        "ice",
        "label",
        "last_check_at",
        "mux",
        "remote_candidates",
        "remote_fingerprints",
        "sctp_remote_port",
        "sockaddr",
        "state",
        "stats",
        "stream",
        "target",
    )

    def __init__(
        self,
        mux: MediaSocket,
        certificate: Certificate,
        handler: EndpointHandler,
        *,
        label: str = "",
        now: float = 0.0,
    ) -> None:
        self.mux = mux
        self.certificate = certificate
        self.handler = handler
        self.label = label
        self.ice = IceLiteAgent(label=label)
        self.dtls: DtlsSession | None = None
        self.dtls_role_server = True
        self.remote_fingerprints: list[tuple[str, str]] = []
        self._srtp: SrtpContext | None = None
        self.addr: tuple[str, int] | None = None
        self.sockaddr: bytes | None = None
        """``addr`` packed for the native read loop; set and cleared with it (UDP only)."""
        self.stream: TcpConnection | None = None
        """The ICE-TCP connection media goes on, when the client came over TCP."""
        self.target = native.SendTarget()
        """Where media for this peer goes (socket, SRTP, address): what a DownTrack holds."""
        self.target.set_socket(mux.sock)
        self.state = EndpointState.NEW
        self.created_at = now
        self.stats = {"srtp_auth_failed": 0, "rtp_in": 0, "rtcp_in": 0}
        self.datachannels: DataChannels | None = None
        self._rtcp_senders: set[int] = set()
        self.sctp_remote_port = 5000
        self.remote_candidates: list[tuple[str, int]] = []
        """UDP host candidates of a lite remote we check as the controlling side."""
        self.last_check_at = 0.0
        mux.register(self)

    @property
    def srtp(self) -> SrtpContext | None:
        """SRTP keys of this transport (after DTLS); the send target follows them."""
        return self._srtp

    @srtp.setter
    def srtp(self, context: SrtpContext | None) -> None:
        self._srtp = context
        self.target.set_srtp(context)

    # -- negotiation ------------------------------------------------------
    def configure_remote(
        self, ufrag: str, pwd: str, fingerprints: list[tuple[str, str]], remote_setup: str
    ) -> str:
        """Apply the remote SDP's ICE and DTLS parameters; our ``a=setup`` value.

        RFC 8842 §5: an offer says ``actpass``; the answerer picks. We take the
        passive (DTLS server) role whenever we may, as ICE-lite servers do.
        """
        restart = bool(self.ice.remote_ufrag) and ufrag != self.ice.remote_ufrag
        if not self.ice.remote_ufrag:
            self.created_at = self.mux.clock()  # connectivity is expected from now on
        self.ice.set_remote(ufrag, pwd)
        self.remote_fingerprints = fingerprints
        role_server = remote_setup != "passive"
        if restart:
            log.info("- %s remote ICE restart", self.label)
        dtls = self.dtls
        if dtls is not None and self.srtp is None:
            if dtls.is_server != role_server:
                # Checks (and our guess of the role) came before the answer: start over.
                self.dtls = None
                self.dtls_role_server = role_server
                if self.addr is not None:
                    self._start_dtls()
            else:
                dtls.set_remote_fingerprints(fingerprints)
                self._after_dtls()
        self.dtls_role_server = role_server
        return "passive" if self.dtls_role_server else "active"

    def enable_data_channels(self, remote_port: int | None) -> DataChannels:
        """SCTP was negotiated (an m=application section): run it once DTLS is up."""
        if self.datachannels is None:
            self.sctp_remote_port = remote_port or 5000

            def deliver(label: str, data: bytes) -> None:
                self.handler.on_channel_message(self, label, data)

            self.datachannels = DataChannels(self, deliver, label=self.label)
            if self.srtp is not None:
                self._start_data_channels()
        return self.datachannels

    def _start_data_channels(self) -> None:
        channels = self.datachannels
        if channels is not None and not channels.started:
            task = asyncio.get_running_loop().create_task(channels.start(self.sctp_remote_port))
            _background.add(task)
            task.add_done_callback(_background.discard)

    def restart_ice(self) -> None:
        self.mux.unregister_ufrag(self)
        self.ice.restart()
        self.mux.register(self)

    # -- the controlling side (a relay link to a lite SFU; transport/ice.py) ------
    def control(self) -> None:
        """The remote is ICE-lite: we send the checks (and say we are not lite)."""
        self.ice.controlling = True

    def add_remote_candidate(self, line: str) -> None:
        """A remote candidate from the SDP or trickled: checked at once when we
        control; a lite responder learns addresses from checks and ignores it."""
        if not self.ice.controlling:
            return
        addr = parse_udp_candidate(line)
        if addr is None or addr in self.remote_candidates:
            return
        if len(self.remote_candidates) >= MAX_REMOTE_CANDIDATES:
            self.report("candidate", f"more than {MAX_REMOTE_CANDIDATES} candidates; ignored")
            return
        self.remote_candidates.append(addr)
        self.mux.expect_answers(self, addr)
        if self.ice.remote_ufrag:
            self.mux.send_to(self.ice.check(self.mux.clock()), addr)

    def keep_checking(self, now: float) -> None:
        """Timer work of the controlling side: nominate a candidate until one
        answers, then keep consent (RFC 7675) on the selected address."""
        if not self.ice.controlling or not self.ice.remote_ufrag:
            return
        if self.state in (EndpointState.FAILED, EndpointState.CLOSED):
            return
        if self.addr is not None:
            if now - self.last_check_at >= CONSENT_CHECK_S:
                self.last_check_at = now
                self.mux.send_to(self.ice.check(now), self.addr)
            return
        if now - self.last_check_at < CHECK_RETRY_S:
            return
        self.last_check_at = now
        for addr in self.remote_candidates:
            self.mux.send_to(self.ice.check(now), addr)

    def local_candidates(self) -> list[str]:
        """Host candidates (RFC 8839 §5.1) on every advertised address: UDP, and
        passive TCP (RFC 6544 §4.5) below every UDP one when ICE-TCP is on."""
        lines = []
        mux = self.mux
        for index, ip in enumerate(mux.advertised_ips, start=1):
            priority = (126 << 24) | ((65535 - index) << 8) | 255
            lines.append(f"candidate:{index} 1 udp {priority} {ip} {mux.port} typ host")
        if mux.tcp_port:
            for index, ip in enumerate(mux.advertised_ips, start=1):
                # RFC 6544 §4.2: local preference (direction 4: passive) << 13 | other
                local = (4 << 13) | (8191 - index)
                priority = (126 << 24) | (local << 8) | 255
                lines.append(
                    f"candidate:{100 + index} 1 tcp {priority} {ip} {mux.tcp_port} "
                    "typ host tcptype passive"
                )
        return lines

    # -- inbound ----------------------------------------------------------
    def _set_state(self, state: EndpointState) -> None:
        if state is self.state:
            return
        log.info("- %s transport %s -> %s", self.label, self.state.value, state.value)
        self.state = state
        self.handler.on_state(self, state)

    def on_stun(
        self,
        data: bytes,
        addr: tuple[str, int],
        now: float,
        *,
        stream: TcpConnection | None = None,
    ) -> None:
        """A STUN message from ``addr`` (on ICE-TCP connection ``stream``, else UDP)."""
        result = self.ice.handle(data, addr, now)
        if result.response is not None:
            if stream is not None:
                stream.write(result.response)
            else:
                self.mux.send_to(result.response, addr)
        if not result.valid:
            if result.error:
                self.mux.report("stun", addr, f"{self.label} {result.error}")
            return
        moved = addr != self.addr or stream is not self.stream
        if self.addr is None or (result.nominated and moved):
            if stream is not None:
                self.mux.bind_stream(self, stream)
            else:
                self.mux.bind_address(self, addr)
            if self.state in (EndpointState.NEW, EndpointState.CHECKING):
                self._start_dtls()

    def _start_dtls(self) -> None:
        if self.dtls is None:
            self.dtls = DtlsSession(
                self.certificate,
                is_server=self.dtls_role_server,
                remote_fingerprints=self.remote_fingerprints,
                label=self.label,
            )
            self._set_state(EndpointState.CHECKING)
            for datagram in self.dtls.start():
                self.send_raw(datagram)

    def on_dtls(self, data: bytes, now: float) -> None:
        if self.dtls is None:
            self._start_dtls()
        assert self.dtls is not None
        for datagram in self.dtls.receive(data):
            self.send_raw(datagram)
        if self.dtls.application_data:
            # SCTP (data channels) rides here.
            if self.datachannels is not None:
                for record in self.dtls.application_data:
                    self.datachannels.feed(record)
            self.dtls.application_data.clear()
        self._after_dtls()

    def _after_dtls(self) -> None:
        dtls = self.dtls
        if dtls is None:
            return
        if dtls.state is DtlsState.CONNECTED and self.srtp is None:
            assert dtls.keys is not None
            self.srtp = SrtpContext(dtls.keys)
            log.info("- %s DTLS done, SRTP profile %s", self.label, dtls.keys.profile.decode())
            self._set_state(EndpointState.CONNECTED)
            self._start_data_channels()
        elif dtls.state is DtlsState.FAILED and self.state is not EndpointState.FAILED:
            self.mux.report("dtls", self.addr, f"{self.label} {dtls.error}")
            self._set_state(EndpointState.FAILED)
        elif dtls.state is DtlsState.CLOSED:
            self._set_state(EndpointState.CLOSED)

    def on_srtp(self, buf: PacketBuffer, length: int, now: float) -> None:
        """One SRTP or SRTCP datagram from our peer's address, in ``buf``. Never raises:
        a failure is logged and the next datagram, of any call, is handled as usual."""
        try:
            srtp = self.srtp
            if srtp is None:
                self.mux.report("srtp", self.addr, f"{self.label} SRTP before DTLS finished")
                return
            view = buf.view
            second = view[1]
            if 192 <= second <= 223:
                if length < 8 or not self._rtcp_sender_allowed(_U32.unpack_from(view, 4)[0]):
                    return
                plain = srtp.unprotect_rtcp(buf, length)
                if plain < 0:
                    self.stats["srtp_auth_failed"] += 1
                    self.mux.report("srtp", self.addr, f"{self.label} SRTCP failed authentication")
                    return
                self.stats["rtcp_in"] += 1
                self.handler.on_rtcp(self, bytes(buf.view[:plain]), now)
                return
            plain = srtp.unprotect_rtp(buf, length)
        except MemoryError:
            raise
        except Exception as exc:
            self.media_error(exc)
            return
        if plain < 0:
            self.rtp_failed()
        else:
            self.on_rtp(buf, plain, now)

    def _rtcp_sender_allowed(self, ssrc: int) -> bool:
        """libsrtp keeps state for every SRTCP sender SSRC it decrypts: a few dozen
        (one per stream a browser sends or receives) pass, more are dropped unread."""
        senders = self._rtcp_senders
        if ssrc in senders:
            return True
        if len(senders) < MAX_RTCP_SENDERS:
            senders.add(ssrc)
            return True
        self.stats["rtcp_sender_limit"] = self.stats.get("rtcp_sender_limit", 0) + 1
        self.mux.report(
            "rtcp_senders", self.addr, f"{self.label} RTCP from over {MAX_RTCP_SENDERS} SSRCs"
        )
        return False

    def on_rtp(self, buf: PacketBuffer, length: int, now: float) -> None:
        """One RTP packet, decrypted in place (by on_srtp or the native read loop)."""
        try:
            self.stats["rtp_in"] += 1
            self.handler.on_rtp(self, buf, length, now)
        except MemoryError:
            raise
        except Exception as exc:
            self.media_error(exc)

    def media_error(self, exc: BaseException) -> None:
        """An error while handling one packet (also raised in the native receive path):
        counted, and logged with its traceback at most once per report interval, so a
        peer sending what trips a bug cannot flood the log. The packet is dropped."""
        self.stats["media_errors"] = self.stats.get("media_errors", 0) + 1
        self.mux.report_error("media", f"{self.label} error handling media", exc)

    def rtp_failed(self) -> None:
        self.stats["srtp_auth_failed"] += 1
        self.mux.report("srtp", self.addr, f"{self.label} SRTP failed authentication")

    def check_consent(self, now: float, timeout_s: float) -> None:
        """RFC 7675: no valid check for ``timeout_s`` means the path is gone."""
        if self.state in (EndpointState.FAILED, EndpointState.CLOSED):
            return
        if not self.ice.remote_ufrag:
            return  # never negotiated: nothing is expected to arrive
        since = self.ice.last_consent or self.created_at
        if now - since > timeout_s:
            log.info("x %s no ICE consent for %.0f s", self.label, now - since)
            self._set_state(EndpointState.FAILED)

    def report(self, kind: str, message: str) -> None:
        """Input of this endpoint was dropped: one rate-limited line (the socket's)."""
        self.mux.report(kind, self.addr, f"{self.label} {message}")

    # -- outbound ---------------------------------------------------------
    def send_raw(self, datagram: bytes) -> None:
        if self.stream is not None:
            self.stream.write(datagram)
        elif self.addr is not None:
            self.mux.send_to(datagram, self.addr)

    def send_rtcp(self, packet: bytes) -> None:
        """Protect and send one compound RTCP packet we built (off the hot path)."""
        if self.srtp is None or self.addr is None:
            return
        protected = self.srtp.protect_rtcp_bytes(packet)
        if protected is None:
            self.mux.counters["send_errors"] += 1
            self.mux.report("rtcp", self.addr, f"{self.label} RTCP of {len(packet)} bytes not sent")
            return
        self.send_raw(protected)

    def close(self) -> None:
        if self.datachannels is not None:
            task = asyncio.get_running_loop().create_task(self.datachannels.close())
            _background.add(task)
            task.add_done_callback(_background.discard)
            self.datachannels = None
        if self.dtls is not None:
            for datagram in self.dtls.close():
                self.send_raw(datagram)
        self.mux.retire(self)
        self.mux.unregister(self)
        self.target.set_address(None)
        if self.stream is not None:
            self.target.set_stream(None)
            self.stream.close()
            self.stream = None
        self.srtp = None
        self._set_state(EndpointState.CLOSED)
