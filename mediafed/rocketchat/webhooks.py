"""Signed call-event webhooks (participant joined/left, call ended) to the caller's URL.

Each event is a JSON object with a uuid ``id`` (receivers refuse ids they have
seen: replay protection) and is signed like Stripe's webhooks::

    X-Mediafed-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>
    X-Mediafed-Key: <API key whose secret signed it>

HMAC is RFC 2104 with SHA-256 (FIPS 180-4). Bodies are compact JSON with
non-ASCII left unescaped, which is what JavaScript's ``JSON.stringify`` gives
back after parsing them (Rocket.Chat Apps see only parsed JSON).

Delivery runs on a background queue: :meth:`WebhookSender.send` never waits
for the network, so nothing on a call's path (and never the media path) blocks
on a slow or dead receiver. Failed attempts are retried with exponential
backoff, a bounded number of times, and every outcome is logged and recorded
in the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from mediafed.errors import AuthError
from mediafed.store import Store

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Mediafed-Signature"
KEY_HEADER = "X-Mediafed-Key"
TOLERANCE_S = 300


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Mediafed-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    header: str, body: bytes, secret: str, *, now: float | None = None, tolerance_s: int = 300
) -> int:
    """Check a signature header; return its timestamp or raise AuthError."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(name, []).append(value)
    stamps = parts.get("t", [])
    # ASCII digits only: str.isdigit() also takes '²', which int() refuses, and a
    # Unix time in seconds has at most 20 digits (int() refuses 4300 and more).
    stamp = stamps[0] if len(stamps) == 1 else ""
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 20) or not parts.get("v1"):
        raise AuthError(f"{SIGNATURE_HEADER} must look like 't=<unix>,v1=<hex>'")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise AuthError(
            f"webhook timestamp {timestamp} is more than {tolerance_s}s from now; check clocks"
        )
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    # compare_digest takes str only when both are ASCII: compare the bytes.
    if not any(
        hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))
        for given in parts["v1"]
    ):
        raise AuthError("webhook signature does not match; check the API secret on both sides")
    return timestamp


@dataclass(frozen=True, slots=True)
class _Delivery:
    id: str
    url: str
    api_key: str
    body: bytes
    call_id: str
    event: str


class WebhookSender:
    """Background, retrying sender of signed webhooks.

    ``keys`` maps API keys to secrets; a delivery is signed with the secret of
    the key that created the call. ``base_delay_s * 2**n`` (capped at
    ``max_delay_s``) separates attempts; after ``max_attempts`` the delivery is
    marked failed.
    """

    def __init__(
        self,
        keys: Mapping[str, str],
        *,
        store: Store | None = None,
        max_attempts: int = 6,
        base_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        timeout_s: float = 10.0,
        queue_size: int = 1000,
        concurrency: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.store = store
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(maxsize=queue_size)
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending = 0

    async def start(self) -> None:
        if self._worker is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
            self._worker = asyncio.create_task(self._run(), name="mediafed-webhooks")

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *([worker] if worker else []), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def wait_idle(self) -> None:
        """Wait until every queued delivery has succeeded or given up (tests, shutdown)."""
        await self._idle.wait()

    def send(self, url: str, api_key: str, event: Mapping[str, Any]) -> str | None:
        """Queue ``event`` (without ``id``) for ``url``; return its delivery id.

        Never blocks; returns None (and logs) when the queue is full or the key
        is unknown.
        """
        if self._worker is None:
            log.error(
                "x webhook %s for call %s: sender not running; not sent",
                event.get("event"),
                event.get("call_id"),
            )
            return None
        if api_key not in self.keys:
            log.warning(
                "x webhook %s for call %s: API key %r no longer configured; not sent",
                event.get("event"),
                event.get("call_id"),
                api_key,
            )
            return None
        delivery_id = str(uuid.uuid4())
        payload = {"id": delivery_id, **event}
        # Compact, UTF-8 unescaped: receivers that only get parsed JSON (Rocket.Chat
        # Apps) re-serialize it with JSON.stringify and get these exact bytes.
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        delivery = _Delivery(
            delivery_id, url, api_key, body, str(event.get("call_id", "")), str(event["event"])
        )
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            log.error(
                "x webhook queue full; dropped %s for call %s", delivery.event, delivery.call_id
            )
            return None
        self._pending += 1
        self._idle.clear()
        return delivery_id

    async def _run(self) -> None:
        while True:
            delivery = await self._queue.get()
            await self._slots.acquire()
            task = asyncio.create_task(self._deliver(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("x webhook task failed", exc_info=task.exception())

    def _backoff_s(self, attempt: int) -> float:
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))

    async def _record(self, delivery: _Delivery, **fields: Any) -> None:
        if self.store is None:
            return
        try:
            await self.store.update_delivery(delivery.id, **fields)
        except Exception:
            log.exception("x could not record webhook delivery %s", delivery.id)

    async def _deliver(self, delivery: _Delivery) -> None:
        if self.store is not None:
            try:
                await self.store.record_delivery(
                    delivery.id, call_id=delivery.call_id, event=delivery.event, url=delivery.url
                )
            except Exception:
                log.exception("x could not record webhook delivery %s", delivery.id)
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            outcome, error = await self._attempt(delivery)
            if outcome == "delivered":
                log.info(
                    "> webhook %s %s call=%s to %s (attempt %d)",
                    delivery.event,
                    delivery.id,
                    delivery.call_id,
                    delivery.url,
                    attempt,
                )
                await self._record(delivery, status="delivered", attempts=attempt)
                return
            if outcome == "refused":
                log.error(
                    "x webhook %s %s call=%s refused by %s: %s; not retried",
                    delivery.event,
                    delivery.id,
                    delivery.call_id,
                    delivery.url,
                    error,
                )
                await self._record(delivery, status="failed", attempts=attempt, last_error=error)
                return
            if attempt < self.max_attempts:
                delay = self._backoff_s(attempt)
                log.warning(
                    "x webhook %s %s call=%s to %s failed (%s); retry %d in %.1fs",
                    delivery.event,
                    delivery.id,
                    delivery.call_id,
                    delivery.url,
                    error,
                    attempt + 1,
                    delay,
                )
                await self._record(delivery, status="pending", attempts=attempt, last_error=error)
                await asyncio.sleep(delay)
        log.error(
            "x webhook %s %s call=%s to %s gave up after %d attempts: %s",
            delivery.event,
            delivery.id,
            delivery.call_id,
            delivery.url,
            self.max_attempts,
            error,
        )
        await self._record(delivery, status="failed", attempts=self.max_attempts, last_error=error)

    async def _attempt(self, delivery: _Delivery) -> tuple[str, str]:
        """One POST: ("delivered" | "retry" | "refused", error text)."""
        assert self._session is not None, "WebhookSender.start() was not called"
        secret = self.keys.get(delivery.api_key)
        if secret is None:
            return "refused", f"API key {delivery.api_key!r} is no longer configured"
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, delivery.body, int(self.clock())),
            KEY_HEADER: delivery.api_key,
        }
        try:
            async with self._session.post(
                delivery.url, data=delivery.body, headers=headers
            ) as response:
                text = (await response.text())[:200]
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return "retry", f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300 or status == 409:
            # 409: the receiver already has this id (an earlier attempt got through).
            return "delivered", ""
        if 400 <= status < 500 and status not in (408, 425, 429):
            return "refused", f"HTTP {status} {text}"
        return "retry", f"HTTP {status} {text}"
