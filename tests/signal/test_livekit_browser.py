"""livekit-client (2.23, in headless Chromium) against a real mediafed node: data
permissions and an ICE restart, where a stand-in session proves nothing; each
on both signal protocols (v1, one peer connection, the client's default; v0,
two, with ``singlePeerConnection: false``).

Pages join through web-demo join links (``/?token=…``, ``&v0=1`` for v0) and
drive the live ``Room`` object the demo exposes (``window.mediafedDemo.room``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

import pytest
from playwright.async_api import BrowserContext, Page

from mediafed.media import Session
from tests.support.browser import TIMEOUT_MS
from tests.support.livekit_node import LiveNode

pytestmark = pytest.mark.slow

RECORD_DATA = """() => { window.received = [];
  window.mediafedDemo.room.on('dataReceived', (payload, participant, kind, topic) =>
    window.received.push([participant ? participant.identity : '',
                          new TextDecoder().decode(payload), topic || ''])); }"""
SEND_DATA = """text => window.mediafedDemo.room.localParticipant.publishData(
  new TextEncoder().encode(text), { reliable: true, topic: 'chat' })"""
REMOTE_FRAMES = """() => [...document.querySelectorAll('#grid .tile[data-source="camera"] video')]
  .filter(v => v.videoWidth > 0)
  .map(v => v.getVideoPlaybackQuality().totalVideoFrames)"""
RECEIVING_REMOTE_SDP = """() => { const manager = window.mediafedDemo.room.engine.pcManager;
  return (manager.subscriber ?? manager.publisher).pc.currentRemoteDescription.sdp; }"""
PROTOCOLS = pytest.mark.parametrize("v0", [False, True], ids=["v1", "v0"])


async def _join(
    browser: BrowserContext,
    node: LiveNode,
    identity: str,
    room: str,
    media: str,
    v0: bool = False,
    **grant: object,
) -> Page:
    page = await browser.new_page()
    token = node.token(identity, room=room, **grant)
    query = f"token={token}&{media}" + ("&v0=1" if v0 else "")
    await page.goto(f"http://127.0.0.1:{node.http_port}/?{query}")
    await page.wait_for_selector("#controls:not([hidden])", timeout=TIMEOUT_MS)
    single = await page.evaluate("() => window.mediafedDemo.room.engine.pcManager.mode")
    assert (single == "publisher-only") is not v0, single
    return page


async def _until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)


async def _video_advances(page: Page, frames: int = 15) -> None:
    """A remote camera plays and shows ``frames`` new frames from now on."""
    await page.wait_for_function(f"() => ({REMOTE_FRAMES})().length > 0", timeout=TIMEOUT_MS)
    start = max(await page.evaluate(REMOTE_FRAMES))
    await page.wait_for_function(
        f"() => Math.max(...({REMOTE_FRAMES})()) >= {start + frames}", timeout=TIMEOUT_MS
    )


@PROTOCOLS
async def test_data_without_can_publish_data_reaches_nobody(
    node: LiveNode, browser: BrowserContext, caplog: pytest.LogCaptureFixture, v0: bool
) -> None:
    caplog.set_level(logging.INFO, logger="mediafed.signal.livekit.peer")
    quiet = await _join(browser, node, "quiet", "data", "mic=0&cam=0", v0, can_publish_data=False)
    ada = await _join(browser, node, "ada", "data", "mic=0&cam=0", v0)
    grace = await _join(browser, node, "grace", "data", "mic=0&cam=0", v0)
    for page in (quiet, ada, grace):
        await page.evaluate(RECORD_DATA)

    # livekit-client sends it (it does not check grants itself); mediafed refuses it
    await quiet.evaluate(SEND_DATA, "from quiet")
    await _until(lambda: "quiet may not publish data" in caplog.text)
    # ada may: her message reaches both others, on the channel quiet's would have used
    await ada.evaluate(SEND_DATA, "from ada")
    for page in (quiet, grace):
        await page.wait_for_function(
            "() => window.received.some(r => r[1] === 'from ada')", timeout=TIMEOUT_MS
        )
    await asyncio.sleep(1.0)  # generous: anything relayed before ada's is there by now
    assert await grace.evaluate("() => window.received") == [["ada", "from ada", "chat"]]
    assert await ada.evaluate("() => window.received") == []
    assert await quiet.evaluate("() => window.received") == [["ada", "from ada", "chat"]]
    await asyncio.gather(*(page.close() for page in (quiet, ada, grace)))


def _ufrags(session: Session) -> tuple[str, str, str, str]:
    publisher, subscriber = session.publisher.endpoint.ice, session.subscriber.endpoint.ice
    return (
        publisher.local_ufrag,
        publisher.remote_ufrag,
        subscriber.local_ufrag,
        subscriber.remote_ufrag,
    )


@PROTOCOLS
async def test_ice_restart_after_a_failed_connection(
    node: LiveNode, browser: BrowserContext, v0: bool
) -> None:
    """The client reports a connection failed (what livekit-client does when its state
    turns ``failed``): it resumes with a ``reconnect_reason``. v0: RR_SUBSCRIBER_FAILED,
    mediafed restarts ICE with new credentials and offers again, the client restarts
    its publisher too. v1: RR_PUBLISHER_FAILED, the client offers an ICE restart on its
    one connection, mediafed answers with new credentials. Either way media flows on
    the new credentials."""
    ada = await _join(browser, node, "ada", "ice", "mic=1&cam=1", v0)
    grace = await _join(browser, node, "grace", "ice", "mic=1&cam=1", v0)
    await _video_advances(ada)
    await _video_advances(grace)
    room = node.rooms.get("ice")
    assert room is not None
    session = room.sessions["ada"]
    sid = session.sid
    before = _ufrags(session)
    restarted_at = node.rooms.clock()

    await ada.evaluate(
        """() => { const room = window.mediafedDemo.room;
                   window.reconnected = false;
                   room.once('reconnected', () => { window.reconnected = true; });
                   // RR_SUBSCRIBER_FAILED (3) or RR_PUBLISHER_FAILED (2), as the
                   // engine reports a failed connection
                   room.engine.handleDisconnect('connection failed (test)', REASON); }""".replace(
            "REASON", "3" if v0 else "2"
        )
    )
    await ada.wait_for_function("() => window.reconnected === true", timeout=TIMEOUT_MS)
    assert room.sessions["ada"] is session and session.sid == sid  # resumed, not rejoined
    after = _ufrags(session)
    assert all(new and new != old for new, old in zip(after, before, strict=True)), (before, after)
    # the old credentials are gone from the media port; the new ones lead to ada
    by_ufrag = node.worker.mux.by_ufrag
    assert before[0] not in by_ufrag and before[2] not in by_ufrag
    assert by_ufrag[after[0]] is session.publisher.endpoint
    assert by_ufrag[after[2]] is session.subscriber.endpoint
    # the browser's receiving connection runs on the credentials of mediafed's new
    # offer (v0) or answer (v1)
    remote_sdp = await ada.evaluate(RECEIVING_REMOTE_SDP)
    assert set(re.findall(r"a=ice-ufrag:(\S+)", remote_sdp)) == {after[2]}

    # media flows both ways again, after consent checks with the new credentials
    await _video_advances(ada)
    await _video_advances(grace)
    for endpoint in (session.publisher.endpoint, session.subscriber.endpoint):
        assert endpoint.ice.last_consent > restarted_at
    await asyncio.gather(ada.close(), grace.close())
