"""Signaling front-ends for clients that bring their own SDK: :mod:`.livekit`, the
LiveKit client protocol every LiveKit SDK and Element Call speak."""
