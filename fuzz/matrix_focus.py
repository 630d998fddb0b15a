"""The MatrixRTC focus: ``/sfu/get`` and ``/get_token`` request bodies (MSC4195).

The real endpoints of an app with ``[matrix]`` configured; the OpenID check is a
local stub (no homeserver is contacted): the access token ``bad`` is refused, any
other belongs to ``@user:<its server name>``. Input: one control byte (bit 0: which
endpoint; bit 1: an ``X-Forwarded-Proto`` header) and the JSON body. The answer must
be a token (200) or a Matrix error (4xx).
"""

from __future__ import annotations

import json
from typing import Any

from fuzz import _common

with _common.instrumented(__name__ == "__main__"):
    _common.load_native()
    from mediafed import server
    from mediafed.config import Config, load_config
    from mediafed.matrix.config import MatrixConfig
    from mediafed.matrix.focus import FOCUS_KEY, setup_focus
    from mediafed.matrix.openid import OpenIDError, OpenIDVerifier

SECRET = "s" * 32


class Verifier(OpenIDVerifier):
    """Answers as a homeserver would, without one."""

    async def user_id(self, access_token: str, server_name: str) -> str:
        if access_token == "bad":
            raise OpenIDError(f"homeserver {server_name} did not accept the OpenID token")
        return f"@user:{server_name}"


class Harness:
    def __init__(self) -> None:
        config = load_config(environ={"MEDIAFED_KEYS": "k1: " + SECRET})
        matrix = MatrixConfig(server_name="hs.example", allowed_homeservers=["*"])

        def extension(app: Any, cfg: Config) -> None:
            setup_focus(app, matrix, keys=config.keys)

        self.app = _common.run_async(server.build_app(config, extensions=[extension]))
        self.runner = _common.run_async(_common.start_app(self.app))
        self.app[FOCUS_KEY].verifier = Verifier()


_harness: Harness | None = None


def harness() -> Harness:
    global _harness
    if _harness is None:
        _harness = Harness()
    return _harness


def test_one_input(data: bytes) -> None:
    if not data:
        return
    h = harness()
    control, body = data[0], data[1:]
    path = "/get_token" if control & 1 else "/sfu/get"
    headers = {"Content-Type": "application/json", "Host": "sfu.example"}
    if control & 2:
        headers["X-Forwarded-Proto"] = "https"
    status, answer = _common.run_async(_common.http(h.app, "POST", path, headers, body))
    assert status in (200, 400, 401, 403), (status, answer)
    reply = json.loads(answer)
    assert ("jwt" in reply) if status == 200 else ("errcode" in reply), reply
    _common.TRAP.check()


def main() -> None:
    harness()
    _common.run(test_one_input)


if __name__ == "__main__":
    main()
