"""LiveKit webhooks: what happens in rooms, POSTed and signed to the operator's URLs.

The wire format is livekit-server's (livekit/protocol ``webhook/resource_url_notifier.go``,
``protobufs/livekit_webhook.proto``): the body is the protobuf JSON mapping of one
``livekit.WebhookEvent`` (camelCase names, int64 as strings), sent with
``Content-Type: application/webhook+json``; ``Authorization`` carries an HS256 access
token of the ``[webhook] api_key`` (``iss``), valid for 5 minutes, whose ``sha256``
claim is the base64 SHA-256 of the body. Receivers check both with livekit-api's
``WebhookReceiver`` or livekit/protocol's ``webhook.Receive``.

Which events, and when (livekit-server ``pkg/telemetry/events.go``):

- ``room_started`` / ``room_finished``: a room is created / deleted or expires empty;
- ``participant_joined``: once the participant's connection is up (LiveKit: "a
  participant is considered joined only when they become active"), not at signaling;
- ``participant_left``, or ``participant_connection_aborted`` for a participant that
  left before its connection ever came up;
- ``track_published`` / ``track_unpublished``: the participant carries only its sid
  and identity, the room only its sid and name, as LiveKit sends them.

Hidden participants are not reported: the room core tells no one about them.

Nothing waits for a receiver: the room observer translates and enqueues; one task
per URL posts that URL's events in order, retrying connection errors, timeouts,
429 and 5xx (but 501) with exponential backoff, as go-retryablehttp does for
livekit-server. A full queue drops its oldest event, and an event that waited
longer than ``max_age_s`` is dropped (LiveKit's ``max_age``), each with a log line.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import jwt
from google.protobuf import json_format
from livekit.protocol import models, webhook

from mediafed import __version__
from mediafed.media import Room, events
from mediafed.media.types import ParticipantInfo, TrackInfo, new_sid
from mediafed.signal.livekit import translate

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/webhook+json"
TOKEN_TTL_S = 300
"""How long the signature token is valid (livekit/protocol: ``SetValidFor(5 * time.Minute)``)."""
USER_AGENT = f"mediafed/{__version__}"


def encode(event: webhook.WebhookEvent) -> bytes:
    """The body: the protobuf JSON mapping with camelCase names, as Go's protojson writes."""
    return json_format.MessageToJson(event, indent=None).encode()


