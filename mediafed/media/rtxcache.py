"""Retransmission cache: the last packets of one received stream, for NACKs (RFC 4585 §6.2.1).

A power-of-two ring indexed by ``sequence & mask`` holds each plaintext packet
once, whatever the number of subscribers; entries older than ``max_age_s``
are not served (a retransmission that late is useless to a jitter buffer)
and :meth:`trim`, run from the timers, lets them go, so a stream holds about
``max_age_s`` of packets rather than a full ring (1024 packets of a 500 kbps
camera are 17 s and a megabyte).
"""

from __future__ import annotations


class RetransmissionCache:
    __slots__ = ("_mask", "_packets", "_sequences", "_times", "_trim_at", "max_age_s")

    def __init__(self, size: int = 1024, max_age_s: float = 1.0) -> None:
        if size & (size - 1):
            raise ValueError("cache size must be a power of two")
        self._mask = size - 1
        self._packets: list[bytes | None] = [None] * size
        self._sequences = [-1] * size
        self._times = [0.0] * size
        self._trim_at = 0
        self.max_age_s = max_age_s

    def put(self, sequence: int, packet: bytes, now: float) -> bool:
        """Keep ``packet``; False when this sequence number is held already (a
        duplicate: a publisher's retransmission, or libwebrtc resending old
        packets as bandwidth probes), which is not kept again."""
        index = sequence & self._mask
        if self._sequences[index] == sequence and self._packets[index] is not None:
            return False
        self._packets[index] = packet
        self._sequences[index] = sequence
        self._times[index] = now
        return True

    def get(self, sequence: int, now: float) -> bytes | None:
        index = sequence & self._mask
        if self._sequences[index] != sequence or now - self._times[index] > self.max_age_s:
            return None
        return self._packets[index]

    def expired(self, sequence: int, now: float) -> bool:
        """``sequence`` was held but is too old to serve now (unlike one that never
        arrived, which its publisher may still resend)."""
        index = sequence & self._mask
        if self._sequences[index] != sequence:
            return False
        return self._packets[index] is None or now - self._times[index] > self.max_age_s

    def trim(self, now: float) -> int:
        """Drop packets too old to serve, oldest first; how many were dropped.

        The ring fills in sequence order, so the scan goes forward from where
        it last stopped until a slot is young enough to keep.
        """
        cutoff = now - self.max_age_s
        packets = self._packets
        times = self._times
        mask = self._mask
        index = self._trim_at
        dropped = 0
        for _ in range(mask + 1):
            if times[index] >= cutoff:
                break
            if packets[index] is not None:
                packets[index] = None
                dropped += 1
            index = (index + 1) & mask
        self._trim_at = index
        return dropped

    def held(self) -> int:
        """How many packets are held."""
        return sum(packet is not None for packet in self._packets)

    def clear(self) -> None:
        size = self._mask + 1
        self._packets = [None] * size
        self._sequences = [-1] * size
        self._times = [0.0] * size
        self._trim_at = 0
