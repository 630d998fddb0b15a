"""DTLS-SRTP between two sans-I/O sessions, then SRTP both ways (RFC 5764)."""

from __future__ import annotations

import struct

import pytest

from mediafed.transport.dtls import Certificate, DtlsSession, DtlsState
from mediafed.transport.srtp import PacketBuffer, SrtpContext, copy_into


def _pair(
    server_expects: str | None = None,
) -> tuple[DtlsSession, DtlsSession]:
    client_cert, server_cert = Certificate(), Certificate()
    server = DtlsSession(
        server_cert,
        is_server=True,
        remote_fingerprints=[("sha-256", server_expects or client_cert.fingerprint())],
    )
    client = DtlsSession(
        client_cert, is_server=False, remote_fingerprints=[("sha-256", server_cert.fingerprint())]
    )
    return client, server


def _run(client: DtlsSession, server: DtlsSession) -> None:
    to_server = client.start()
    for _ in range(10):
        to_client = [out for datagram in to_server for out in server.receive(datagram)]
        to_server = [out for datagram in to_client for out in client.receive(datagram)]
        if not to_server and not to_client:
            break


def test_handshake_exports_matching_keys_and_srtp_works() -> None:
    client, server = _pair()
    _run(client, server)
    assert client.state is DtlsState.CONNECTED and server.state is DtlsState.CONNECTED
    assert client.keys is not None and server.keys is not None
    assert client.keys.local_key == server.keys.remote_key
    assert client.keys.remote_key == server.keys.local_key
    assert client.keys.profile == server.keys.profile

    sender, receiver = SrtpContext(client.keys), SrtpContext(server.keys)
    packet = struct.pack("!BBHII", 0x80, 96, 1000, 12345, 0xDEADBEEF) + bytes(range(200))
    buf = PacketBuffer()
    size = sender.protect_rtp(buf, copy_into(buf, packet))
    assert size > len(packet)
    protected = bytes(buf.view[:size])
    assert protected[12:] != packet[12:]
    rx = PacketBuffer()
    plain = receiver.unprotect_rtp(rx, copy_into(rx, protected))
    assert bytes(rx.view[:plain]) == packet
    # Tampered: authentication fails, the result says so.
    tampered = bytearray(protected)
    tampered[40] ^= 0xFF
    assert receiver.unprotect_rtp(rx, copy_into(rx, bytes(tampered))) == -1


def test_fingerprint_mismatch_fails_the_handshake() -> None:
    client, server = _pair(server_expects=":".join(["00"] * 32))
    _run(client, server)
    assert server.state is DtlsState.FAILED
    assert "does not match the a=fingerprint" in server.error


@pytest.mark.parametrize("junk", [b"\x16\xfe\xfd" + b"\x00" * 10, b"\x17" * 40])
def test_garbage_records_do_not_raise(junk: bytes) -> None:
    _client, server = _pair()
    server.receive(junk)
    assert server.state in (DtlsState.CONNECTING, DtlsState.FAILED)


def test_handshake_before_the_answer_waits_for_the_fingerprint() -> None:
    # A client starts DTLS as soon as it has answered; its answer may arrive later.
    for correct in (True, False):
        client_cert, server_cert = Certificate(), Certificate()
        server = DtlsSession(server_cert, is_server=True, remote_fingerprints=[])
        client = DtlsSession(
            client_cert,
            is_server=False,
            remote_fingerprints=[("sha-256", server_cert.fingerprint())],
        )
        _run(client, server)
        assert client.state is DtlsState.CONNECTED
        assert server.state is DtlsState.CONNECTING and server.keys is None
        fingerprint = client_cert.fingerprint() if correct else ":".join(["00"] * 32)
        server.set_remote_fingerprints([("sha-256", fingerprint)])
        if correct:
            assert server.state is DtlsState.CONNECTED
            assert server.keys is not None and client.keys is not None
            assert server.keys.remote_key == client.keys.local_key
        else:
            assert server.state is DtlsState.FAILED
