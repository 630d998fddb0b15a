"""The call API's request bodies (validated by pydantic) and its one error.

The fields and limits are those documented in ``openapi.yaml``; a body with an
unknown field is refused, so a caller's typo never passes silently.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mediafed.errors import MediafedError

JOIN_TTL_DEFAULT_S = 600
"""Join tokens only need to be valid when the client connects; the signaling
front-end hands connected clients fresh tokens (``refresh_token``) after that."""
JOIN_TTL_MAX_S = 24 * 3600


class CallError(MediafedError):
    """A call API request that cannot be done (unknown call, bad room id, ...)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreateCall(_Request):
    external_room: str
    external_call_id: str = Field("", max_length=128)
    title: str = Field("", max_length=256)
    webhook_url: str = Field("", max_length=2048)


class JoinCall(_Request):
    identity: str = Field(min_length=1, max_length=128)
    name: str = Field("", max_length=128)
    mic: bool = True
    cam: bool = False
    ttl_s: int = Field(JOIN_TTL_DEFAULT_S, ge=60, le=JOIN_TTL_MAX_S)


class PutBridge(_Request):
    rocketchat_room: str | None = Field(None, min_length=1, max_length=64)
    matrix_room: str | None = Field(None, min_length=3, max_length=512)
