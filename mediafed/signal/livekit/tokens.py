"""LiveKit-compatible access tokens: mint and verify (HS256 JWT).

Claims follow LiveKit's: ``iss`` = API key (selects the secret), ``sub`` =
identity, ``exp`` required (60 s leeway), ``nbf``, ``name``, ``metadata``,
``attributes`` and a ``video`` grant in camelCase (``roomJoin``, ``room``,
``canPublish``, ``canSubscribe``, ``canPublishData``, ``canPublishSources``,
``hidden``, ``canUpdateOwnMetadata``, ``roomCreate``, ``roomAdmin``,
``roomList``). Absent ``canPublish``/``canSubscribe`` mean true;
``canPublishData`` defaults to ``canPublish``; empty sources allow all.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
import jwt.warnings

from mediafed.errors import AuthError

LEEWAY_S = 60
MIN_SECRET_LENGTH = 32

# PyJWT warns on every call with a short secret; the node says it once at start-up.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)


class _AtobSafeEncoder(json.JSONEncoder):
    """Escape the few ASCII characters whose base64url encoding contains '-' or '_'.

    Element Call decodes the payload with ``atob()``, which rejects both; the
    characters only ever occur inside JSON strings, so escaping them is exact.
    """

    def encode(self, o: Any) -> str:
        text = super().encode(o)
        for char, escaped in (
            (">", "\\u003e"),
            ("?", "\\u003f"),
            ("~", "\\u007e"),
            ("\x7f", "\\u007f"),
        ):
            text = text.replace(char, escaped)
        return text


SOURCES = ("camera", "microphone", "screen_share", "screen_share_audio")


@dataclass(frozen=True, slots=True)
class VideoGrant:
    room_join: bool = False
    room: str = ""
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    can_publish_sources: tuple[str, ...] = ()
    can_update_own_metadata: bool = False
    hidden: bool = False
    room_create: bool = False
    room_admin: bool = False
    room_list: bool = False

    def to_claim(self) -> dict[str, Any]:
        claim: dict[str, Any] = {}
        if self.room_join:
            claim["roomJoin"] = True
        if self.room:
            claim["room"] = self.room
        claim["canPublish"] = self.can_publish
        claim["canSubscribe"] = self.can_subscribe
        claim["canPublishData"] = self.can_publish_data
        if self.can_publish_sources:
            claim["canPublishSources"] = list(self.can_publish_sources)
        for name, key in (
            ("can_update_own_metadata", "canUpdateOwnMetadata"),
            ("hidden", "hidden"),
            ("room_create", "roomCreate"),
            ("room_admin", "roomAdmin"),
            ("room_list", "roomList"),
        ):
            if getattr(self, name):
                claim[key] = True
        return claim

    @classmethod
    def from_claim(cls, claim: Mapping[str, Any]) -> VideoGrant:
        def flag(key: str, default: bool) -> bool:
            value = claim.get(key)
            return default if value is None else bool(value)

        can_publish = flag("canPublish", True)
        sources = claim.get("canPublishSources") or ()
        if not isinstance(sources, list | tuple) or not all(isinstance(s, str) for s in sources):
            raise AuthError("token grant canPublishSources must be a list of source names")
        room = claim.get("room", "")
        if not isinstance(room, str):
            raise AuthError("token grant 'room' must be a string")
        return cls(
            room_join=flag("roomJoin", False),
            room=room,
            can_publish=can_publish,
            can_subscribe=flag("canSubscribe", True),
            can_publish_data=flag("canPublishData", can_publish),
            can_publish_sources=tuple(s.lower() for s in sources),
            can_update_own_metadata=flag("canUpdateOwnMetadata", False),
            hidden=flag("hidden", False),
            room_create=flag("roomCreate", False),
            room_admin=flag("roomAdmin", False),
            room_list=flag("roomList", False),
        )


HOME_CLAIM = "mediafed_home"
"""A private claim (``true``) in the tokens mediafed's own Matrix and Rocket.Chat
front-ends mint: on a node of several workers, the room goes to the home worker,
where those front-ends run (:mod:`mediafed.cluster.placement`). Other servers
ignore it."""


@dataclass(frozen=True, slots=True)
class Claims:
    api_key: str
    identity: str
    expires_at: float
    video: VideoGrant
    name: str = ""
    metadata: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)


def mint_token(
    api_key: str,
    api_secret: str,
    *,
    identity: str,
    video: VideoGrant,
    name: str = "",
    metadata: str = "",
    attributes: Mapping[str, str] | None = None,
    ttl_s: float = 6 * 3600,
    now: float | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """A signed token LiveKit SDKs and mediafed accept."""
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        "iss": api_key,
        "sub": identity,
        "nbf": issued,
        "exp": issued + int(ttl_s),
        "video": video.to_claim(),
    }
    if name:
        payload["name"] = name
    if metadata:
        payload["metadata"] = metadata
    if attributes:
        payload["attributes"] = dict(attributes)
    if extra_claims:
        payload.update(extra_claims)
    return jwt.encode(payload, api_secret, algorithm="HS256", json_encoder=_AtobSafeEncoder)


def verify_token(token: str, keys: Mapping[str, str], *, now: float | None = None) -> Claims:
    """Check signature, issuer and expiry; return the claims or raise AuthError."""
    if not token:
        raise AuthError("no access token; pass ?access_token=… or an Authorization: Bearer header")
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("access token is not a well-formed JWT") from None
    if header.get("alg") != "HS256":
        raise AuthError(f"access token algorithm {header.get('alg')!r} is not HS256")
    api_key = unverified.get("iss")
    if not isinstance(api_key, str) or api_key not in keys:
        raise AuthError(f"access token signed with unknown API key {api_key!r}")
    current = time.time() if now is None else now
    try:
        claims = jwt.decode(
            token,
            keys[api_key],
            algorithms=["HS256"],
            issuer=api_key,
            leeway=LEEWAY_S,
            options={"require": ["exp"], "verify_exp": False, "verify_nbf": False},
        )
    except jwt.InvalidSignatureError:
        raise AuthError("access token signature does not match its API key's secret") from None
    except jwt.MissingRequiredClaimError:
        raise AuthError("access token has no 'exp' claim; mint one with an expiry") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"access token rejected: {exc}") from None
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise AuthError("access token 'exp' claim must be a number")
    if current > exp + LEEWAY_S:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
        raise AuthError(f"access token expired at {stamp}; ask for a new one")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and current + LEEWAY_S < nbf:
        raise AuthError("access token is not valid yet (nbf in the future); check clocks")
    video = claims.get("video") or {}
    if not isinstance(video, dict):
        raise AuthError("access token 'video' claim must be an object")
    attributes = claims.get("attributes") or {}
    return Claims(
        api_key=api_key,
        identity=str(claims.get("sub", "")),
        expires_at=float(exp),
        video=VideoGrant.from_claim(video),
        name=str(claims.get("name", "")),
        metadata=str(claims.get("metadata", "")),
        attributes={str(k): str(v) for k, v in attributes.items()}
        if isinstance(attributes, dict)
        else {},
        raw=claims,
    )


def require_room_join(claims: Claims, room: str | None = None) -> str:
    """The room a join token admits to, or AuthError saying why not."""
    if not claims.video.room_join:
        raise AuthError("access token has no roomJoin grant")
    if not claims.video.room:
        raise AuthError("access token names no room")
    if room is not None and claims.video.room != room:
        raise AuthError(
            f"access token is for room {claims.video.room!r}, not {room!r}; ask for a token for it"
        )
    if not claims.identity:
        raise AuthError("access token has no identity ('sub' claim)")
    return claims.video.room
