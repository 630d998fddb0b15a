"""mediafed: a self-hostable real-time media relay (SFU) for federated chat.

Layers, from the bottom up (imports only point down; see ARCHITECTURE.md):
``wire`` (sans-I/O bytes), ``transport`` (sockets, ICE-lite, DTLS, SRTP),
``media`` (room core), ``worker`` (sockets, clock and timers driving the rooms),
front-ends, one per audience (``signal.livekit``, ``matrix``, ``rocketchat``,
``operator``), and the composition root (``server``, ``cli``, ``config``).
"""

__version__ = "0.1.0"