def sign(body: bytes, api_key: str, api_secret: str, now_s: float) -> str:
    """The ``Authorization`` header value for ``body``: a JWT whose ``sha256`` claim
    is the body's hash, signed with the API secret."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    issued = int(now_s)
    claims = {"iss": api_key, "nbf": issued, "exp": issued + TOKEN_TTL_S, "sha256": digest}
    return jwt.encode(claims, api_secret, algorithm="HS256")


def _visible(participant: ParticipantInfo) -> bool:
    return not (participant.hidden or participant.permission.hidden)


def _track_event(name: str, room: Room, track: TrackInfo) -> webhook.WebhookEvent:
    return webhook.WebhookEvent(
        event=name,
        room=models.Room(sid=room.sid, name=room.name),
        participant=models.ParticipantInfo(
            sid=track.participant_sid, identity=track.participant_identity
        ),
        track=translate.track_to_pb(track),
    )


class WebhookEvents:
    """Room-core events to LiveKit webhook events: which ones, with which fields.

    It remembers, per room, the participants whose connection came up: their first
    ``active`` update is ``participant_joined``, and it tells ``participant_left``
    from ``participant_connection_aborted``.
    """

    def __init__(self) -> None:
        self._active: dict[str, set[str]] = {}
        """Room sid -> sids of its participants that became active."""

    def webhook_for(self, room: Room, event: events.RoomEvent) -> webhook.WebhookEvent | None:
        """The webhook ``event`` makes, if any."""
        match event:
            case events.RoomCreated():
                return webhook.WebhookEvent(event="room_started", room=translate.room_to_pb(room))
            case events.RoomClosed():
                self._active.pop(room.sid, None)
                return webhook.WebhookEvent(event="room_finished", room=translate.room_to_pb(room))
            case events.ParticipantUpdated(participant=participant):
                if participant.state != "active" or not _visible(participant):
                    return None
                active = self._active.setdefault(room.sid, set())
                if participant.sid in active:
                    return None
                active.add(participant.sid)
                return webhook.WebhookEvent(
                    event="participant_joined",
                    room=translate.room_to_pb(room),
                    participant=translate.participant_to_pb(participant),
                )
            case events.ParticipantLeft(participant=participant):
                if not _visible(participant):
                    return None
                active = self._active.get(room.sid, set())
                was_active = participant.sid in active
                active.discard(participant.sid)
                return webhook.WebhookEvent(
                    event="participant_left" if was_active else "participant_connection_aborted",
                    room=translate.room_to_pb(room),
                    participant=translate.disconnected_to_pb(participant),
                )
            case events.TrackPublished(track=track):
                return _track_event("track_published", room, track)
            case events.TrackUnpublished(track=track):
                return _track_event("track_unpublished", room, track)
        return None


@dataclass(frozen=True, slots=True)
class _Delivery:
    id: str
    event: str
    body: bytes
    queued_at: float
    """Monotonic seconds."""
    label: str
    """``room=… participant=…`` for log lines."""


class WebhookNotifier:
    """Posts LiveKit webhooks to each URL from its own queue and task.

    :meth:`observe` is a room observer (``RoomManager.add_observer``): it never
    waits. Attempt ``n`` that fails waits ``retry_wait_s * 2**(n-1)`` (at most
    ``max_retry_wait_s``) before the next, up to ``max_attempts`` in all.
    """

    def __init__(
        self,
        urls: Sequence[str],
        api_key: str,
        api_secret: str,
        *,
        queue_size: int = 200,
        max_attempts: int = 5,
        retry_wait_s: float = 1.0,
        max_retry_wait_s: float = 30.0,
        timeout_s: float = 10.0,
        max_age_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self._secret = api_secret
        self.max_attempts = max_attempts
        self.retry_wait_s = retry_wait_s
        self.max_retry_wait_s = max_retry_wait_s
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self.clock = clock
        self._events = WebhookEvents()
        self._queues: dict[str, asyncio.Queue[_Delivery]] = {
            url: asyncio.Queue(maxsize=queue_size) for url in dict.fromkeys(urls)
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.counts = {"sent": 0, "failed": 0, "dropped": 0}
        """Deliveries per outcome, summed over the URLs."""

    @property
    def urls(self) -> list[str]:
        return list(self._queues)

    # -- the room side: never waits ------------------------------------------------
    def observe(self, room: Room, event: events.RoomEvent) -> None:
        """Room observer: queue the webhook this event makes, if any."""
        message = self._events.webhook_for(room, event)
        if message is not None:
            self.notify(message)

    def notify(self, message: webhook.WebhookEvent) -> None:
        """Queue ``message`` for every URL, with a fresh ``id`` and ``created_at``."""
        message.id = new_sid("EV_")
        message.created_at = int(self.clock())
        label = f"room={message.room.name}"
        if message.HasField("participant"):
            label += f" participant={message.participant.identity}"
        delivery = _Delivery(message.id, message.event, encode(message), time.monotonic(), label)
        for url, queue in self._queues.items():
            if queue.full():
                oldest = queue.get_nowait()
                queue.task_done()
                self.counts["dropped"] += 1
                log.warning(
                    "x webhook queue of %s full (%d): dropped %s %s %s",
                    url,
                    queue.maxsize,
                    oldest.event,
                    oldest.id,
                    oldest.label,
                )
            queue.put_nowait(delivery)

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"User-Agent": USER_AGENT},
        )
        self._tasks = [
            asyncio.create_task(self._run(url, queue), name=f"mediafed-webhooks {url}")
            for url, queue in self._queues.items()
        ]
        log.info("- LiveKit webhooks to %s, signed with key %r", ", ".join(self.urls), self.api_key)

    async def wait_idle(self) -> None:
        """Until every queued event was delivered, given up or dropped."""
        for queue in self._queues.values():
            await queue.join()

    async def close(self, drain_s: float = 2.0) -> None:
        """Stop, after up to ``drain_s`` for what is queued."""
        if self._tasks:
            try:
                await asyncio.wait_for(self.wait_idle(), drain_s)
            except TimeoutError:
                left = sum(queue.qsize() for queue in self._queues.values())
                log.warning("x webhooks: stopping with %d events not delivered", left)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- delivery --------------------------------------------------------------------
    async def _run(self, url: str, queue: asyncio.Queue[_Delivery]) -> None:
        while True:
            delivery = await queue.get()
            try:
                waited_s = time.monotonic() - delivery.queued_at
                if waited_s > self.max_age_s:
                    self.counts["dropped"] += 1
                    log.warning(
                        "x webhook %s %s %s to %s dropped: queued %.0f s ago (max %.0f s)",
                        delivery.event,
                        delivery.id,
                        delivery.label,
                        url,
                        waited_s,
                        self.max_age_s,
                    )
                    continue
                await self._deliver(url, delivery)
            except Exception:
                self.counts["failed"] += 1
                log.exception("x webhook %s %s to %s failed", delivery.event, delivery.id, url)
            finally:
                queue.task_done()

    def _backoff_s(self, attempt: int) -> float:
        return float(min(self.max_retry_wait_s, self.retry_wait_s * 2 ** (attempt - 1)))

    async def _deliver(self, url: str, delivery: _Delivery) -> None:
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            retry, error = await self._attempt(url, delivery)
            if not error:
                self.counts["sent"] += 1
                log.info(
                    "> webhook %s %s %s to %s (attempt %d)",
                    delivery.event,
                    delivery.id,
                    delivery.label,
                    url,
                    attempt,
                )
                return
            if not retry:
                break
            if attempt < self.max_attempts:
                delay_s = self._backoff_s(attempt)
                log.info(
                    "x webhook %s %s %s to %s failed (%s); attempt %d in %.1f s",
                    delivery.event,
                    delivery.id,
                    delivery.label,
                    url,
                    error,
                    attempt + 1,
                    delay_s,
                )
                await asyncio.sleep(delay_s)
        self.counts["failed"] += 1
        log.warning(
            "x webhook %s %s %s to %s not delivered: %s",
            delivery.event,
            delivery.id,
            delivery.label,
            url,
            error,
        )

    async def _attempt(self, url: str, delivery: _Delivery) -> tuple[bool, str]:
        """One POST: (worth retrying, error text or "" when delivered)."""
        assert self._session is not None, "WebhookNotifier.start() was not called"
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Authorization": sign(delivery.body, self.api_key, self._secret, self.clock()),
        }
        try:
            async with self._session.post(
                url, data=delivery.body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                ok = 200 <= status < 300
                text = "" if ok else (await response.text(errors="replace"))[:200]
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return True, f"{type(exc).__name__}: {exc}"
        if ok:
            return False, ""
        # go-retryablehttp's DefaultRetryPolicy: 429 and 5xx but 501 are worth another try
        retry = status == 429 or (status >= 500 and status != 501)
        return retry, f"HTTP {status} {text}".rstrip()
