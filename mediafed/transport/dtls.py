"""DTLS 1.2 for DTLS-SRTP (RFC 5764, RFC 8827 §6.5) over pyOpenSSL memory BIOs.

One :class:`DtlsSession` per endpoint, fed datagrams by the UDP demux and
returning datagrams to send; no sockets here. The role comes from SDP
``a=setup`` (RFC 8842): the side that answers ``active`` is the DTLS client.
The peer's certificate must match the ``a=fingerprint`` of its SDP (RFC 8122),
otherwise the handshake is refused. Keys for SRTP are exported with the
"EXTRACTOR-dtls_srtp" label (RFC 5764 §4.2).
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import hashlib
import logging
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

from mediafed.errors import RemoteProtocolError

log = logging.getLogger(__name__)

# RFC 5764 / RFC 7714 profile names as OpenSSL spells them, preferred first.
SRTP_PROFILES = b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80"
# (key length, salt length) per profile name.
SRTP_KEY_SIZES = {b"SRTP_AES128_CM_SHA1_80": (16, 14), b"SRTP_AEAD_AES_128_GCM": (16, 12)}
_HASHES = {"sha-256": hashlib.sha256, "sha-384": hashlib.sha384, "sha-512": hashlib.sha512}


class DtlsError(RemoteProtocolError):
    """The DTLS handshake failed or the peer's certificate is not the one signaled."""


class DtlsState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


