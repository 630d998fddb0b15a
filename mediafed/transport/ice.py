"""ICE-lite responder (RFC 8445 §2.5, §7.3; RFC 7675 consent freshness).

A lite agent gathers only host candidates, never sends checks and is always
controlled: it answers the full agent's binding requests. A request counts
only when its USERNAME is ``<our ufrag>:<their ufrag>`` and its
MESSAGE-INTEGRITY verifies with our password (RFC 8489 §9.2); a USE-CANDIDATE
request (or, before any nomination, the first valid request) selects the
remote address. Sans-I/O: bytes in, bytes out, ``now`` passed in.

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


class IceLiteAgent:
    """The controlled, lite side of one ICE session."""

    __slots__ = (
        "label",
        "last_consent",
        "local_pwd",
        "local_ufrag",
        "nominated",
        "remote_pwd",
        "remote_ufrag",
    )

    def __init__(self, *, label: str = "") -> None:
        self.local_ufrag = random_credential(8)
        self.local_pwd = random_credential(24)
        self.remote_ufrag = ""
        self.remote_pwd = ""
        self.nominated = False
        self.last_consent = 0.0
        self.label = label

    def restart(self) -> None:
        """New local credentials (ICE restart, RFC 8445 §9)."""
        self.local_ufrag = random_credential(8)
        self.local_pwd = random_credential(24)
        self.nominated = False

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
            return StunResult(None, False, False, "unexpected STUN response")
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
