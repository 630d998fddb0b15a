"""What one participant may make a worker hold or do, and the token bucket that meters it.

A participant beyond a limit loses what went over it — the packet, the message,
the stream — never the call of anyone else. Each drop is counted by kind
(``RoomManager.dropped``, exported on ``/metrics``) and logged at most once per
interval, so a misbehaving client can neither hurt others nor flood the log.
"""

from __future__ import annotations

MAX_STRAY_SSRCS = 16
"""SSRCs an endpoint may send that belong to none of its tracks (probes, streams not
yet learned). libsrtp keeps a stream per SSRC it ever decrypted and searches them one
by one; beyond this, such streams are removed again as they come."""
MAX_DATA_BYTES = 64 * 1024
"""The largest data relayed: a payload (``Session.send_data``) or a front-end's whole
packet (``Session.relay_packet``). LiveKit clients send messages of at most 64 KiB
and chunk larger streams."""
DATA_PACKETS_PER_S = 200.0
DATA_PACKET_BURST = 400.0
DATA_BYTES_PER_S = 2.0 * 1024 * 1024
DATA_BYTE_BURST = 4.0 * 1024 * 1024
MAX_NAME_BYTES = 256
"""The longest room or participant name (LiveKit's ``max_room_name_length`` and
``max_participant_name_length``)."""
MAX_METADATA_BYTES = 512 * 1024
"""The largest room or participant metadata (LiveKit's ``max_metadata_size``)."""
MAX_ATTRIBUTES_BYTES = 64 * 1024
"""The most a participant's attributes may add up to, keys and values (LiveKit's
``max_attributes_size``)."""
SIGNAL_MESSAGES_PER_S = 50.0
SIGNAL_MESSAGE_BURST = 200.0
"""Signaling requests a client may send; a client far beyond is disconnected."""


class TokenBucket:
    """``rate`` per second, up to ``burst`` at once; time is passed in."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend ``amount`` if there is that much; False (nothing spent) if not."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < amount:
            return False
        self._tokens -= amount
        return True
