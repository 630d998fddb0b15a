"""Load tests and side-by-side benchmarks for mediafed and Janus (issue 4).

Light simulated WebRTC clients (``peer``, ``client``) replay pre-encoded VP8
and Opus (``media``, ``rtp``) through an SFU started by a ``target``
(``janus``, ``livekit_target``); ``runner`` measures server CPU per forwarded
packet, loss, latency, memory and time to first media; ``report`` prints and
saves the results. Entry point: ``python -m loadtest`` / ``mediafed-loadtest``.
"""
