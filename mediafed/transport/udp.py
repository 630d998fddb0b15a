"""The worker's one UDP port, shared by every endpoint (RFC 7983 demultiplexing).

The first byte of a datagram says what it is: 0-3 STUN, 20-63 DTLS, 128-191
RTP/RTCP. STUN finds its endpoint by the USERNAME's local ufrag; DTLS and SRTP
only ever by a remote address that passed an integrity-checked ICE check, so
an endpoint only receives media from the peer its credentials admitted.

The socket is read directly (non-blocking, ``add_reader``), draining many
datagrams per wake-up into one reusable buffer — by the native read loop
(``_transport.read_datagrams``, the reader itself) when it is built, else by
:meth:`MediaSocket._read_python` — and written with plain ``sendto``: a UDP
send that would block is a lost packet, as on any SFU.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mediafed.transport import native
from mediafed.transport.ice import parse_username
from mediafed.transport.sockaddr import pack_sockaddr, unpack_sockaddr
from mediafed.transport.srtp import MAX_DATAGRAM, PacketBuffer

if TYPE_CHECKING:
    from mediafed.transport.endpoint import Endpoint
    from mediafed.transport.tcp import TcpConnection

log = logging.getLogger(__name__)

READS_PER_WAKEUP = 256
REPORT_INTERVAL_S = 5.0
DEPARTED_KEEP_S = 60.0
"""How long the address of a closed endpoint is remembered, to name late datagrams."""
DEPARTED_MAX = 4096
SEND_COUNTS = ("datagrams_out", "octets_out", "send_errors", "srtp_errors", "oversize")
"""What each endpoint's send target counts (transport/target.py)."""
_read_datagrams = native.read_datagrams
_ICMP_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}
)


