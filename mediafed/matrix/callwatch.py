"""When a Matrix room's MatrixRTC call starts and ends, for other front-ends.

Fed every room event the appservice routed (after :class:`~.membership.CallMembership`
took it): a room whose call goes from no live member to one (MSC3401/MSC4143
membership, Element Call) has started its call; one whose last member left
has ended it. The bridge's own users (``@rc_…`` ghosts, the bot) do not count:
a call they are alone in was not started on the Matrix side.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from mediafed.matrix.calls import OnCallStarted
from mediafed.matrix.focus import room_call_alias
from mediafed.matrix.membership import MEMBERSHIP_EVENT_TYPES, CallMembership

log = logging.getLogger(__name__)

OnCallEnded = Callable[[str], object]
"""``(mediafed_room)``"""


class MatrixCallWatcher:
    """Calls ``on_started`` and ``on_ended`` with the room's call room
    (:func:`~.focus.room_call_alias`) as its MatrixRTC call starts and ends."""

    def __init__(
        self,
        membership: CallMembership,
        is_ours: Callable[[str], bool],
        *,
        on_started: OnCallStarted | None = None,
        on_ended: OnCallEnded | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.membership = membership
        self.is_ours = is_ours
        self.on_started = on_started
        self.on_ended = on_ended
        self._clock_ms = clock_ms
        self.rooms: set[str] = set()
        """Matrix rooms whose call is going on."""

    def on_event(self, raw: Mapping[str, Any]) -> None:
        room_id = raw.get("room_id")
        if raw.get("type") not in MEMBERSHIP_EVENT_TYPES or not isinstance(room_id, str):
            return
        members = [
            m
            for m in self.membership.members(room_id, self._clock_ms())
            if not self.is_ours(m.user_id)
        ]
        if members and room_id not in self.rooms:
            self.rooms.add(room_id)
            log.info("- MatrixRTC call started room=%s by %s", room_id, members[0].user_id)
            if self.on_started is not None:
                self.on_started(room_call_alias(room_id), members[0].user_id)
        elif not members and room_id in self.rooms:
            self.rooms.discard(room_id)
            log.info("- MatrixRTC call ended room=%s", room_id)
            if self.on_ended is not None:
                self.on_ended(room_call_alias(room_id))
