"""The ``[rocketchat]`` configuration section: where the bridge user logs in, how call
notices are retried.

:mod:`mediafed.config` composes it into the node's configuration as ``rocketchat``;
the composition root hands it to the Rocket.Chat front-end.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RocketChatConfig(BaseModel):
    """The ``[rocketchat]`` table: where the bridge user logs in.

    Either ``password`` (the client logs in as ``user``) or a personal access
    ``token`` with its ``user_id`` (Administration > Users > access tokens).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = ""
    """Base URL of the Rocket.Chat server, e.g. https://chat.example.org."""
    user: str = ""
    password: str = ""
    token: str = ""
    user_id: str = ""
    timeout_s: float = Field(10.0, gt=0)
    notice_attempts: int = Field(5, ge=1, le=20)
    """How often a call notice is tried before it is given up (and logged)."""
    notice_backoff_s: float = Field(2.0, ge=0)

    @model_validator(mode="after")
    def _credentials(self) -> RocketChatConfig:
        if not self.url:
            return self
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("rocketchat.url must start with http:// or https://")
        if self.token and not self.user_id:
            raise ValueError("rocketchat.token needs rocketchat.user_id too")
        if not self.token and not (self.user and self.password):
            raise ValueError("set rocketchat.user and rocketchat.password, or token and user_id")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.url)
