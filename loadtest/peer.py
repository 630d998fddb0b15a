"""A light WebRTC peer for load clients: ICE (aioice), DTLS 1.2 (pyOpenSSL), SRTP (pylibsrtp).

It does just enough of the WebRTC transport stack to exchange media with an
SFU: full ICE with host candidates only (RFC 8445), DTLS-SRTP key agreement
(RFC 5764, keys from the ``EXTRACTOR-dtls_srtp`` exporter of RFC 5705) with a
self-signed ECDSA certificate whose fingerprint goes in the SDP (RFC 8122),
one BUNDLE transport with RTCP multiplexed (RFC 8843, RFC 5761). SDP is built
and read with plain strings (RFC 8866); nothing here decodes media.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aioice
import pylibsrtp
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL, crypto

from mediafed.transport.dtls import self_signed

log = logging.getLogger(__name__)

SO_TIMESTAMPNS: int = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux
_TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux
_TIMESTAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)

# What Chrome offers in use_srtp, in its order; the DTLS server picks by its own
# preference (OpenSSL), so each SFU gets the profile it would get from a browser.
SRTP_PROFILES = b"SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_256_GCM:SRTP_AEAD_AES_128_GCM"
# profile -> (pylibsrtp profile, key length, salt length)
_SRTP = {
    b"SRTP_AES128_CM_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
    b"SRTP_AEAD_AES_256_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12),
    b"SRTP_AEAD_AES_128_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
}


class PeerError(Exception):
    """A load client could not set up its transport; the message says what to check."""


# --------------------------------------------------------------------------- certificate


@dataclass(frozen=True, slots=True)
class Certificate:
    cert: crypto.X509
    key: crypto.PKey
    fingerprint: str  # "sha-256 AB:CD:..."


def generate_certificate() -> Certificate:
    """A self-signed ECDSA P-256 certificate, as browsers make for WebRTC."""
    cert, key = self_signed("mediafed-loadtest")
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    fingerprint = "sha-256 " + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    return Certificate(
        crypto.X509.from_cryptography(cert), crypto.PKey.from_cryptography_key(key), fingerprint
    )


# --------------------------------------------------------------------------- SDP reading


@dataclass(slots=True)
class MediaSection:
    """One m= section of a remote SDP, reduced to what a load client needs."""

    kind: str
    port: int
    protocol: str
    formats: list[str]
    mid: str = ""
    direction: str = "sendrecv"
    rtpmap: dict[int, str] = field(default_factory=dict)  # pt -> "VP8/90000"
    fmtp: dict[int, str] = field(default_factory=dict)
    ssrcs: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def payload_type_for(self, codec: str) -> int | None:
        for pt, name in self.rtpmap.items():
            if name.split("/")[0].lower() == codec.lower():
                return pt
        return None


@dataclass(slots=True)
class RemoteDescription:
    ice_ufrag: str = ""
    ice_pwd: str = ""
    ice_lite: bool = False
    fingerprint: str = ""
    setup: str = "actpass"
    candidates: list[str] = field(default_factory=list)
    media: list[MediaSection] = field(default_factory=list)


def parse_sdp(sdp: str) -> RemoteDescription:
    """Read ICE credentials, fingerprint, setup role, candidates and m= sections."""
    desc = RemoteDescription()
    section: MediaSection | None = None
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 4:
                raise PeerError(f"malformed m= line in the SFU's SDP: {line!r}")
            section = MediaSection(parts[0], int(parts[1]), parts[2], parts[3:])
            desc.media.append(section)
            continue
        if not line.startswith("a="):
            continue
        attr, _, value = line[2:].partition(":")
        if attr == "ice-ufrag" and not desc.ice_ufrag:
            desc.ice_ufrag = value
        elif attr == "ice-pwd" and not desc.ice_pwd:
            desc.ice_pwd = value
        elif attr == "ice-lite":
            desc.ice_lite = True
        elif attr == "fingerprint" and not desc.fingerprint:
            desc.fingerprint = value
        elif attr == "setup":
            desc.setup = value
        elif attr == "candidate":
            if value not in desc.candidates:
                desc.candidates.append(value)
        elif section is not None:
            section.lines.append(line)
            if attr == "mid":
                section.mid = value
            elif attr in ("sendrecv", "sendonly", "recvonly", "inactive"):
                section.direction = attr
            elif attr == "rtpmap":
                pt, _, name = value.partition(" ")
                section.rtpmap[int(pt)] = name
            elif attr == "fmtp":
                pt, _, params = value.partition(" ")
                if pt.isdigit():
                    section.fmtp[int(pt)] = params
            elif attr == "ssrc":
                ssrc = int(value.split()[0])
                if ssrc not in section.ssrcs:
                    section.ssrcs.append(ssrc)
    if not desc.ice_ufrag or not desc.ice_pwd or not desc.fingerprint:
        raise PeerError("the SFU's SDP lacks ice-ufrag, ice-pwd or fingerprint; is it WebRTC?")
    return desc


_FINGERPRINT_RE = re.compile(r"^(\S+)\s+([0-9A-Fa-f:]+)$")


# --------------------------------------------------------------------------- the peer


class LightPeer:
    """One ICE/DTLS/SRTP transport. Call ``gather()``, exchange SDP, then ``connect()``."""

    def __init__(self, name: str, certificate: Certificate) -> None:
        self.name = name
        self.certificate = certificate
        self.ice: aioice.Connection | None = None
        self._ice_controlling = True
        self._ssl: SSL.Connection | None = None
        self._tx: pylibsrtp.Session | None = None
        self._rx: pylibsrtp.Session | None = None
        self._remote_fingerprint = ""
        self.srtp_profile = ""
        self._dtls_client = True
        self._reader: asyncio.Task[None] | None = None
        self._own_socket: socket.socket | None = None
        self._closed = False
        self.on_rtp: Callable[[bytes, int], None] | None = None
        """Called with each decrypted RTP packet and its arrival time (``time.time_ns()``
        clock): the kernel's receive timestamp when the socket gives one."""
        self.on_rtcp: Callable[[bytes], None] | None = None
        self.connected = asyncio.Event()

    # -- ICE ----------------------------------------------------------------

    async def gather(self, ice_controlling: bool) -> None:
        """Gather host candidates (IPv4 only; aioice leaves out 127.0.0.1)."""
        self._ice_controlling = ice_controlling
        self.ice = aioice.Connection(ice_controlling=ice_controlling, components=1, use_ipv6=False)
        await self.ice.gather_candidates()
        if not self.ice.local_candidates:
            raise PeerError(
                "no ICE host candidate: run inside scripts/in-netns, which adds 127.0.0.2 to lo"
            )

    def transport_sdp_lines(self, setup: str) -> list[str]:
        """ICE, DTLS and candidate attributes for every m= section we send."""
        assert self.ice is not None
        lines = [
            f"a=ice-ufrag:{self.ice.local_username}",
            f"a=ice-pwd:{self.ice.local_password}",
            f"a=fingerprint:{self.certificate.fingerprint}",
            f"a=setup:{setup}",
        ]
        lines += [f"a=candidate:{c.to_sdp()}" for c in self.ice.local_candidates]
        lines.append("a=end-of-candidates")
        return lines

    def default_address(self) -> tuple[str, int]:
        assert self.ice is not None
        candidate = self.ice.local_candidates[0]
        return candidate.host, candidate.port

    async def set_remote(self, desc: RemoteDescription, we_offered: bool) -> None:
        """Take the remote ICE credentials, candidates, fingerprint and DTLS role."""
        assert self.ice is not None
        if desc.ice_lite and not self._ice_controlling:
            raise PeerError("the SFU is ICE-lite, so this client must be the controlling agent")
        self.ice.remote_username = desc.ice_ufrag
        self.ice.remote_password = desc.ice_pwd
        for line in desc.candidates:
            await self.add_remote_candidate(line)
        self._remote_fingerprint = desc.fingerprint
        if we_offered:
            # We said actpass; the answer's role decides (RFC 5763 section 5).
            self._dtls_client = desc.setup != "active"
        else:
            self._dtls_client = True  # we answer a=setup:active

    async def add_remote_candidate(self, line: str | None) -> None:
        """Add one trickled candidate (``None`` means end of candidates)."""
        assert self.ice is not None
        if line is None:
            await self.ice.add_remote_candidate(None)
            return
        line = line.removeprefix("a=").removeprefix("candidate:")
        candidate = aioice.Candidate.from_sdp(line)
        if candidate.transport.lower() != "udp" or ":" in candidate.host:
            return
        await self.ice.add_remote_candidate(candidate)

    # -- DTLS / SRTP --------------------------------------------------------

    async def connect(self, timeout_s: float = 20.0) -> None:
        """ICE connectivity checks, then the DTLS handshake, then SRTP sessions."""
        assert self.ice is not None
        try:
            await asyncio.wait_for(self.ice.connect(), timeout_s)
        except (TimeoutError, ConnectionError) as exc:
            raise PeerError(
                f"{self.name}: ICE did not connect within {timeout_s:.0f} s; check that the "
                "SFU offers a candidate on 127.0.0.x and that both run in the same namespace"
            ) from exc
        try:
            await asyncio.wait_for(self._handshake(), timeout_s)
        except TimeoutError as exc:
            raise PeerError(
                f"{self.name}: DTLS handshake did not finish within {timeout_s:.0f} s"
            ) from exc
        self._install_fast_path()
        self._reader = asyncio.create_task(self._read_loop(), name=f"{self.name}-reader")
        self.connected.set()

    def _make_ssl(self) -> SSL.Connection:
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.use_certificate(self.certificate.cert)
        ctx.use_privatekey(self.certificate.key)
        ctx.set_tlsext_use_srtp(SRTP_PROFILES)
        # Self-signed on both sides: trust comes from the SDP fingerprint, checked below.
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
        conn = SSL.Connection(ctx, None)
        if self._dtls_client:
            conn.set_connect_state()
        else:
            conn.set_accept_state()
        return conn

    async def _flush(self, ssl: SSL.Connection) -> None:
        assert self.ice is not None
        while True:
            try:
                data = ssl.bio_read(8192)
            except SSL.WantReadError:
                return
            if not data:
                return
            await self.ice.send(data)

    def _step(self, ssl: SSL.Connection) -> bool:
        try:
            ssl.do_handshake()
        except SSL.WantReadError:
            return False
        return True

    async def _handshake(self) -> None:
        assert self.ice is not None
        ssl = self._ssl = self._make_ssl()
        done = self._step(ssl) if self._dtls_client else False
        await self._flush(ssl)
        while not done:
            wait = ssl.DTLSv1_get_timeout()
            try:
                data = await asyncio.wait_for(self.ice.recv(), wait if wait else 1.0)
            except TimeoutError:
                ssl.DTLSv1_handle_timeout()
                await self._flush(ssl)
                continue
            if not data or not 20 <= data[0] <= 63:
                continue  # early SRTP or stray packet before keys exist
            ssl.bio_write(data)
            try:
                done = self._step(ssl)
            except SSL.Error as exc:
                raise PeerError(f"{self.name}: DTLS handshake failed: {exc}") from exc
            await self._flush(ssl)
        self._check_fingerprint(ssl)
        self._setup_srtp(ssl)

    def _check_fingerprint(self, ssl: SSL.Connection) -> None:
        peer = ssl.get_peer_certificate()
        match = _FINGERPRINT_RE.match(self._remote_fingerprint)
        if peer is None or match is None:
            raise PeerError(f"{self.name}: the SFU sent no certificate or no SDP fingerprint")
        algorithm, expected = match.groups()
        actual = peer.digest(algorithm.replace("-", "").lower()).decode()
        if actual.upper() != expected.upper():
            raise PeerError(f"{self.name}: the SFU's DTLS certificate does not match its SDP")

    def _setup_srtp(self, ssl: SSL.Connection) -> None:
        selected = ssl.get_selected_srtp_profile()
        if selected not in _SRTP:
            raise PeerError(f"{self.name}: the SFU chose no SRTP profile we offered ({selected!r})")
        profile, k, s = _SRTP[selected]
        self.srtp_profile = selected.decode()
        material = ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (k + s))
        client_key = material[:k] + material[2 * k : 2 * k + s]
        server_key = material[k : 2 * k] + material[2 * k + s :]
        tx_key, rx_key = (client_key, server_key) if self._dtls_client else (server_key, client_key)
        self._tx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=tx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
            )
        )
        self._rx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=rx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
            )
        )

    # -- media --------------------------------------------------------------

    def send_rtp(self, packet: bytes) -> None:
        """Protect and send one RTP packet (no await: the socket write does not block)."""
        assert self._tx is not None and self.ice is not None
        self._send_raw(self._tx.protect(packet))

    def send_rtcp(self, packet: bytes) -> None:
        assert self._tx is not None
        self._send_raw(self._tx.protect_rtcp(packet))

    def _send_raw(self, data: bytes) -> None:
        assert self.ice is not None
        pair = self.ice._nominated.get(1)
        if pair is None:
            raise PeerError(f"{self.name}: no nominated ICE pair; the connection was lost")
        # aioice's send path is a coroutine that only calls sendto(); skip the await.
        pair.protocol.transport.sendto(data, pair.remote_addr)

    def _on_srtp(self, data: bytes, arrival_ns: int = 0) -> None:
        assert self._rx is not None
        try:
            if 192 <= data[1] <= 223:
                if self.on_rtcp is not None:
                    self.on_rtcp(self._rx.unprotect_rtcp(data))
            elif self.on_rtp is not None:
                self.on_rtp(self._rx.unprotect(data), arrival_ns or time.time_ns())
        except pylibsrtp.Error:
            return

    def _install_fast_path(self) -> None:
        """Read the socket ourselves once ICE is up, with kernel receive timestamps.

        aioice first tries to parse every datagram as STUN, then queues it for
        ``recv()``; at thousands of packets per second that costs the client
        core more than decryption. So the transport stops reading and this
        peer reads the same socket (a duplicated descriptor) with ``recvmsg``
        and SO_TIMESTAMPNS: the arrival time of each packet is when the kernel
        queued it, so a busy client core does not add its own backlog to the
        SFU's measured latency. STUN and DTLS still go to aioice.
        """
        assert self.ice is not None
        pair = self.ice._nominated.get(1)
        if pair is None:
            return
        protocol = pair.protocol
        slow_path = protocol.datagram_received
        transport = protocol.transport
        if not hasattr(transport, "pause_reading"):
            return  # not a selector transport: aioice keeps reading
        loop = asyncio.get_running_loop()
        sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        transport.pause_reading()
        on_srtp = self._on_srtp

        def read() -> None:
            for _ in range(64):
                try:
                    data, ancillary, _flags, addr = sock.recvmsg(2048, _TIMESTAMP_SPACE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    continue  # ICMP errors surface here
                if data and 128 <= data[0] <= 191:
                    arrival_ns = 0
                    for level, kind, value in ancillary:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                            sec, nsec = _TIMESPEC.unpack_from(value)
                            arrival_ns = sec * 1_000_000_000 + nsec
                    on_srtp(data, arrival_ns)
                else:
                    slow_path(data, addr)

        loop.add_reader(sock.fileno(), read)
        self._own_socket = sock

    async def _read_loop(self) -> None:
        assert self.ice is not None and self._rx is not None
        ice, ssl = self.ice, self._ssl
        while not self._closed:
            try:
                data = await ice.recv()
            except ConnectionError:
                return
            first = data[0]
            if 128 <= first <= 191:
                self._on_srtp(data)
            elif 20 <= first <= 63 and ssl is not None:
                # Retransmitted final flight: let OpenSSL answer it.
                ssl.bio_write(data)
                with contextlib.suppress(SSL.Error):
                    ssl.recv(4096)
                await self._flush(ssl)

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
        if self._own_socket is not None:
            asyncio.get_running_loop().remove_reader(self._own_socket.fileno())
            self._own_socket.close()
            self._own_socket = None
        if self.ice is not None:
            await self.ice.close()
