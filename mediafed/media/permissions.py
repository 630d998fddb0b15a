"""Who may subscribe to a publisher's tracks: LiveKit's subscription permissions.

A publisher allows everyone (the default) or names who may subscribe to all or
some of its tracks (``livekit_rtc.proto`` ``SubscriptionPermission``; the rules
of livekit-server's ``pkg/rtc/uptrackmanager.go``). The room (media/room.py)
asks :class:`TrackAccess` before each subscription, revokes or restores
subscriptions when a publisher's rules change, and tells each subscriber when
its access to a track changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediafed.media.types import TrackInfo


@dataclass(frozen=True, slots=True)
class TrackPermission:
    """What one subscriber may receive from the publisher: every track, or those listed."""

    identity: str
    all_tracks: bool = False
    track_sids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SubscriptionPermission:
    """A publisher's rules: everyone (``all_participants``), or only the subscribers
    listed, each for the tracks its entry names; whom no entry names gets nothing."""

    all_participants: bool = True
    track_permissions: tuple[TrackPermission, ...] = ()

    def allows(self, track_sid: str, identity: str) -> bool:
        if self.all_participants:
            return True
        # LiveKit keeps the entries in a map by identity: the last one for a name counts
        for entry in reversed(self.track_permissions):
            if entry.identity == identity:
                return entry.all_tracks or track_sid in entry.track_sids
        return False

    def describe(self) -> str:
        """For the log: who may subscribe."""
        if self.all_participants:
            return "everyone"
        names = [
            entry.identity + ("" if entry.all_tracks else f"({len(entry.track_sids)} tracks)")
            for entry in self.track_permissions
        ]
        return ", ".join(names) or "nobody"


class TrackAccess:
    """One room's subscription rules: each publisher's permission, and which
    subscriptions were refused (the subscriber was told; it is told again when
    the refusal ends)."""

    __slots__ = ("_refused", "_rules")

    def __init__(self) -> None:
        self._rules: dict[str, SubscriptionPermission] = {}
        """Publisher sid -> its rules; publishers that allow everyone are absent."""
        self._refused: dict[str, set[str]] = {}
        """Subscriber sid -> sids of the tracks it was refused and still wants."""

    def set_rules(self, publisher_sid: str, permission: SubscriptionPermission) -> None:
        if permission.all_participants:
            self._rules.pop(publisher_sid, None)
        else:
            self._rules[publisher_sid] = permission

    def allows(self, track: TrackInfo, subscriber_identity: str) -> bool:
        rules = self._rules.get(track.participant_sid)
        return rules is None or rules.allows(track.sid, subscriber_identity)

    def refuse(self, subscriber_sid: str, track_sid: str) -> None:
        self._refused.setdefault(subscriber_sid, set()).add(track_sid)

    def refused(self, subscriber_sid: str, track_sid: str) -> bool:
        return track_sid in self._refused.get(subscriber_sid, ())

    def grant(self, subscriber_sid: str, track_sid: str) -> bool:
        """Forget a refusal; True if there was one (the subscriber is to be told)."""
        refused = self._refused.get(subscriber_sid)
        if refused is None or track_sid not in refused:
            return False
        refused.discard(track_sid)
        if not refused:
            del self._refused[subscriber_sid]
        return True

    def forget_participant(self, sid: str) -> None:
        """A participant left: its rules and its refusals go."""
        self._rules.pop(sid, None)
        self._refused.pop(sid, None)

    def forget_track(self, track_sid: str) -> None:
        """A track was unpublished: nobody waits for it any more."""
        for subscriber_sid in [s for s, refused in self._refused.items() if track_sid in refused]:
            self.grant(subscriber_sid, track_sid)
