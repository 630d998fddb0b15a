"""Matrix front-end: the MatrixRTC focus (token service for Element Call), the
appservice (mautrix) and the typed stable 1:1 VoIP events (``m.call.*``).

- :mod:`.focus` serves ``/sfu/get`` and ``/get_token`` (lk-jwt-service compatible).
- :mod:`.openid` verifies Matrix OpenID tokens against the user's homeserver.
- :mod:`.ids` checks Matrix room ids of every room version (``!opaque:server``,
  version 12's ``!hash``) where people type them; room ids are never split.
- :mod:`.membership` follows MatrixRTC call membership state per room.
- :mod:`.voip` parses ``m.call.*`` event content into frozen dataclasses.
- :mod:`.calls` answers classic ``m.call.*`` calls to bridge users in the media core.
- :mod:`.appservice` receives homeserver transactions; :mod:`.registration`
  writes the appservice registration file; :mod:`.cli` adds ``mediafed matrix``.
"""
