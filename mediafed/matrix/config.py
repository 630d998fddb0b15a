"""The ``[matrix]`` configuration section: homeserver, focus and appservice settings.

:mod:`mediafed.config` composes it into the node's configuration as ``matrix``;
the composition root hands it to :func:`mediafed.matrix.frontend.setup_matrix`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class MatrixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    server_name: str = ""
    """The local homeserver's server name (the part after ':' in its user ids)."""
    homeserver_url: str = ""
    """Client-server API base URL of the local homeserver (the appservice talks to it)."""
    allowed_homeservers: list[str] = Field(default_factory=list)
    """Server names whose users may get focus tokens. Empty: only ``server_name``;
    ``["*"]``: any homeserver."""
    admit_room_members: bool = False
    """Also give (subscribe-only) tokens to users of any other homeserver who are
    joined to the Matrix room of the call, as the bridge bot sees its members
    (needs ``registration``, and the bot in the room)."""
    verify_tls: bool = True
    """Check homeserver TLS certificates on OpenID look-ups. Only tests turn this off."""
    federation_url_overrides: dict[str, str] = Field(default_factory=dict)
    """Server name -> base URL of its federation API (``https://hs.internal:8448``),
    used instead of ``.well-known/matrix/server`` discovery: for a homeserver on a
    private network, or a test homeserver on plain HTTP."""
    openid_timeout_s: float = Field(10.0, gt=0)
    focus_api_key: str = ""
    """Which ``[keys]`` entry signs focus tokens. Empty: the first key."""
    livekit_url: str = ""
    """WebSocket URL handed to Element Call. Empty: ``server.public_url`` turned into
    ``ws(s)://``, or derived from the request's Host."""
    token_ttl_s: int = Field(3600, ge=60, le=86400)
    registration: Path | None = None
    """Appservice registration file (``mediafed matrix registration`` writes it).
    Unset: no appservice."""
    ghost_leave_delay_s: float = Field(20.0, ge=1, le=3600)
    """Delay of the delayed leave (MSC4140) that removes a bridged participant's
    MatrixRTC membership if mediafed stops without removing it; at most the
    homeserver's ``max_event_delay_duration``."""
    relay_links: bool = True
    """While a call here holds bridged participants (Rocket.Chat users, classic
    callers, SDK users), join the SFUs its MatrixRTC members of other homeservers
    publish on and show their tracks here (needs ``registration`` and
    ``[server] public_url``; the remote foci must admit this homeserver's users)."""
    rtc_member_events: bool = False
    """Also publish bridged participants as ``m.rtc.member`` sticky events (MSC4354,
    Element Call's ``matrix_2_0`` mode; Synapse: ``experimental_features:
    {msc4354_enabled: true}``)."""

    classic_call_invites: Literal["auto", "always", "never"] = "auto"
    """Whether a Rocket.Chat call in a direct room linked to Matrix also rings the
    Matrix user with a classic ``m.call.invite`` from the caller's ghost. ``auto``:
    when that user called the bridge that way in the room before, or has never been
    a MatrixRTC member of it (Element X and Element Call ring on the MSC4075
    notification alone; Element Web's 1:1 calls, nheko and other classic clients
    only on an invite)."""
    classic_invite_lifetime_s: float = Field(60.0, ge=5, le=600)
    """How long such an invite rings before it is hung up (``invite_timeout``)."""

    @field_validator("allowed_homeservers")
    @classmethod
    def _no_empty_names(cls, names: list[str]) -> list[str]:
        if any(not name.strip() for name in names):
            raise ValueError("homeserver names must not be empty")
        return [name.strip().lower() for name in names]

    def homeserver_allowed(self, server_name: str) -> bool:
        allowed = self.allowed_homeservers or (
            [self.server_name.lower()] if self.server_name else []
        )
        return "*" in allowed or server_name.lower() in allowed
