"""Retransmission cache: the last packets of one received stream, for NACKs (RFC 4585 §6.2.1).

A power-of-two ring indexed by ``sequence & mask`` holds each plaintext packet
once, whatever the number of subscribers; entries older than ``max_age_s``
are not served (a retransmission that late is useless to a jitter buffer).
"""

from __future__ import annotations


class RetransmissionCache:
    __slots__ = ("_mask", "_packets", "_sequences", "_times", "max_age_s")

    def __init__(self, size: int = 1024, max_age_s: float = 1.0) -> None:
        if size & (size - 1):
            raise ValueError("cache size must be a power of two")
        self._mask = size - 1
        self._packets: list[bytes | None] = [None] * size
        self._sequences = [-1] * size
        self._times = [0.0] * size
        self.max_age_s = max_age_s

    def put(self, sequence: int, packet: bytes, now: float) -> None:
        index = sequence & self._mask
        self._packets[index] = packet
        self._sequences[index] = sequence
        self._times[index] = now

    def get(self, sequence: int, now: float) -> bytes | None:
        index = sequence & self._mask
        if self._sequences[index] != sequence or now - self._times[index] > self.max_age_s:
            return None
        return self._packets[index]

    def clear(self) -> None:
        size = self._mask + 1
        self._packets = [None] * size
        self._sequences = [-1] * size