class MediaSocket:
    """One UDP socket, the endpoints behind it, and the demultiplexer between them."""

    def __init__(
        self,
        bind_ip: str,
        port: int,
        advertised_ips: list[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        dedicated: bool = False,
    ) -> None:
        self.bind_ip = bind_ip
        self.dedicated = dedicated
        """The port of one connection (a relay link's): it closes with its endpoint."""
        self.port = port
        self.advertised_ips = advertised_ips
        self.clock = clock
        self.rx = PacketBuffer()
        self.tcp_port = 0
        """The ICE-TCP port when its listener runs (transport/tcp.py), else 0."""
        self.sock: socket.socket | None = None
        self.fd = -1
        self.by_ufrag: dict[str, Endpoint] = {}
        self.by_addr: dict[tuple[str, int], Endpoint] = {}
        self.by_sockaddr: dict[bytes, Endpoint] = {}
        """``by_addr`` keyed by packed address, for the native read loop."""
        self.checked: dict[tuple[str, int], Endpoint] = {}
        """Addresses a controlling endpoint sends checks to (their answers are its)."""
        self.controlling: dict[Endpoint, None] = {}
        """Endpoints that send ICE checks (relay links to ICE-lite SFUs)."""
        self.counters: dict[str, int] = {
            "datagrams_in": 0,
            "datagrams_out": 0,
            "dropped_unknown": 0,
            "dropped_unbound": 0,
            "dropped_oversize": 0,
            "recv_errors": 0,
            "send_errors": 0,
            "media_errors": 0,
            "dtls_errors": 0,
        }
        self._retired = dict.fromkeys(SEND_COUNTS, 0)
        """What the send targets of closed endpoints counted (counters only go up)."""
        self._reported = {"dropped_oversize": 0, "recv_errors": 0}
        self._last_report: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._departed: dict[tuple[Any, ...], tuple[str, float]] = {}
        """Addresses of endpoints closed lately -> (label, when): a DTLS close_notify or
        retransmission arriving after its endpoint is gone is named, not called a stranger."""

    # -- lifecycle --------------------------------------------------------
    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = None
        if self.bind_ip in ("0.0.0.0", "::", "") and len(self.advertised_ips) == 1:
            # Bound to the wildcard, replies leave from whatever source address the
            # kernel picks, and ICE pairs no check whose answer comes from elsewhere.
            # Bind the one advertised address when it is ours (not a NAT's).
            try:
                sock = self._bind(self.advertised_ips[0])
                self.bind_ip = self.advertised_ips[0]
            except OSError:
                sock = None
        if sock is None:
            sock = self._bind(self.bind_ip)
        self.port = sock.getsockname()[1]
        self.sock = sock
        self.fd = sock.fileno()
        self._loop = loop
        if _read_datagrams is not None and self.clock is time.monotonic:
            # The native read loop is the reader itself: no Python frame per wake-up.
            rx = self.rx
            loop.add_reader(
                self.fd,
                _read_datagrams,
                self.fd,
                rx,
                rx.view,
                self.by_sockaddr,
                self._on_other,
                None,
                self.counters,
            )
        else:
            loop.add_reader(sock.fileno(), self._on_readable)
        log.info(
            "- media UDP on %s:%d, advertised %s", self.bind_ip, self.port, self.advertised_ips
        )

    def _bind(self, ip: str) -> socket.socket:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.setblocking(False)
            sock.bind((ip or "0.0.0.0", self.port))
        except OSError:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        for endpoint in list(self.by_ufrag.values()):
            endpoint.close()
        if self.sock is not None and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
            self.fd = -1

    # -- endpoint registry ------------------------------------------------
    def register(self, endpoint: Endpoint) -> None:
        self.by_ufrag[endpoint.ice.local_ufrag] = endpoint

    def retire(self, endpoint: Endpoint) -> None:
        """A closed endpoint's send counts join the totals (see :meth:`media_sent`);
        before it leaves ``by_ufrag``, where the live ones are counted."""
        if self.by_ufrag.get(endpoint.ice.local_ufrag) is not endpoint:
            return
        target = endpoint.target
        for name in SEND_COUNTS:
            self._retired[name] += getattr(target, name)

    def media_sent(self) -> dict[str, int]:
        """Media the endpoints' send targets sent, refused and dropped, since start."""
        totals = dict(self._retired)
        for endpoint in self.by_ufrag.values():
            target = endpoint.target
            for name in SEND_COUNTS:
                totals[name] += getattr(target, name)
        return totals

    def unregister_ufrag(self, endpoint: Endpoint) -> None:
        if self.by_ufrag.get(endpoint.ice.local_ufrag) is endpoint:
            del self.by_ufrag[endpoint.ice.local_ufrag]

    def unregister(self, endpoint: Endpoint) -> None:
        self.unregister_ufrag(endpoint)
        self.controlling.pop(endpoint, None)
        for addr in endpoint.remote_candidates:
            if self.checked.get(addr) is endpoint:
                del self.checked[addr]
        if endpoint.addr is not None and self.by_addr.get(endpoint.addr) is endpoint:
            if len(self._departed) >= DEPARTED_MAX:
                del self._departed[next(iter(self._departed))]
            self._departed.pop(endpoint.addr, None)
            self._departed[endpoint.addr] = (endpoint.label, self.clock())
        self._unbind(endpoint)
        if self.dedicated and not self.by_ufrag:
            self.close()

    def _unbind(self, endpoint: Endpoint) -> None:
        if endpoint.addr is not None and self.by_addr.get(endpoint.addr) is endpoint:
            del self.by_addr[endpoint.addr]
        if endpoint.sockaddr is not None and self.by_sockaddr.get(endpoint.sockaddr) is endpoint:
            del self.by_sockaddr[endpoint.sockaddr]

    def bind_address(self, endpoint: Endpoint, addr: tuple[str, int]) -> None:
        """``addr`` passed an integrity-checked ICE check of ``endpoint``: media goes
        there, and whatever arrives from there is this endpoint's."""
        previous = self.by_addr.get(addr)
        if previous is not None and previous is not endpoint:
            # The same 5-tuple now belongs to another session (e.g. a rejoin).
            self._unbind(previous)
            previous.addr = None
            previous.sockaddr = None
            previous.target.set_address(None)
        self._unbind(endpoint)
        self._leave_stream(endpoint)
        endpoint.addr = addr
        endpoint.sockaddr = sockaddr = pack_sockaddr(addr)
        endpoint.target.set_address(sockaddr)
        self.by_addr[addr] = endpoint
        self.by_sockaddr[sockaddr] = endpoint

    def bind_stream(self, endpoint: Endpoint, stream: TcpConnection) -> None:
        """A valid ICE check of ``endpoint`` came on ICE-TCP connection ``stream``:
        media goes there, and what arrives on it is this endpoint's."""
        self._unbind(endpoint)
        self._leave_stream(endpoint)
        endpoint.addr = stream.peer
        endpoint.sockaddr = None
        endpoint.stream = stream
        stream.bound(endpoint)
        endpoint.target.set_address(None)
        endpoint.target.set_stream(stream.write)

    def _leave_stream(self, endpoint: Endpoint) -> None:
        if endpoint.stream is not None:
            endpoint.stream = None
            endpoint.target.set_stream(None)

    def stream_lost(self, endpoint: Endpoint, stream: TcpConnection) -> None:
        """The ICE-TCP connection ``endpoint`` used closed: no path until the client's
        next valid check (on a new connection, or UDP); consent freshness decides
        meanwhile whether the endpoint is gone."""
        if endpoint.stream is stream:
            self._leave_stream(endpoint)
            endpoint.addr = None

    # -- I/O ----------------------------------------------------------------
    def send_to(self, datagram: bytes | memoryview, addr: tuple[str, int]) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            sock.sendto(datagram, addr)
            self.counters["datagrams_out"] += 1
        except (BlockingIOError, InterruptedError):
            self.counters["send_errors"] += 1
        except OSError as exc:
            self.counters["send_errors"] += 1
            self.report("send", addr, f"sendto failed: {exc}")

    def report(self, kind: str, addr: tuple[str, int] | None, message: str) -> bool:
        """A rate-limited log line for dropped input: clear, but never a flood.
        False when the line was held back (one of its kind went out lately)."""
        now = self.clock()
        if now - self._last_report.get(kind, -REPORT_INTERVAL_S) >= REPORT_INTERVAL_S:
            self._last_report[kind] = now
            log.info("x dropped %s from %s: %s", kind, addr, message)
            return True
        return False

    def report_error(self, kind: str, message: str, exc: BaseException) -> None:
        """An exception while handling a datagram: counted under ``<kind>_errors``, and
        logged with its traceback unless one of its kind was logged lately."""
        name = f"{kind}_errors"
        self.counters[name] = self.counters.get(name, 0) + 1
        now = self.clock()
        key = f"error {kind}"
        if now - self._last_report.get(key, -REPORT_INTERVAL_S) >= REPORT_INTERVAL_S:
            self._last_report[key] = now
            log.error("x %s", message, exc_info=exc)

    def _on_readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        now = self.clock()
        if _read_datagrams is not None:
            count = _read_datagrams(
                self.fd, self.rx, self.rx.view, self.by_sockaddr, self._on_other, now, None
            )
        else:
            count = self._read_python(sock, now)
        self.counters["datagrams_in"] += count

    def _read_python(self, sock: socket.socket, now: float) -> int:
        """Drain the socket: SRTP/SRTCP straight to its endpoint, the rest to ``_dispatch``.

        The reference for the native read loop (``_transport.read_datagrams``).
        """
        rx = self.rx
        view = rx.view
        by_addr = self.by_addr
        count = 0
        counters = self.counters
        for _ in range(READS_PER_WAKEUP):
            try:
                # One byte more than the largest datagram accepted tells a longer one.
                length, addr = sock.recvfrom_into(view, MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                break
            except (ConnectionRefusedError, OSError) as exc:
                counters["recv_errors"] += 1
                if exc.errno in _ICMP_ERRNOS:
                    continue  # an ICMP error of an earlier send; the next read is fine
                break  # not expected to pass: wait for the next wake-up, do not spin
            count += 1
            if length > MAX_DATAGRAM:
                counters["dropped_oversize"] += 1
                continue
            if length == 0:
                continue
            if 128 <= view[0] <= 191:
                endpoint = by_addr.get(addr)
                if endpoint is not None:
                    endpoint.on_srtp(rx, length, now)
                    continue
            self._dispatch(length, addr, now)
        return count

    def _on_other(self, length: int, sockaddr: bytes, now: float) -> None:
        """The native read loop's datagrams that are not media of a bound endpoint."""
        try:
            addr = unpack_sockaddr(sockaddr)
        except ValueError:
            self.counters["dropped_unknown"] += 1
            return
        self._dispatch(length, addr, now)

    def _dispatch(self, length: int, addr: tuple[Any, ...], now: float) -> None:
        """STUN, DTLS, and whatever is not SRTP of a bound endpoint (RFC 7983)."""
        view = self.rx.view
        first = view[0]
        if 128 <= first <= 191:
            self.counters["dropped_unbound"] += 1
            self.report("rtp", addr, self._stranger("RTP/RTCP", addr, now))
        elif first <= 3:
            self._on_stun(bytes(view[:length]), addr, now)
        elif 20 <= first <= 63:
            endpoint = self.by_addr.get(addr)
            if endpoint is None:
                self.counters["dropped_unbound"] += 1
                self.report("dtls", addr, self._stranger("DTLS", addr, now))
                return
            try:
                endpoint.on_dtls(bytes(view[:length]), now)
            except MemoryError:
                raise
            except Exception as exc:
                self.report_error("dtls", f"{endpoint.label} error handling DTLS", exc)
        else:
            self.counters["dropped_unknown"] += 1
            self.report("unknown", addr, f"datagram with first byte {first} (RFC 7983)")

    def _stranger(self, what: str, addr: tuple[Any, ...], now: float) -> str:
        """Why a datagram from an address no endpoint is bound to is dropped."""
        departed = self._departed.get(addr)
        if departed is not None:
            label, since = departed
            return f"{what} for {label}, whose connection closed {now - since:.1f} s ago"
        return f"{what} from an address that never completed ICE"

    def expect_answers(self, endpoint: Endpoint, addr: tuple[str, int]) -> None:
        """``endpoint`` checks ``addr`` (the controlling side of a relay link): STUN
        answers from there are its to verify."""
        self.checked[addr] = endpoint
        self.controlling[endpoint] = None

    def send_checks(self, now: float) -> None:
        """Every timer tick: the checks of the controlling endpoints that are due."""
        for endpoint in list(self.controlling):
            endpoint.keep_checking(now)

    def _on_stun(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        username = parse_username(data)
        if username is None:
            checker = self.by_addr.get(addr) or self.checked.get(addr)
            if checker is not None and checker.ice.controlling:
                checker.on_stun(data, addr, now)  # the answer to one of its checks
                return
            self.counters["dropped_unknown"] += 1
            self.report("stun", addr, "STUN without USERNAME or malformed")
            return
        endpoint = self.by_ufrag.get(username.split(":", 1)[0])
        if endpoint is None:
            self.counters["dropped_unknown"] += 1
            self.report("stun", addr, f"STUN for unknown ufrag {username.split(':', 1)[0]!r}")
            return
        endpoint.on_stun(data, addr, now)

    def tick(self, now: float, consent_timeout_s: float) -> None:
        """Periodic work across endpoints: consent freshness, DTLS retransmission;
        one line for datagrams dropped for their size or failed reads lately."""
        for name, what in (
            ("dropped_oversize", f"datagrams longer than {MAX_DATAGRAM} bytes"),
            ("recv_errors", "failed reads (ICMP errors of earlier sends, or worse)"),
        ):
            grown = self.counters[name] - self._reported[name]
            if grown and self.report(name, None, f"{grown} {what} since the last report"):
                self._reported[name] = self.counters[name]
        while self._departed:
            addr, (_label, since) = next(iter(self._departed.items()))
            if now - since < DEPARTED_KEEP_S:
                break
            del self._departed[addr]
        for endpoint in list(self.by_ufrag.values()):
            endpoint.check_consent(now, consent_timeout_s)
            dtls = endpoint.dtls
            if dtls is not None and endpoint.srtp is None:
                for datagram in dtls.handle_timeout():
                    endpoint.send_raw(datagram)
