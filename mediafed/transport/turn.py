"""TURN servers handed to clients, with short-lived credentials.

mediafed is ICE-lite with host candidates only: a client that can reach
neither its UDP port nor its ICE-TCP port (a proxy-only network) goes through
a TURN relay (RFC 8656) the operator runs, such as coturn. The signaling
front-ends hand each client the configured servers; for a server with a
shared ``secret`` every client gets its own time-limited credentials, the
TURN REST convention coturn implements with ``use-auth-secret``
(draft-uberti-behave-turn-rest-00): the username is
``<expiry unix time>:<identity>`` and the password
``base64(HMAC-SHA1(secret, username))``, so the TURN server checks them
without asking anyone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

SCHEMES = ("stun:", "turn:", "turns:")


@dataclass(frozen=True, slots=True)
class IceServer:
    """One entry of a client's ``iceServers`` (W3C RTCIceServer)."""

    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""


@dataclass(frozen=True, slots=True)
class TurnServer:
    """A configured TURN (or STUN) server: static credentials or a REST secret."""

    urls: tuple[str, ...]
    secret: str = ""
    username: str = ""
    credential: str = ""
    ttl_s: int = 86_400

    def for_client(self, identity: str, now: float) -> IceServer:
        if not self.secret:
            return IceServer(self.urls, self.username, self.credential)
        username = f"{int(now) + self.ttl_s}:{identity}"
        digest = hmac.new(self.secret.encode(), username.encode(), hashlib.sha1).digest()
        return IceServer(self.urls, username, base64.b64encode(digest).decode("ascii"))


def ice_servers_for(
    servers: Sequence[TurnServer], identity: str, now: float
) -> tuple[IceServer, ...]:
    """The ``iceServers`` one client gets when it joins (or resumes) at ``now``."""
    return tuple(server.for_client(identity, now) for server in servers)
