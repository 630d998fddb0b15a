"""The one exception root of mediafed.

::

    MediafedError
     +-- ConfigError            configuration file or environment is invalid
     +-- LocalProtocolError     we were asked to do something the protocol forbids
     +-- RemoteProtocolError    a peer sent something malformed or not allowed
     |    +-- WireError         bytes that do not parse (RTP, RTCP, STUN, SDP)
     |    +-- NegotiationError  an SDP offer/answer we cannot accept
     +-- AuthError              missing, expired or insufficient credentials

Messages tell a user what to do, not just what failed.
"""


class MediafedError(Exception):
    """Root of every error mediafed raises on purpose."""


class ConfigError(MediafedError):
    """The configuration (file or ``MEDIAFED_*`` environment) is invalid."""


class LocalProtocolError(MediafedError):
    """We were asked to do something the protocol does not allow."""


class RemoteProtocolError(MediafedError):
    """A peer sent something malformed or not allowed."""


class WireError(RemoteProtocolError):
    """Bytes that do not parse as the protocol says they should."""


class NegotiationError(RemoteProtocolError):
    """An SDP offer or answer that cannot be accepted."""


class AuthError(MediafedError):
    """Missing, expired or insufficient credentials."""


class DirectoryError(MediafedError):
    """The node directory (Redis, ``[redis] url``) cannot be reached or failed."""
