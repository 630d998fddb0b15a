"""mediafed: a self-hostable real-time media relay (SFU) for federated chat.

Layers, from the bottom up (imports only point down; see ARCHITECTURE.md):
``wire`` (sans-I/O bytes), ``transport`` (sockets, ICE-lite, DTLS, SRTP),
``media`` (room core), front-ends (``signal``, ``matrix``, ``rocketchat``),
``federation``/``cluster``, and the composition root (``server``, ``cli``).
"""

__version__ = "0.1.0"
