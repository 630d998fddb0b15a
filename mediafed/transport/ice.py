"""ICE-lite responder (RFC 8445 §2.5, §7.3; RFC 7675 consent freshness).

A lite agent gathers only host candidates, never sends checks and is always
controlled: it answers the full agent's binding requests. A request counts
only when its USERNAME is ``<our ufrag>:<their ufrag>`` and its
MESSAGE-INTEGRITY verifies with our password (RFC 8489 §9.2); a USE-CANDIDATE
request (or, before any nomination, the first valid request) selects the
remote address. Sans-I/O: bytes in, bytes out, ``now`` passed in.

One case needs more: a relay link (mediafed as a client of another SFU) whose
remote is itself lite, as mediafed is. Two lite agents never connect, so the
link's agent turns controlling (RFC 8445 §6.1.1: facing a lite peer, the full
agent controls): it sends nominating checks to the remote's host candidates
(:meth:`IceLiteAgent.check`), and a success response that verifies with the
remote's password selects that address, and keeps consent, as a valid request
does for the lite side.

STUN messages are parsed and built with ``aioice.stun``.
"""

from __future__ import annotations

import logging
import secrets
import string
import struct
from dataclasses import dataclass

from aioice import stun

# What aioice.stun.parse_message raises on bad bytes: ValueError (UnicodeDecodeError
# included) for bad values, struct.error for an attribute shorter than its type.
_MALFORMED = (ValueError, KeyError, IndexError, struct.error)

log = logging.getLogger(__name__)

_UFRAG_ALPHABET = string.ascii_letters + string.digits


def random_credential(length: int) -> str:
    """ICE ufrag (>= 4 chars) or password (>= 22 chars) from the ice-char set."""
    return "".join(secrets.choice(_UFRAG_ALPHABET) for _ in range(length))


@dataclass(slots=True)
class StunResult:
    """What a STUN datagram did: a response to send and whether it bound ``addr``."""

    response: bytes | None
    valid: bool
    nominated: bool
    error: str = ""


def binding_request(
    username: str, password: str, *, tie_breaker: int = 1, nominate: bool = True
) -> bytes:
    """A full agent's check as a controlling peer sends it (RFC 8445 §7.1.1).

    mediafed never sends checks itself; benchmarks and tests play the client with it.
    """
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = username
    request.attributes["PRIORITY"] = 1
    request.attributes["ICE-CONTROLLING"] = tie_breaker
    if nominate:
        request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(password.encode())
    return bytes(request)


def parse_username(data: bytes) -> str | None:
    """The USERNAME of a STUN request, without checking anything else; None if absent."""
    try:
        message = stun.parse_message(data)
    except _MALFORMED:
        return None
    username = message.attributes.get("USERNAME")
    return username if isinstance(username, str) else None


MAX_PENDING_CHECKS = 32
"""Transactions of our own checks still awaiting their answer (oldest forgotten)."""


HOST_PRIORITY = (126 << 24) | (65535 << 8) | 255
"""RFC 8445 §5.1.2.1: a host candidate's priority, as a check carries it."""


class IceLiteAgent:
    """The controlled, lite side of one ICE session (or, on a relay link to a lite
    SFU, the controlling side: :attr:`controlling`)."""

    __slots__ = (
        "controlling",
        "label",
        "last_consent",
        "local_pwd",
        "local_ufrag",
        "nominated",
        "pending_checks",
        "remote_pwd",
        "remote_ufrag",
        "tie_breaker",
    )

    def __init__(self, *, label: str = "") -> None:
        self.local_ufrag = random_credential(8)
        self.local_pwd = random_credential(24)
        self.remote_ufrag = ""
        self.remote_pwd = ""
        self.nominated = False
        self.last_consent = 0.0
        self.label = label
        self.controlling = False
        self.tie_breaker = secrets.randbits(63)
        self.pending_checks: dict[bytes, float] = {}

    def restart(self) -> None:
        """New local credentials (ICE restart, RFC 8445 §9)."""
        self.local_ufrag = random_credential(8)
        self.local_pwd = random_credential(24)
        self.nominated = False
        self.pending_checks.clear()

    def set_remote(self, ufrag: str, pwd: str) -> None:
        self.remote_ufrag = ufrag
        self.remote_pwd = pwd

    def handle(self, data: bytes, addr: tuple[str, int], now: float) -> StunResult:
        try:
            message = stun.parse_message(data)
        except _MALFORMED as exc:
            return StunResult(None, False, False, f"malformed STUN: {exc}")
        if message.message_method != stun.Method.BINDING:
            return StunResult(None, False, False, "not a binding message")
        if message.message_class == stun.Class.INDICATION:
            return StunResult(None, False, False)  # keepalive, nothing to answer
        if message.message_class != stun.Class.REQUEST:
            return self._answer_to_check(message, now)
        key = self.local_pwd.encode()
        username = message.attributes.get("USERNAME")
        if not isinstance(username, str) or username.split(":", 1)[0] != self.local_ufrag:
            return StunResult(
                self._error(message, 401, "Unauthorized", None), False, False, "wrong USERNAME"
            )
        if "MESSAGE-INTEGRITY" not in message.attributes or not message.check_message_integrity(
            key
        ):
            # RFC 8489 §9.2.4: answer 401 without integrity when the check fails.
            return StunResult(
                self._error(message, 401, "Unauthorized", None),
                False,
                False,
                "MESSAGE-INTEGRITY does not verify",
            )
        if "ICE-CONTROLLED" in message.attributes:
            # RFC 8445 §6.1.1: with a lite peer, the full agent must be controlling.
            return StunResult(
                self._error(message, 487, "Role Conflict", key), False, False, "role conflict"
            )
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=message.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(key)
        nominated = "USE-CANDIDATE" in message.attributes
        self.last_consent = now
        return StunResult(bytes(response), True, nominated)

    def check(self, now: float) -> bytes:
        """A nominating check of the controlling side (RFC 8445 §7.2.2, §8.1.1),
        for the remote's candidates; its answer is read by :meth:`handle`."""
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{self.remote_ufrag}:{self.local_ufrag}"
        request.attributes["PRIORITY"] = HOST_PRIORITY
        request.attributes["ICE-CONTROLLING"] = self.tie_breaker
        request.attributes["USE-CANDIDATE"] = None
        request.add_message_integrity(self.remote_pwd.encode())
        request.add_fingerprint()
        pending = self.pending_checks
        pending[request.transaction_id] = now
        while len(pending) > MAX_PENDING_CHECKS:
            del pending[next(iter(pending))]
        return bytes(request)

    def _answer_to_check(self, message: stun.Message, now: float) -> StunResult:
        """A response: valid only as the verified answer to one of our own checks."""
        if self.pending_checks.pop(message.transaction_id, None) is None:
            return StunResult(None, False, False, "STUN response to no check of ours")
        if message.message_class == stun.Class.ERROR:
            code = message.attributes.get("ERROR-CODE")
            return StunResult(None, False, False, f"our check was refused: {code}")
        if "MESSAGE-INTEGRITY" not in message.attributes or not message.check_message_integrity(
            self.remote_pwd.encode()
        ):
            return StunResult(None, False, False, "check answered without valid integrity")
        self.last_consent = now
        self.nominated = True
        return StunResult(None, True, True)

    @staticmethod
    def _error(request: stun.Message, code: int, reason: str, key: bytes | None) -> bytes:
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.ERROR,
            transaction_id=request.transaction_id,
        )
        response.attributes["ERROR-CODE"] = (code, reason)
        if key is not None:
            response.add_message_integrity(key)
        else:
            response.add_fingerprint()
        return bytes(response)
