"""Verify Matrix OpenID tokens by asking the user's homeserver who they belong to.

Matrix spec, server-server API, "OpenID": ``GET
/_matrix/federation/v1/openid/userinfo?access_token=…`` answers ``{"sub":
"@user:server"}`` for a valid token. The homeserver is found as the spec's
"Resolving server names" says (IP literal or explicit port: used as is;
otherwise ``https://<hostname>/.well-known/matrix/server`` delegation; otherwise
port 8448). DNS SRV records (steps 3-5 of that section) are not looked up:
a homeserver that relies on SRV alone must be listed in
``[matrix] federation_url_overrides``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from mediafed.errors import AuthError, RemoteProtocolError

log = logging.getLogger(__name__)

DEFAULT_FEDERATION_PORT = 8448
WELL_KNOWN_PATH = "/.well-known/matrix/server"
USERINFO_PATH = "/_matrix/federation/v1/openid/userinfo"
MAX_BODY_BYTES = 64 * 1024
WELL_KNOWN_TTL_S = 3600.0
WELL_KNOWN_FAILURE_TTL_S = 300.0


class OpenIDError(AuthError):
    """The OpenID token was not accepted (unknown, expired, wrong server or user)."""

    status = 401
    errcode = "M_UNAUTHORIZED"


class HomeserverNotAllowedError(AuthError):
    """The token's homeserver is not on this relay's allow-list."""

    status = 403
    errcode = "M_FORBIDDEN"


class ServerNameError(RemoteProtocolError):
    """A Matrix server name that does not follow the grammar of the spec."""

    status = 400
    errcode = "M_BAD_JSON"


@dataclass(frozen=True, slots=True)
class ServerName:
    """A parsed Matrix server name: ``host[:port]``, host a DNS name or IP literal."""

    host: str
    port: int | None
    is_ip: bool

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


def parse_server_name(name: str) -> ServerName:
    """Split and check ``name`` per the spec's server-name grammar (appendix "Server Name")."""
    if not name or len(name) > 255 or name != name.strip():
        raise ServerNameError(f"{name!r} is not a Matrix server name")
    port: int | None = None
    if name.startswith("["):
        host, sep, rest = name[1:].partition("]")
        if not sep:
            raise ServerNameError(f"server name {name!r} has an unclosed IPv6 literal")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ServerNameError(f"server name {name!r} holds no valid IPv6 address") from None
        if rest:
            if not rest.startswith(":"):
                raise ServerNameError(f"server name {name!r}: only ':port' may follow ']'")
            port = _port(rest[1:], name)
        return ServerName(host, port, True)
    host, sep, port_text = name.partition(":")
    if sep:
        port = _port(port_text, name)
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
    if not host or not set(host) <= allowed:
        raise ServerNameError(f"server name {name!r} has characters a host name cannot have")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return ServerName(host.lower(), port, False)
    return ServerName(host, port, True)


def _port(text: str, name: str) -> int:
    # ASCII digits only: str.isdigit() takes '²', which int() refuses
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 0 < int(text) < 65536:
        raise ServerNameError(f"server name {name!r} has an invalid port {text!r}")
    return int(text)


def delegated_server(body: object) -> ServerName | None:
    """The ``m.server`` of a ``.well-known/matrix/server`` answer, if it names one."""
    if not isinstance(body, dict):
        return None
    target = body.get("m.server")
    if not isinstance(target, str):
        return None
    try:
        return parse_server_name(target)
    except ServerNameError:
        return None


def federation_base_url(server: ServerName) -> str:
    """Where the federation API of an already-resolved target lives (no SRV)."""
    return f"https://{server.url_host}:{server.port or DEFAULT_FEDERATION_PORT}"


def server_part(user_id: str) -> str:
    """``@alice:example.org:8448`` -> ``example.org:8448`` (a localpart has no ':')."""
    if not user_id.startswith("@") or ":" not in user_id:
        return ""
    return user_id.partition(":")[2]


class OpenIDVerifier:
    """Asks homeservers who an OpenID token belongs to; caches server delegation.

    ``overrides`` maps a server name to the base URL of its federation API and
    skips discovery (homeservers on private networks; tests on plain HTTP).
    """

    def __init__(
        self,
        *,
        verify_tls: bool = True,
        overrides: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._verify_tls = verify_tls
        self._overrides = {name.lower(): url.rstrip("/") for name, url in (overrides or {}).items()}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._delegation: dict[str, tuple[float, str]] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._verify_tls),
            )
        return self._session

    async def resolve(self, server_name: str) -> str:
        """Base URL of ``server_name``'s federation API."""
        override = self._overrides.get(server_name.lower())
        if override:
            return override
        server = parse_server_name(server_name)
        if server.is_ip or server.port is not None:
            return federation_base_url(server)
        cached = self._delegation.get(server.host)
        now = self._clock()
        if cached is not None and cached[0] > now:
            return cached[1]
        delegated = await self._well_known(server)
        if delegated is None:
            url, ttl = federation_base_url(server), WELL_KNOWN_FAILURE_TTL_S
        else:
            url, ttl = federation_base_url(delegated), WELL_KNOWN_TTL_S
        log.debug("- %s resolves to %s", server_name, url)
        self._delegation[server.host] = (now + ttl, url)
        return url

    async def _well_known(self, server: ServerName) -> ServerName | None:
        url = f"https://{server.url_host}{WELL_KNOWN_PATH}"
        try:
            async with self._http().get(url, max_redirects=5) as resp:
                if resp.status != 200:
                    return None
                body = await resp.content.read(MAX_BODY_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("x %s: no delegation (%s)", url, exc)
            return None
        try:
            return delegated_server(json.loads(body))
        except ValueError:
            return None

    async def user_id(self, access_token: str, server_name: str) -> str:
        """The Matrix user the token belongs to, checked to live on ``server_name``."""
        base = await self.resolve(server_name)
        url = f"{base}{USERINFO_PATH}"
        try:
            async with self._http().get(
                url,
                params={"access_token": access_token},
                allow_redirects=False,
            ) as resp:
                status = resp.status
                body = await resp.content.read(MAX_BODY_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("x OpenID look-up at %s failed: %s", server_name, exc)
            raise OpenIDError(
                f"could not reach homeserver {server_name} to check the OpenID token "
                f"({type(exc).__name__}); try again later"
            ) from None
        if status in (401, 403):
            log.info("x homeserver %s refused an OpenID token (HTTP %s)", server_name, status)
            raise OpenIDError(
                f"homeserver {server_name} did not accept the OpenID token (HTTP {status}): "
                "it is unknown or expired; request a new one"
            )
        if status != 200:
            log.warning(
                "x homeserver %s answered the OpenID check with HTTP %s", server_name, status
            )
            raise OpenIDError(
                f"homeserver {server_name} could not check the OpenID token (HTTP {status}); "
                "try again later, or ask its admin whether the federation API is reachable"
            )
        try:
            sub = json.loads(body).get("sub")
        except (ValueError, AttributeError):
            sub = None
        if not isinstance(sub, str) or not sub.startswith("@"):
            raise OpenIDError(
                f"homeserver {server_name} answered the OpenID check without a user id"
            )
        if server_part(sub).lower() != server_name.lower():
            raise OpenIDError(
                f"the OpenID token belongs to {sub}, who is not a user of {server_name}; "
                "request the token from your own homeserver"
            )
        return sub
