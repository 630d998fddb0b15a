"""A media worker's configuration for tests, and switches between the native steps
and their Python reference."""

from __future__ import annotations

import pytest

from mediafed.config import load_config


def media_config(**rtc: object) -> object:
    overrides = {
        "MEDIAFED_SERVER_BIND": "127.0.0.2",
        "MEDIAFED_RTC_UDP_PORT": "0",
        "MEDIAFED_RTC_TCP_PORT": "0",
        "MEDIAFED_RTC_NODE_IP": "127.0.0.2",
    }
    for key, value in rtc.items():
        overrides[f"MEDIAFED_RTC_{key.upper()}"] = str(value)
    return load_config(environ=overrides)


def use_python_paths(monkeypatch: pytest.MonkeyPatch, *, read_loop: bool = True) -> None:
    """Run the Python reference of every native step in this test (the native
    modules stay loaded): send target, peer, receive step, fan-out, read loop."""
    from mediafed.media import layer, native, peer
    from mediafed.transport import native as transport_native, udp
    from mediafed.transport.target import PySendTarget

    monkeypatch.setattr(transport_native, "SendTarget", PySendTarget)
    monkeypatch.setattr(peer.MediaPeer, "on_rtp", native.PyPeerBase.on_rtp)
    monkeypatch.setattr(native, "receive_rtp", None)
    monkeypatch.setattr(layer, "_fanout", native.py_fanout)
    if read_loop:
        monkeypatch.setattr(udp, "_read_datagrams", None)


def native_paths_built() -> None:
    from mediafed.media import native
    from mediafed.transport import native as transport_native

    assert transport_native.native_send_target is not None, "the native transport is not built"
    assert native.native_forwarder is not None, "the native fan-out is not built"
