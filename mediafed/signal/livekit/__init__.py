"""LiveKit-compatible front-end: ``/rtc`` signaling, validation, dev tokens, access tokens.

Speaks the LiveKit client protocol (livekit/protocol ``livekit_rtc.proto``,
signal protocol v0 with publisher and subscriber peer connections) so every
LiveKit SDK and Element Call can use mediafed. It translates protobuf to the
room core's session API (:mod:`mediafed.media`) and never touches packets.

- :mod:`.frontend` adds its routes to the node's HTTP application;
- :mod:`.rtc` routes ``/rtc`` sockets (join, resume) to :mod:`.peer`, which
  translates one participant's requests and room events;
- :mod:`.translate` maps protobufs to the room core's data classes and back;
- :mod:`.tokens` mints and verifies LiveKit access tokens (other front-ends
  that hand out join tokens use it too); :mod:`.auth` reads them from requests;
  :mod:`.token_cli` adds ``mediafed token``;
- :mod:`.validate` serves ``/rtc/validate``; :mod:`.devtoken` the dev-mode
  ``/dev/token``.

LiveKit's server API (RoomService over Twirp) is an operator endpoint:
:mod:`mediafed.operator.twirp`.
"""