def _fingerprint(der: bytes, algorithm: str) -> str:
    digest = _HASHES[algorithm](der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def self_signed(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed ECDSA P-256 certificate and its key, as WebRTC endpoints make them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert, key


class Certificate:
    """A self-signed ECDSA P-256 certificate; one per worker is enough."""

    def __init__(self) -> None:
        cert, key = self_signed("mediafed")
        self._cert = cert
        self._key = key
        self._der = cert.public_bytes(serialization.Encoding.DER)
        self._context: SSL.Context | None = None

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        return _fingerprint(self._der, algorithm)

    def context(self) -> SSL.Context:
        """One OpenSSL context for every association of this certificate (they share it)."""
        if self._context is None:
            self._context = self._new_context()
        return self._context

    def _new_context(self) -> SSL.Context:
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any)
        ctx.use_certificate(self._cert)
        ctx.use_privatekey(self._key)
        ctx.set_cipher_list(
            b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
            b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"
        )
        ctx.set_tlsext_use_srtp(SRTP_PROFILES)
        # After the handshake a connection carries only SCTP now and then: let
        # OpenSSL free its record buffers between uses (tens of KB per subscriber).
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        return ctx


def _accept_any(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
    # Self-signed certificates are the norm; the SDP fingerprint is the check.
    return True


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    profile: bytes
    local_key: bytes
    """Key and salt we protect with."""
    remote_key: bytes
    """Key and salt we unprotect with."""


class DtlsSession:
    """One DTLS association: feed it datagrams, send what it returns."""

    def __init__(
        self,
        certificate: Certificate,
        *,
        is_server: bool,
        remote_fingerprints: list[tuple[str, str]],
        label: str = "",
    ) -> None:
        self.is_server = is_server
        self.state = DtlsState.NEW
        self.keys: SrtpKeys | None = None
        self.error = ""
        self._label = label
        self._remote_fingerprints = [(a.lower(), v.upper()) for a, v in remote_fingerprints]
        self._conn = SSL.Connection(certificate.context(), None)
        if is_server:
            self._conn.set_accept_state()
        else:
            self._conn.set_connect_state()
        self.application_data: list[bytes] = []
        self._handshake_done = False

    def _set_state(self, state: DtlsState) -> None:
        if state is not self.state:
            log.info("- %s dtls %s -> %s", self._label, self.state.value, state.value)
            self.state = state

    def start(self) -> list[bytes]:
        """Begin the handshake; a client returns its ClientHello."""
        if self.state is not DtlsState.NEW:
            return []
        self._set_state(DtlsState.CONNECTING)
        if self.is_server:
            return []
        return self._handshake()

    def receive(self, data: bytes) -> list[bytes]:
        """Feed one datagram; return datagrams to send back. Never raises on bad input:
        a failure is recorded in ``state``/``error``."""
        if self.state in (DtlsState.FAILED, DtlsState.CLOSED):
            return []
        if self.state is DtlsState.NEW:
            self._set_state(DtlsState.CONNECTING)
        self._conn.bio_write(data)
        if self.state is DtlsState.CONNECTING:
            return self._handshake()
        # Connected: application data (SCTP) or alerts.
        try:
            while True:
                chunk = self._conn.recv(65536)
                if not chunk:
                    break
                self.application_data.append(chunk)
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            self._set_state(DtlsState.CLOSED)
        except SSL.Error as exc:
            log.info("x %s dtls error after handshake: %s", self._label, exc)
        return self._pending()

    def send_application_data(self, data: bytes) -> list[bytes]:
        if self.state is not DtlsState.CONNECTED:
            return []
        self._conn.send(data)
        return self._pending()

    def handle_timeout(self) -> list[bytes]:
        """Retransmit a lost flight (call when the handshake stalls)."""
        if self.state is not DtlsState.CONNECTING:
            return []
        try:
            self._conn.DTLSv1_handle_timeout()
        except (AttributeError, SSL.Error):
            return []
        return self._pending()

    def close(self) -> list[bytes]:
        if self.state is DtlsState.CONNECTED:
            with contextlib.suppress(SSL.Error):
                self._conn.shutdown()
        self._set_state(DtlsState.CLOSED)
        return self._pending()

    def _pending(self) -> list[bytes]:
        # DTLS allows several records per datagram; a flight is sent as one.
        out: list[bytes] = []
        while True:
            try:
                data = self._conn.bio_read(65536)
            except SSL.WantReadError:
                return out
            if not data:
                return out
            out.append(data)

    def _handshake(self) -> list[bytes]:
        if not self._handshake_done:
            try:
                self._conn.do_handshake()
            except SSL.WantReadError:
                return self._pending()
            except SSL.Error as exc:
                self.error = f"DTLS handshake failed: {exc}"
                log.info("x %s %s", self._label, self.error)
                self._set_state(DtlsState.FAILED)
                return self._pending()
            self._handshake_done = True
        out = self._pending()
        self._finish()
        return out

    def set_remote_fingerprints(self, fingerprints: list[tuple[str, str]]) -> None:
        """The remote SDP arrived: check a handshake that finished before it did."""
        self._remote_fingerprints = [(a.lower(), v.upper()) for a, v in fingerprints]
        if self._handshake_done and self.state is DtlsState.CONNECTING:
            self._finish()

    def _finish(self) -> None:
        # A client may complete the handshake before its answer reaches us (it
        # starts ICE and DTLS as soon as it has answered): wait for the SDP.
        if not self._remote_fingerprints:
            return
        try:
            self._verify_peer()
            self.keys = self._export_keys()
        except DtlsError as exc:
            self.error = str(exc)
            log.info("x %s %s", self._label, self.error)
            self._set_state(DtlsState.FAILED)
            return
        self._set_state(DtlsState.CONNECTED)

    def _verify_peer(self) -> None:
        cert = self._conn.get_peer_certificate()
        if cert is None:
            raise DtlsError("peer sent no DTLS certificate")
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
        for algorithm, value in self._remote_fingerprints:
            if algorithm in _HASHES and _fingerprint(der, algorithm) == value:
                return
        raise DtlsError(
            "peer DTLS certificate does not match the a=fingerprint of its SDP; "
            "the media path may be tampered with"
        )

    def _export_keys(self) -> SrtpKeys:
        profile = self._conn.get_selected_srtp_profile()
        if profile not in SRTP_KEY_SIZES:
            raise DtlsError(f"peer negotiated no supported SRTP profile ({profile!r})")
        key_len, salt_len = SRTP_KEY_SIZES[profile]
        material = self._conn.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len)
        )
        client_key = material[:key_len]
        server_key = material[key_len : 2 * key_len]
        client_salt = material[2 * key_len : 2 * key_len + salt_len]
        server_salt = material[2 * key_len + salt_len :]
        client = client_key + client_salt
        server = server_key + server_salt
        if self.is_server:
            return SrtpKeys(profile, local_key=server, remote_key=client)
        return SrtpKeys(profile, local_key=client, remote_key=server)
