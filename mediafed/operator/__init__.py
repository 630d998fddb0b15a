"""Operator endpoints: what runs and watches a node, as opposed to who calls on it.

- :mod:`.health` serves ``GET /healthz`` (liveness, rooms, participants);
- :mod:`.metrics` serves ``GET /metrics`` (Prometheus text format);
- :mod:`.twirp` serves LiveKit's RoomService API over Twirp
  (``/twirp/livekit.RoomService/*``), which operators' tools, livekit-api and
  lk-jwt-service call;
- :mod:`.webhooks` posts LiveKit webhooks (``room_started``, ``participant_joined``,
  ...) to ``[webhook] urls``, signed as livekit-server signs them.
"""
