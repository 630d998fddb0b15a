"""Data channels: SCTP over our DTLS association (RFC 8841, RFC 8831, DCEP RFC 8832).

aiortc's SCTP association and data-channel code run unchanged on top of a
small adapter that offers them what they use of aiortc's own DTLS transport:
its state, its DTLS role (RFC 8832 ties stream id parity to it), a way to
send application data and to register the receiver of what arrives. Data
channels are off the media path: a message is a handful of Python calls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport

if TYPE_CHECKING:
    from mediafed.transport.endpoint import Endpoint

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
"""(channel label, message) -> None"""

MAX_QUEUED_RECORDS = 1024


class _DtlsAdapter:
    """The part of aiortc's RTCDtlsTransport that RTCSctpTransport uses."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._receiver: Any = None

    @property
    def state(self) -> str:
        return "connected" if self._endpoint.srtp is not None else "new"

    @property
    def _role(self) -> str:
        return "server" if self._endpoint.dtls_role_server else "client"

    def _register_data_receiver(self, receiver: Any) -> None:
        self._receiver = receiver

    def _unregister_data_receiver(self, receiver: Any) -> None:
        if self._receiver is receiver:
            self._receiver = None

    async def _send_data(self, data: bytes) -> None:
        dtls = self._endpoint.dtls
        if dtls is None:
            raise ConnectionError("DTLS is not connected")
        for datagram in dtls.send_application_data(data):
            self._endpoint.send_raw(datagram)


class DataChannels:
    """The SCTP association of one endpoint and its data channels, by label."""

    def __init__(self, endpoint: Endpoint, on_message: MessageHandler, *, label: str = "") -> None:
        self._adapter = _DtlsAdapter(endpoint)
        self._sctp = RTCSctpTransport(self._adapter)  # type: ignore[arg-type]
        self._on_message = on_message
        self._label = label
        self._channels: dict[str, RTCDataChannel] = {}
        self._inbox: collections.deque[bytes] = collections.deque()
        self._reader: asyncio.Task[None] | None = None
        """Works through the inbox while it holds records (none waits on an idle one:
        a queue and a parked task per association cost memory on every peer)."""
        self.started = False
        self._sctp.on("datachannel", self._adopt)

    async def start(self, remote_port: int = 5000, max_message_size: int = 262144) -> None:
        """Begin the association once DTLS is connected (both sides send INIT, RFC 8841 §9.3)."""
        if self.started:
            return
        self.started = True
        self._wake()
        await self._sctp.start(RTCSctpCapabilities(maxMessageSize=max_message_size), remote_port)

    def feed(self, record: bytes) -> None:
        """DTLS application data (one SCTP packet) arrived; handled in order."""
        if len(self._inbox) >= MAX_QUEUED_RECORDS:
            log.info("x %s SCTP backlog full; dropping a packet", self._label)
            return
        self._inbox.append(record)
        self._wake()

    def _wake(self) -> None:
        if self.started and self._inbox and (self._reader is None or self._reader.done()):
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        inbox = self._inbox
        while inbox:
            record = inbox.popleft()
            receiver = self._adapter._receiver
            if receiver is None:
                continue
            try:
                await receiver._handle_data(record)
            except Exception as exc:  # malformed SCTP must not end the endpoint
                log.info("x %s bad SCTP packet dropped: %s", self._label, exc)

    def open(self, label: str, *, ordered: bool = True, max_retransmits: int | None = None) -> None:
        """Open a channel from our side (DCEP, RFC 8832 §5)."""
        if label in self._channels:
            return
        channel = RTCDataChannel(
            self._sctp,
            RTCDataChannelParameters(label=label, ordered=ordered, maxRetransmits=max_retransmits),
        )
        self._adopt(channel)

    def send(self, label: str, data: bytes) -> bool:
        channel = self._channels.get(label)
        if channel is None or channel.readyState != "open":
            return False
        channel.send(data)
        return True

    def _adopt(self, channel: RTCDataChannel) -> None:
        self._channels[channel.label] = channel
        label = channel.label
        log.info(
            "- %s data channel %r (%s)",
            self._label,
            label,
            "ordered" if channel.ordered else "unordered",
        )

        def on_message(message: bytes | str) -> None:
            data = message.encode() if isinstance(message, str) else message
            try:
                self._on_message(label, data)
            except Exception:
                log.exception("x %s data channel handler failed", self._label)

        channel.on("message", on_message)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.started:
            with contextlib.suppress(Exception):  # the association may already be gone
                await self._sctp.stop()
